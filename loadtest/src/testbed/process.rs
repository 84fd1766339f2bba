//! Running server tools as the right account, with a deadline.
//!
//! `initdb`, `postgres` and `mariadbd` (without `--user`) refuse to run as root. When we are
//! root, tools run as a service account (`postgres`) through `std`'s `CommandExt::uid/gid`,
//! which also drops root's supplementary groups before `exec`; otherwise they run as us.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Result, TestbedError};

/// How often [`run`] checks whether a child exited.
const POLL: Duration = Duration::from_millis(10);

/// The account that runs a server's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    /// `None`: we are not root, run everything as ourselves.
    account: Option<Account>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// Ourselves when not root; otherwise the system account `user`.
    ///
    /// # Errors
    /// [`TestbedError::ServiceUserMissing`] when root and `user` is not in `/etc/passwd`.
    pub(crate) fn service(user: &str, hint: &str) -> Result<RunAs> {
        if !is_root()? {
            return Ok(RunAs { account: None });
        }
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        match lookup_passwd(&passwd, user) {
            Some((uid, gid)) => Ok(RunAs {
                account: Some(Account {
                    name: user.to_owned(),
                    uid,
                    gid,
                }),
            }),
            None => Err(TestbedError::ServiceUserMissing {
                user: user.to_owned(),
                hint: hint.to_owned(),
            }),
        }
    }

    /// Ourselves, whoever that is (for servers that can be told to run as root).
    pub(crate) fn current() -> RunAs {
        RunAs { account: None }
    }

    /// Whether tools run as another account than ours (so temp dirs must be reachable by it).
    pub(crate) fn is_other_account(&self) -> bool {
        self.account.is_some()
    }

    /// A command for `program` that runs in `cwd` as this account, with a clean, C-locale
    /// environment: no inherited `PG*` variables can redirect a tool to another server.
    pub(crate) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd);
        strip_pg_env(&mut cmd, std::env::vars_os().map(|(key, _)| key));
        cmd.env("LC_ALL", "C");
        if let Some(account) = &self.account {
            // root's HOME is unreadable for the service account; tools that look for rc
            // files there would print permission warnings.
            cmd.uid(account.uid)
                .gid(account.gid)
                .env("HOME", cwd)
                .env("USER", &account.name)
                .env("LOGNAME", &account.name);
        }
        cmd
    }

    /// Hands `path` to this account (a no-op when we run as ourselves).
    pub(crate) fn give(&self, path: &Path) -> Result<()> {
        if let Some(account) = &self.account {
            chown(path, Some(account.uid), Some(account.gid))?;
        }
        Ok(())
    }
}

/// Runs `cmd` to completion within `timeout`, feeding it `stdin`, and returns its stdout.
///
/// # Errors
/// [`TestbedError::Spawn`] if it cannot start, [`TestbedError::Command`] (with stderr) if it
/// exits unsuccessfully, [`TestbedError::Timeout`] if it is still running at the deadline (it is
/// then killed).
pub(crate) fn run(cmd: Command, stdin: Option<&str>, timeout: Duration) -> Result<String> {
    let (desc, status, stdout, stderr) = run_status(cmd, stdin, timeout)?;
    if status.success() {
        Ok(stdout)
    } else {
        Err(TestbedError::Command {
            cmd: desc,
            status,
            stderr: stderr.trim().to_owned(),
        })
    }
}

/// Like [`run`] but an unsuccessful exit is returned, not an error:
/// `(command line, status, stdout, stderr)`.
pub(crate) fn run_status(
    mut cmd: Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<(String, ExitStatus, String, String)> {
    let desc = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| TestbedError::Spawn {
        cmd: desc.clone(),
        source,
    })?;
    // Pipes are drained by threads so a chatty child cannot block on a full pipe while we
    // wait for it; stdin is written the same way for the same reason.
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_owned();
        thread::spawn(move || {
            // A child that exits without reading its input is reported by its status.
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestbedError::Timeout(desc, timeout));
        }
        thread::sleep(POLL);
    };
    // A grandchild that kept our pipes open (a daemon started without redirecting its output)
    // must not hang the caller: the rest of the deadline bounds the wait for EOF.
    let left = deadline.saturating_duration_since(Instant::now()) + POLL;
    let stdout = stdout
        .recv_timeout(left)
        .map_err(|_| TestbedError::Timeout(format!("stdout of {desc}"), timeout))?;
    let stderr = stderr.recv_timeout(left).unwrap_or_default();
    Ok((desc, status, stdout, stderr))
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Removes every `PG*` variable among `inherited` from `cmd`'s environment.
fn strip_pg_env(cmd: &mut Command, inherited: impl Iterator<Item = OsString>) {
    for key in inherited {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
}

/// `program arg arg …` for error messages.
fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(OsStr::to_string_lossy).map(|a| {
        if a.is_empty() || a.contains(' ') {
            format!("'{a}'")
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Whether we run with effective uid 0.
pub(crate) fn is_root() -> Result<bool> {
    Ok(effective_uid()? == 0)
}

/// Our effective uid, read from `/proc/self/status` (the libc call would need `unsafe`).
fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_effective_uid(&status).ok_or_else(|| TestbedError::UnexpectedOutput {
        what: "the Uid: line of /proc/self/status".into(),
        output: status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or("")
            .into(),
    })
}

/// `Uid:\treal\teffective\tsaved\tfs` → effective.
fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `(uid, gid)` of `user` in an `/etc/passwd` text.
fn lookup_passwd(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status = "Name:\tcat\nUid:\t1000\t0\t1000\t1000\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tcat\n"), None);
    }

    #[test]
    fn passwd_lookup_matches_whole_names_only() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres2:x:7:7::/:/bin/false\n\
                      postgres:x:101:104:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(lookup_passwd(passwd, "postgres"), Some((101, 104)));
        assert_eq!(lookup_passwd(passwd, "mysql"), None);
    }

    #[test]
    fn run_returns_stdout_and_feeds_stdin() {
        let me = RunAs { account: None };
        let out = run(
            me.command(Path::new("cat"), Path::new("/")),
            Some("hello"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out, "hello");
    }

    #[test]
    fn run_reports_failure_with_stderr() {
        let me = RunAs { account: None };
        let mut cmd = me.command(Path::new("sh"), Path::new("/"));
        cmd.args(["-c", "echo broken >&2; exit 3"]);
        let err = run(cmd, None, Duration::from_secs(10)).unwrap_err();
        match err {
            TestbedError::Command {
                cmd,
                status,
                stderr,
            } => {
                assert_eq!(cmd, "sh -c 'echo broken >&2; exit 3'");
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "broken");
            }
            other => panic!("expected Command, got {other:?}"),
        }
    }

    #[test]
    fn run_kills_a_child_past_its_deadline() {
        let me = RunAs { account: None };
        let mut cmd = me.command(Path::new("sleep"), Path::new("/"));
        cmd.arg("30");
        let started = Instant::now();
        let err = run(cmd, None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, TestbedError::Timeout(..)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn inherited_pg_variables_are_removed_and_others_kept() {
        let mut cmd = Command::new("env");
        cmd.env("PGPORT", "1")
            .env("PGHOST", "elsewhere")
            .env("KEEP", "yes");
        let inherited = ["PGPORT", "PGHOST", "KEEP", "PATH"].map(OsString::from);
        strip_pg_env(&mut cmd, inherited.into_iter());
        let out = run(cmd, None, Duration::from_secs(10)).unwrap();
        assert!(!out.lines().any(|l| l.starts_with("PG")), "{out}");
        assert!(out.lines().any(|l| l == "KEEP=yes"), "{out}");
    }
}
