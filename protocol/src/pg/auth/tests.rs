//! Interoperability, published test vectors and known answers. Hostile-input tests of the server
//! side live in `scram_server/tests.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Runs postgres-protocol's client (what tokio-postgres uses) against our server.
fn pg_client_against(secret: &ScramSecret, password: &str) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let (server, server_first) = ScramServer::start(secret, client.message())?;
    client.update(&server_first).unwrap();
    let server_final = server.finish(client.message())?;
    client
        .finish(&server_final)
        .expect("postgres-protocol rejected our server signature");
    Ok(())
}

/// Runs our client against our server.
fn our_client_against(secret: &ScramSecret, password: &str) -> Result<(), AuthError> {
    let (mut client, client_first) = ScramClient::new(password.as_bytes());
    let (server, server_first) = ScramServer::start(secret, &client_first)?;
    let client_final = client.server_first(&server_first)?;
    let server_final = server.finish(&client_final)?;
    client.server_final(&server_final)
}

#[test]
fn postgres_protocol_client_logs_in_to_our_server() {
    let secret = ScramSecret::from_password("s3cret pass");
    pg_client_against(&secret, "s3cret pass").unwrap();
}

#[test]
fn postgres_protocol_client_with_wrong_password_gets_wrong_password() {
    let secret = ScramSecret::from_password("s3cret pass");
    let err = pg_client_against(&secret, "s3cret pas").unwrap_err();
    assert!(matches!(err, AuthError::WrongPassword), "{err}");
    assert_eq!(err.kind(), AuthErrorKind::WrongPassword);
}

#[test]
fn our_client_logs_in_to_our_server_and_wrong_password_fails() {
    let secret = ScramSecret::from_password("hunter2");
    our_client_against(&secret, "hunter2").unwrap();
    let err = our_client_against(&secret, "hunter3").unwrap_err();
    assert!(matches!(err, AuthError::WrongPassword), "{err}");
}

#[test]
fn our_client_sends_no_channel_binding_header() {
    let (_, client_first) = ScramClient::new(b"pw");
    assert!(client_first.starts_with(b"n,,n=,r="), "{client_first:?}");
}

#[test]
fn saslprep_makes_equivalent_passwords_match_across_implementations() {
    // U+00AD SOFT HYPHEN is "mapped to nothing" by SASLprep (RFC 4013 §2.2), U+00A0 to a space.
    let secret = ScramSecret::from_password("pa\u{00AD}ss\u{00A0}word");
    pg_client_against(&secret, "pass word").unwrap();
    our_client_against(&secret, "pass word").unwrap();
}

#[test]
fn our_client_rejects_a_forged_server_signature() {
    let secret = ScramSecret::from_password("hunter2");
    let (mut client, client_first) = ScramClient::new(b"hunter2");
    let (server, server_first) = ScramServer::start(&secret, &client_first).unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    server.finish(&client_final).unwrap();
    let forged = format!("v={}", STANDARD.encode([0u8; 32]));
    let err = client.server_final(forged.as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::Upstream {
                what: ScramMessage::ServerFinal,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), AuthErrorKind::Upstream);
}

#[test]
fn our_client_reports_the_servers_scram_error() {
    let (mut client, client_first) = ScramClient::new(b"pw");
    let secret = ScramSecret::from_password_with("pw", b"salt", 1);
    let (_, server_first) = ScramServer::start(&secret, &client_first).unwrap();
    client.server_first(&server_first).unwrap();
    let err = client.server_final(b"e=invalid-proof").unwrap_err();
    assert!(matches!(&err, AuthError::ServerError { message } if message == "invalid-proof"));
}

