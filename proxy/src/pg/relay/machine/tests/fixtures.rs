//! A client session driven as the relay drives it, and message builders.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sidepool_protocol::pg::TransactionStatus;
use sidepool_protocol::pg::backend::{self as be, Severity};
use sidepool_protocol::pg::frontend as fe;

use super::super::*;
use crate::pg::errors::error;
use crate::pg::statements::StatementNames;

pub struct FakeEnv {
    pub names: StatementNames,
    pub capacity: usize,
    pub pins: Cell<u32>,
}

impl Env for FakeEnv {
    fn statement_name(&self, content: &[u8]) -> Arc<str> {
        self.names.name_for(content)
    }
    fn route(&self, _text: &[u8]) -> SqlRoute {
        SqlRoute {
            replica: false,
            writes: true,
        }
    }
    fn prepared_capacity(&self) -> usize {
        self.capacity
    }
    fn pinned(&self) {
        self.pins.set(self.pins.get() + 1);
    }
}

/// The server connection's side: what `ServerConn` holds besides its socket.
#[derive(Default)]
pub struct Conn {
    pub input: BytesMut,
    pub prepared: Prepared,
    pub params: BTreeMap<String, String>,
    pub synced: Option<Arc<BTreeMap<String, String>>>,
}

impl Conn {
    pub fn side(&mut self) -> ConnSide<'_> {
        ConnSide {
            input: &mut self.input,
            prepared: &mut self.prepared,
            params: &mut self.params,
            synced: &mut self.synced,
            pid: 7,
        }
    }
}

/// One client session driven as the relay drives it. The same `conn` comes back at every
/// checkout, so what was prepared on it stays.
pub struct Session {
    pub m: Machine,
    pub env: FakeEnv,
    pub link: Option<Link>,
    pub conn: Conn,
    pub settings: Arc<BTreeMap<String, String>>,
    pub buf: BytesMut,
    pub to_server: BytesMut,
    pub to_client: BytesMut,
    pub checkouts: u32,
    pub releases: u32,
    /// Settings read back at each release, in order (the driver's `detach`).
    pub read_back: Vec<String>,
    /// Releases after a RESET ALL / DISCARD ALL (the client's settings back to its startup).
    pub resets: u32,
    pub terminated: bool,
    pub done: u32,
    pub retries: u32,
}

impl Session {
    pub fn new(mapping: bool) -> Self {
        Session {
            m: Machine::new(mapping),
            env: FakeEnv {
                names: StatementNames::default(),
                capacity: 100,
                pins: Cell::new(0),
            },
            link: None,
            conn: Conn::default(),
            settings: Arc::default(),
            buf: BytesMut::new(),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            checkouts: 0,
            releases: 0,
            read_back: Vec::new(),
            resets: 0,
            terminated: false,
            done: 0,
            retries: 0,
        }
    }

    /// Client bytes arrive (the driver's `on_client`).
    pub fn client(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        loop {
            let step = self.m.next_client(&mut self.buf, &mut self.to_server);
            let (h, msg) = match step.expect("client bytes frame") {
                ClientStep::NeedMore => break,
                ClientStep::Terminate => {
                    self.terminated = true;
                    self.buf.clear();
                    return;
                }
                ClientStep::Message(h, msg) => (h, msg),
            };
            if self.link.is_none() {
                let u = self
                    .m
                    .without_server(h.tag, &msg, &self.env, &mut self.to_client);
                if u.expect("valid message") == Unattached::Answered {
                    continue;
                }
                self.link = Some(Link::default());
                self.checkouts += 1;
            }
            let link = self.link.as_mut().unwrap();
            self.m
                .on_message(
                    h.tag,
                    msg,
                    link,
                    self.conn.side(),
                    &self.env,
                    &mut self.to_server,
                )
                .expect("valid message");
        }
        self.settle();
    }

    /// Server bytes arrive (the driver's `on_server`).
    pub fn server(&mut self, bytes: &[u8]) {
        self.conn.input.extend_from_slice(bytes);
        let link = self.link.as_mut().expect("a server connection is attached");
        let outcome = self
            .m
            .on_server(
                link,
                self.conn.side(),
                &mut self.settings,
                &mut self.to_server,
                &mut self.to_client,
            )
            .expect("server bytes frame");
        self.done += outcome.done;
        self.retries += u32::from(outcome.retrying);
        self.settle();
    }

    /// Synthetic answers now due, then release if nothing ties the client to the connection.
    pub fn settle(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.responses.take_ready_synthetic(&mut self.to_client);
        if self.m.releasable(link, self.conn.input.is_empty()) {
            self.read_back.append(&mut link.dirty);
            self.resets += u32::from(link.reset_all);
            self.link = None;
            self.releases += 1;
        }
    }

    pub fn take_server(&mut self) -> Bytes {
        self.to_server.split().freeze()
    }

    pub fn take_client(&mut self) -> Bytes {
        self.to_client.split().freeze()
    }

    pub fn attached(&self) -> &Link {
        self.link.as_ref().expect("attached")
    }
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Query text and no parameter types: the content of a Parse after its name.
pub fn content(sql: &str) -> Vec<u8> {
    cat(&[sql.as_bytes(), b"\0\0\0"])
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', &cat(&[name.as_bytes(), b"\0", &content(sql)]))
}

pub fn bind(statement: &str) -> Vec<u8> {
    msg(
        b'B',
        &cat(&[b"\0", statement.as_bytes(), b"\0\0\0\0\0\0\0"]),
    )
}

/// A Describe (`D`) or Close (`C`) of statement `name`.
pub fn statement(tag: u8, name: &str) -> Vec<u8> {
    msg(tag, &cat(&[b"S", name.as_bytes(), b"\0"]))
}

pub fn describe_portal() -> Vec<u8> {
    msg(b'D', b"P\0")
}

pub fn execute() -> Vec<u8> {
    msg(b'E', b"\0\0\0\0\0")
}

pub fn sync() -> Vec<u8> {
    fe::sync().to_vec()
}

pub fn query(sql: &str) -> Vec<u8> {
    fe::query(sql).to_vec()
}

pub fn ready(status: TransactionStatus) -> Vec<u8> {
    be::ready_for_query(status).to_vec()
}

pub fn idle() -> Vec<u8> {
    ready(TransactionStatus::Idle)
}

pub fn complete(tag: &str) -> Vec<u8> {
    be::command_complete(tag).to_vec()
}

pub fn parse_complete() -> Vec<u8> {
    be::parse_complete().to_vec()
}

pub fn bind_complete() -> Vec<u8> {
    msg(b'2', b"")
}

pub fn close_complete() -> Vec<u8> {
    be::close_complete().to_vec()
}

pub fn no_columns() -> Vec<u8> {
    msg(b'T', b"\0\0")
}

pub fn row() -> Vec<u8> {
    be::data_row(&[Some("1")]).to_vec()
}

pub fn server_error(code: &str, message: &str) -> Vec<u8> {
    error(Severity::Error, code, message, None).to_vec()
}

/// The Parse the server gets for statement content `sql` under sidepool's name `name`.
pub fn server_parse(name: &str, sql: &str) -> Vec<u8> {
    fe::parse_message(name, &content(sql)).to_vec()
}
