//! TLS on both sides against a real PostgreSQL 15 with TLS and real clients: psql verifies
//! sidepool's certificate, sidepool verifies PostgreSQL's, and a wrong CA is refused clearly.
//! The tests make their own CA with rcgen.

use crate::support::harness::*;
use crate::support::pki::{Pki, toml_path};
use sidepool_loadtest::testbed::{PgAuth, PgOptions, PgServer};

/// `[pools.tls]` lines: sidepool offers the test certificate in `client_mode` and talks to the
/// server in `server_mode`, trusting the CA file `ca`.
fn tls_lines(pki: &Pki, client_mode: &str, server_mode: &str, ca: &str) -> String {
    format!(
        "client_cert = {}\nclient_key = {}\nclient_mode = \"{client_mode}\"\nserver_mode = \"{server_mode}\"\nserver_ca = {}",
        toml_path(&pki.path("server.crt")),
        toml_path(&pki.path("server.key")),
        toml_path(&pki.path(ca)),
    )
}

fn must_start_tls_pg(pki: &Pki) -> PgServer {
    let pg = PgServer::must_start(
        &PgOptions::default().with_tls(pki.cert_pem.clone(), pki.key_pem.clone()),
    );
    pg.create_user(USER, PASSWORD, PgAuth::Scram).unwrap();
    pg.create_database(DB, USER).unwrap();
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_to_sidepool_and_sidepool_verify_full_to_postgres() {
    let pki = Pki::must_generate();
    let pg = must_start_tls_pg(&pki);
    let spec = PoolSpec::transaction("max_open = 2").tls(tls_lines(
        &pki,
        "require",
        "verify-full",
        "ca.crt",
    ));
    // Through "localhost", so the server certificate's name is checked on the way in too.
    let proxy = Proxy::must_start_to(&format!("localhost:{}", pg.port()), &spec).await;

    let out = must_run(
        pg_tool(&pg, "psql", proxy.addr.port())
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", pki.path("ca.crt"))
            .env("PGHOST", "localhost")
            .args([
                "-X",
                "-At",
                "-c",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ]),
        b"",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "t",
        "sidepool's server connection must use TLS"
    );

    // client_mode = require: a plaintext client is told so.
    let plain = pg_tool(&pg, "psql", proxy.addr.port())
        .env("PGSSLMODE", "disable")
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .await
        .unwrap();
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("accepts only TLS"), "{stderr}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_the_wrong_ca_is_refused_with_a_clear_error() {
    let pki = Pki::must_generate();
    let pg = must_start_tls_pg(&pki);
    let spec = PoolSpec::transaction("max_open = 2").tls(tls_lines(
        &pki,
        "allow",
        "verify-full",
        "other-ca.crt",
    ));
    let proxy = Proxy::must_start_to(&format!("localhost:{}", pg.port()), &spec).await;
    let err = connect(&proxy.app_dsn())
        .await
        .expect_err("the server's certificate is not trusted");
    assert_eq!(sqlstate(&err), "08006");
    let msg = db_message(&err);
    assert!(
        msg.contains("certificate") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_refuses_sidepool_when_it_trusts_another_ca() {
    let pki = Pki::must_generate();
    let pg = must_start_tls_pg(&pki);
    let spec =
        PoolSpec::transaction("max_open = 2").tls(tls_lines(&pki, "allow", "require", "ca.crt"));
    let proxy = Proxy::must_start(&pg, &spec).await;
    let out = pg_tool(&pg, "psql", proxy.addr.port())
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", pki.path("other-ca.crt"))
        .env("PGHOST", "localhost")
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    // allow: a plaintext client still works.
    let plain = must_run(
        pg_tool(&pg, "psql", proxy.addr.port())
            .env("PGSSLMODE", "disable")
            .args(["-X", "-At", "-c", "SELECT 7"]),
        b"",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&plain).trim(), "7");
    proxy.shutdown().await;
}