#[test]
fn our_client_rejects_hostile_server_first_messages() {
    let long = vec![b'r'; MAX_SCRAM_MESSAGE_LEN + 1];
    let cases: [&[u8]; 6] = [
        b"",
        b"garbage",
        b"r=notournonce,s=c2FsdA==,i=4096",
        b"\xff\xfe",
        &long,
        b"r=,s=,i=",
    ];
    for case in cases {
        let (mut client, _) = ScramClient::new(b"pw");
        assert!(client.server_first(case).is_err(), "{case:?}");
    }
    let (mut client, client_first) = ScramClient::new(b"pw");
    let nonce = std::str::from_utf8(&client_first[8..]).unwrap();
    let costly = format!("r={nonce}x,s=c2FsdA==,i=4000000000");
    assert!(
        client.server_first(costly.as_bytes()).is_err(),
        "iteration cap"
    );
}

#[test]
fn random_bytes_never_panic_our_client() {
    let mut rng = StdRng::seed_from_u64(7);
    let secret = ScramSecret::from_password_with("pw", b"salt", 1);
    for _ in 0..300 {
        let len = rng.gen_range(0..64);
        let junk: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let (mut client, _) = ScramClient::new(b"pw");
        assert!(client.server_first(&junk).is_err());
        // Even after a failed step the exchange is dead, not a panic.
        assert!(client.server_final(&junk).is_err());

        let (mut client, client_first) = ScramClient::new(b"pw");
        let (_, server_first) = ScramServer::start(&secret, &client_first).unwrap();
        client.server_first(&server_first).unwrap();
        assert!(client.server_final(&junk).is_err());
    }
}

// RFC 7677 §3, user "user", password "pencil".
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
/// The same secret in PostgreSQL's verifier format (computed independently with Python's
/// hashlib.pbkdf2_hmac and hmac).
const RFC_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
                            WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                            wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

fn rfc_secret() -> ScramSecret {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    ScramSecret::from_password_with("pencil", &salt, 4096)
}

