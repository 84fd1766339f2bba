//! The admin console's PostgreSQL wire side: after a client logged in to database
//! [`DATABASE`](crate::console::DATABASE), its simple queries are run by
//! [`crate::console::execute`] and the replies encoded as PostgreSQL messages. Extended-protocol
//! messages are refused up to the next Sync, as a server would skip them after an error.

use bytes::{Bytes, BytesMut};
use sidepool_protocol::pg::backend::{self as be, Severity};
use sidepool_protocol::pg::frontend::{self, tag as fe};
use sidepool_protocol::pg::{TransactionStatus, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

use super::errors::{FEATURE_NOT_SUPPORTED, error};
use super::login::{Login, login_reply};
use super::service::PgService;
use crate::console::{Reply, execute};
use crate::error::SessionError;
use crate::tls::Stream;

/// Longest console query accepted.
const MAX_QUERY_LEN: usize = 64 * 1024;

/// Serves a console session after authentication until the client leaves.
pub async fn run(
    svc: &PgService,
    mut stream: Stream,
    mut buf: BytesMut,
    login: Login,
) -> Result<(), SessionError> {
    let Some(hub) = svc.hub.upgrade() else {
        return Ok(());
    };
    info!(pool = %svc.name, client.addr = %login.info.addr, user = %login.info.user, "console session opened");
    let params: Vec<(String, String)> = [
        ("server_version", "15.0 (sidepool console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", login.info.application_name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    stream
        .write_all(&login_reply(&params, 0, 0))
        .await
        .map_err(SessionError::ClientIo)?;
    // After an extended-protocol message the rest up to Sync is skipped, as a server would.
    let mut skipping = false;
    loop {
        let Some(msg) = read_message(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let mut out = BytesMut::new();
        match msg[0] {
            fe::TERMINATE => return Ok(()),
            fe::QUERY => {
                let sql = frontend::statement_text(&msg).unwrap_or_default();
                let reply = execute(&hub, sql.trim()).await;
                info!(command = %sql.trim(), ok = !matches!(reply, Reply::Error { .. }), "console command");
                encode(&reply, &mut out);
                out.extend_from_slice(&be::ready_for_query(TransactionStatus::Idle));
            }
            fe::SYNC => {
                skipping = false;
                out.extend_from_slice(&be::ready_for_query(TransactionStatus::Idle));
            }
            _ if skipping => {}
            _ => {
                skipping = true;
                let reply = Reply::Error {
                    code: FEATURE_NOT_SUPPORTED,
                    message: "sidepool: the console accepts simple queries only (use psql)".into(),
                };
                encode(&reply, &mut out);
            }
        }
        stream
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)?;
    }
}

async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, SessionError> {
    loop {
        if let Some(h) = frame::check(buf, MAX_QUERY_LEN).map_err(SessionError::ClientProtocol)? {
            return Ok(Some(buf.split_to(h.total_len).freeze()));
        }
        if stream.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Ok(None);
        }
    }
}

fn encode(reply: &Reply, out: &mut BytesMut) {
    match reply {
        Reply::Rows { columns, rows, tag } => {
            out.extend_from_slice(&be::row_description(columns));
            for row in rows {
                let values: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
                out.extend_from_slice(&be::data_row(&values));
            }
            out.extend_from_slice(&be::command_complete(tag));
        }
        Reply::Done { tag, notice } => {
            if let Some(n) = notice {
                out.extend_from_slice(&be::notice_response(&be::ErrorFields {
                    severity: Severity::Notice,
                    code: "00000",
                    message: n,
                    detail: None,
                    hint: None,
                }));
            }
            out.extend_from_slice(&be::command_complete(tag));
        }
        Reply::Error { code, message } => {
            out.extend_from_slice(&error(Severity::Error, code, message, None));
        }
    }
}
