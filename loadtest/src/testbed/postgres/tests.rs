//! Unit tests of `postgres.rs` that need a real server (TLS files and settings).

use super::*;

/// Self-signed (CA:TRUE) P-256 certificate for `localhost` and `127.0.0.1`, valid until 2126.
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUeYWIjEEFBvgJsu0cCHvvGCWoZGYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMTIwMjUyOVoYDzIxMjYxMDI4
MjAyNTI5WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASONhU4XA4WCRnO6f8aQctYXEmJJ/W3jSFPeauGR5C5Up7TdGH4TCx8
YvujRmAULACXdSHkJgg5eFFM0fPBf/Sao28wbTAdBgNVHQ4EFgQUC0Fb52ZbqBlM
fMGabzUj3Kslu3wwHwYDVR0jBBgwFoAUC0Fb52ZbqBlMfMGabzUj3Kslu3wwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDRwAwRAIgEojCyXhMAf0VgLqtapegnXUvow5fQcXAwjMBwJXgq6UCICnY
KJH4nRdAzvdzE94mDHa9duOQKYFyaQtsD9tMNr1A
-----END CERTIFICATE-----
";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYrGNBj+HRA2l44He
XnryCSjVw57ZAYiqxnNwkvUu6JChRANCAASONhU4XA4WCRnO6f8aQctYXEmJJ/W3
jSFPeauGR5C5Up7TdGH4TCx8YvujRmAULACXdSHkJgg5eFFM0fPBf/Sa
-----END PRIVATE KEY-----
";

/// psql over TCP with `conninfo` extras, running `sql`: `(success, stdout, stderr)`.
fn psql_tcp(pg: &PgServer, conninfo: &str, sql: &str) -> (bool, String, String) {
    let mut cmd = pg.tool_command("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-c", sql, "-d"])
        .arg(format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={} dbname=postgres {conninfo}",
            pg.port(),
            SUPERUSER
        ));
    let (_, status, stdout, stderr) = run_status(cmd, None, PSQL_TIMEOUT).expect("running psql");
    (status.success(), stdout.trim().to_owned(), stderr)
}

#[test]
fn tls_option_serves_the_given_certificate_over_tcp() {
    let opts = PgOptions {
        auth: PgAuth::Trust,
        ..PgOptions::default()
    }
    .with_tls(CERT_PEM, KEY_PEM);
    let pg = PgServer::must_start(&opts);
    let key_mode = fs::metadata(pg.data_dir().join(TLS_KEY_FILE))
        .expect("key file")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    // The certificate is its own root: verify-full only passes if the server presents it.
    let root = pg.socket_dir().join("root.crt");
    fs::write(&root, CERT_PEM).expect("writing root.crt");
    pg.run_as.give(&root).expect("chown root.crt");
    let conninfo = format!("sslmode=verify-full sslrootcert={}", root.display());
    let (ok, out, err) = psql_tcp(
        &pg,
        &conninfo,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert!(ok, "psql with {conninfo} failed: {err}");
    assert_eq!(out, "t");
}

#[test]
fn without_tls_option_the_server_refuses_tls() {
    let pg = PgServer::must_start(&PgOptions {
        auth: PgAuth::Trust,
        ..PgOptions::default()
    });
    let (ok, _, err) = psql_tcp(&pg, "sslmode=require", "SELECT 1");
    assert!(!ok, "sslmode=require succeeded against ssl = off");
    assert!(err.contains("does not support SSL"), "psql said: {err}");
}

#[test]
fn pg_tls_debug_hides_the_key() {
    let opts = PgOptions::default().with_tls(CERT_PEM, KEY_PEM);
    let shown = format!("{opts:?}");
    assert!(shown.contains("BEGIN CERTIFICATE"));
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}