#[test]
fn rfc7677_server_messages_match_the_published_exchange() {
    let (server, server_first) =
        ScramServer::start_with_nonce(&rfc_secret(), RFC_CLIENT_FIRST.as_bytes(), RFC_SERVER_NONCE)
            .unwrap();
    assert_eq!(
        std::str::from_utf8(&server_first).unwrap(),
        RFC_SERVER_FIRST
    );
    let server_final = server.finish(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(
        std::str::from_utf8(&server_final).unwrap(),
        RFC_SERVER_FINAL
    );
}

#[test]
fn rfc7677_verifier_parses_to_the_derived_secret_and_back() {
    let parsed = ScramSecret::parse(RFC_VERIFIER).unwrap();
    assert_eq!(parsed, rfc_secret());
    assert_eq!(parsed.to_verifier(), RFC_VERIFIER);
    let (server, _) =
        ScramServer::start_with_nonce(&parsed, RFC_CLIENT_FIRST.as_bytes(), RFC_SERVER_NONCE)
            .unwrap();
    let server_final = server.finish(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
}

#[test]
fn postgres_format_verifier_authenticates_the_right_password_only() {
    let verifier = postgres_protocol::password::scram_sha_256(b"from pg_authid");
    let secret = ScramSecret::parse(&verifier).unwrap();
    assert_eq!(secret.iterations(), 4096);
    assert_eq!(secret.to_verifier(), verifier);
    pg_client_against(&secret, "from pg_authid").unwrap();
    our_client_against(&secret, "from pg_authid").unwrap();
    let err = pg_client_against(&secret, "from pg_authiD").unwrap_err();
    assert!(matches!(err, AuthError::WrongPassword), "{err}");
}

/// Written by PostgreSQL 15 (`CREATE ROLE alice PASSWORD 'Tr0ub4dor&3'` with
/// `password_encryption = 'scram-sha-256'`, then `SELECT rolpassword FROM pg_authid`).
const PG15_VERIFIER: &str = "SCRAM-SHA-256$4096:MTjNmPOQrCsPCO9Tw3L6Dw==$\
                             YHkCOFppeOgutEZPgk7cChl9KHeCSepaY8pzRCPLqQg=:\
                             JQeigFQ3mYNT7Oz37zsUrVlL55yh7wdyndw2SmS8nIU=";

#[test]
fn verifier_written_by_postgresql_15_matches_our_derivation() {
    let parsed = ScramSecret::parse(PG15_VERIFIER).unwrap();
    let salt = STANDARD.decode("MTjNmPOQrCsPCO9Tw3L6Dw==").unwrap();
    assert_eq!(
        parsed,
        ScramSecret::from_password_with("Tr0ub4dor&3", &salt, 4096)
    );
    pg_client_against(&parsed, "Tr0ub4dor&3").unwrap();
}

#[test]
fn malformed_verifiers_are_rejected() {
    let key = STANDARD.encode([1u8; 32]);
    let short = STANDARD.encode([1u8; 31]);
    let cases = [
        String::new(),
        "md5abcdef".to_owned(),
        format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
        format!("SCRAM-SHA-256$4096:c2FsdA=={key}:{key}"),
        format!("SCRAM-SHA-256$4096c2FsdA==${key}:{key}"),
        format!("SCRAM-SHA-256$4096:c2FsdA==${key}{key}"),
        format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
        format!("SCRAM-SHA-256$-1:c2FsdA==${key}:{key}"),
        format!("SCRAM-SHA-256$4096:${key}:{key}"),
        format!("SCRAM-SHA-256$4096:!!!${key}:{key}"),
        format!("SCRAM-SHA-256$4096:c2FsdA==${short}:{key}"),
        format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{short}"),
        format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}$"),
        format!("SCRAM-SHA-256$4096:{}${key}:{key}", "A".repeat(2000)),
    ];
    for case in &cases {
        let err = ScramSecret::parse(case).unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::Config, "{case}: {err}");
    }
    assert!(ScramSecret::parse(&format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}")).is_ok());
}

#[test]
fn secret_debug_output_hides_the_keys() {
    let secret = rfc_secret();
    let shown = format!("{secret:?}");
    assert!(
        !shown.contains(&STANDARD.encode(secret.stored_key)),
        "{shown}"
    );
    assert!(
        !shown.contains(&STANDARD.encode(secret.server_key)),
        "{shown}"
    );
}

#[test]
fn doomed_secret_rejects_even_the_right_password() {
    let mut secret = ScramSecret::from_password_with("pw", b"salt", 1);
    pg_client_against(&secret, "pw").unwrap();
    secret.doomed = true;
    assert!(matches!(
        pg_client_against(&secret, "pw"),
        Err(AuthError::WrongPassword)
    ));
}

#[test]
fn mock_secret_has_a_stable_per_user_salt_and_rejects_every_password() {
    let key = [9u8; 32];
    let a = ScramSecret::mock("alice", &key);
    assert_eq!(a, ScramSecret::mock("alice", &key));
    assert_ne!(a.salt, ScramSecret::mock("bob", &key).salt);
    assert_ne!(a.salt, ScramSecret::mock("alice", &[8u8; 32]).salt);
    assert_eq!(a.salt.len(), 16);
    assert!(matches!(
        pg_client_against(&a, ""),
        Err(AuthError::WrongPassword)
    ));
}

// md5("secret" || "postgres") and then with salt [1, 2, 3, 4], computed independently with
// Python's hashlib.
const MD5_STORED: &str = "md553f48b7c4b76a86ce72276c5755f217d";
const MD5_RESPONSE: &str = "md5bb41a296aab6baccb36ff243a562abff";
const MD5_SALT: [u8; 4] = [1, 2, 3, 4];

#[test]
fn md5_response_matches_known_answer_and_postgres_protocol() {
    assert_eq!(md5_response("postgres", "secret", MD5_SALT), MD5_RESPONSE);
    let theirs = postgres_protocol::authentication::md5_hash(b"postgres", b"secret", MD5_SALT);
    assert_eq!(md5_response("postgres", "secret", MD5_SALT), theirs);
}

#[test]
fn md5_verify_accepts_only_the_right_response() {
    let with_nul = [MD5_RESPONSE.as_bytes(), b"\0"].concat();
    assert!(md5_verify(
        "postgres",
        "secret",
        MD5_SALT,
        MD5_RESPONSE.as_bytes()
    ));
    assert!(md5_verify("postgres", "secret", MD5_SALT, &with_nul));
    assert!(!md5_verify(
        "postgres",
        "Secret",
        MD5_SALT,
        MD5_RESPONSE.as_bytes()
    ));
    assert!(!md5_verify(
        "postgre",
        "secret",
        MD5_SALT,
        MD5_RESPONSE.as_bytes()
    ));
    assert!(!md5_verify(
        "postgres",
        "secret",
        [1, 2, 3, 5],
        MD5_RESPONSE.as_bytes()
    ));
    assert!(!md5_verify(
        "postgres",
        "secret",
        MD5_SALT,
        &MD5_RESPONSE.as_bytes()[..34]
    ));
    assert!(!md5_verify("postgres", "secret", MD5_SALT, b""));
    assert!(!md5_verify(
        "postgres",
        "secret",
        MD5_SALT,
        &[with_nul.as_slice(), b"\0"].concat()
    ));
}

#[test]
fn md5_verify_stored_accepts_pg_authid_hash() {
    assert!(md5_verify_stored(
        MD5_STORED,
        MD5_SALT,
        MD5_RESPONSE.as_bytes()
    ));
    let upper = format!("md5{}", MD5_STORED[3..].to_ascii_uppercase());
    assert!(md5_verify_stored(&upper, MD5_SALT, MD5_RESPONSE.as_bytes()));
    assert!(!md5_verify_stored(
        MD5_STORED,
        [0; 4],
        MD5_RESPONSE.as_bytes()
    ));
    assert!(!md5_verify_stored(
        &MD5_STORED[..34],
        MD5_SALT,
        MD5_RESPONSE.as_bytes()
    ));
    assert!(!md5_verify_stored(
        "secret",
        MD5_SALT,
        MD5_RESPONSE.as_bytes()
    ));
    assert!(!md5_verify_stored(
        "md5zz",
        MD5_SALT,
        MD5_RESPONSE.as_bytes()
    ));
}

#[test]
fn md5_hash_written_by_postgresql_15_verifies() {
    // `CREATE ROLE bob PASSWORD 'secret'` with `password_encryption = 'md5'`.
    let stored = "md521f3163f8f86fa10bdefbfbd502a8f06";
    let salt = [0xde, 0xad, 0xbe, 0xef];
    let response = md5_response("bob", "secret", salt);
    assert!(md5_verify_stored(stored, salt, response.as_bytes()));
    assert!(!md5_verify_stored(stored, salt, MD5_RESPONSE.as_bytes()));
}

#[test]
fn random_md5_salts_differ() {
    let salts: Vec<[u8; 4]> = (0..8).map(|_| random_md5_salt()).collect();
    assert!(salts.iter().any(|s| *s != salts[0]));
}

#[test]
fn cleartext_matches_exact_password_with_at_most_one_nul() {
    assert!(cleartext_matches("pw", b"pw"));
    assert!(cleartext_matches("pw", b"pw\0"));
    assert!(cleartext_matches("", b"\0"));
    assert!(!cleartext_matches("pw", b"pw\0\0"));
    assert!(!cleartext_matches("pw", b"p"));
    assert!(!cleartext_matches("pw", b"pwx"));
    assert!(!cleartext_matches("pw", b"PW"));
    assert!(!cleartext_matches("pw", b""));
}

#[test]
fn every_error_has_a_kind() {
    let errors = [
        (
            AuthError::TooLong {
                what: ScramMessage::ClientFirst,
                len: 2000,
                max: 1024,
            },
            AuthErrorKind::Length,
        ),
        (
            AuthError::ChannelBindingUnsupported,
            AuthErrorKind::Unsupported,
        ),
        (AuthError::ChannelBindingMismatch, AuthErrorKind::Malformed),
        (AuthError::NonceMismatch, AuthErrorKind::Malformed),
        (AuthError::BadVerifier { why: "x" }, AuthErrorKind::Config),
        (
            AuthError::ServerError {
                message: "e".into(),
            },
            AuthErrorKind::Upstream,
        ),
    ];
    for (err, kind) in errors {
        assert_eq!(err.kind(), kind, "{err}");
    }
}
