//! Hostile input to the server side: every malformed message is an error, none panics.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::pg::auth::{AuthErrorKind, MAX_SCRAM_MESSAGE_LEN};

const PASSWORD: &str = "correct horse";

/// Few iterations: these tests are about parsing, not key stretching.
fn secret() -> ScramSecret {
    ScramSecret::from_password_with(PASSWORD, b"0123456789abcdef", 16)
}

/// A started exchange and the matching, valid client-final-message from postgres-protocol's
/// client with `binding` (`unsupported` sends `n,,`, `unrequested` sends `y,,`).
fn must_exchange(binding: ChannelBinding) -> (ScramServer, Vec<u8>) {
    let mut client = ScramSha256::new(PASSWORD.as_bytes(), binding);
    let (server, server_first) = ScramServer::start(&secret(), client.message()).unwrap();
    client.update(&server_first).unwrap();
    (server, client.message().to_vec())
}

/// A replayable exchange: the same client-first-message and server nonce give the same server
/// state, so one valid client-final-message can be tried against many fresh servers.
struct Replay {
    secret: ScramSecret,
    client_first: Vec<u8>,
    client_final: Vec<u8>,
}

impl Replay {
    const SERVER_NONCE: &str = "fixedServerNonce";

    fn must_new() -> Replay {
        let secret = secret();
        let mut client = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
        let client_first = client.message().to_vec();
        let (_, server_first) =
            ScramServer::start_with_nonce(&secret, &client_first, Self::SERVER_NONCE).unwrap();
        client.update(&server_first).unwrap();
        let client_final = client.message().to_vec();
        Replay {
            secret,
            client_first,
            client_final,
        }
    }

    fn server(&self) -> ScramServer {
        ScramServer::start_with_nonce(&self.secret, &self.client_first, Self::SERVER_NONCE)
            .unwrap()
            .0
    }
}

fn start_err(client_first: &[u8]) -> AuthError {
    match ScramServer::start(&secret(), client_first) {
        Ok(_) => panic!(
            "accepted client-first {:?}",
            String::from_utf8_lossy(client_first)
        ),
        Err(e) => e,
    }
}

#[test]
fn valid_exchange_succeeds_so_the_mutations_below_are_meaningful() {
    let (server, client_final) = must_exchange(ChannelBinding::unsupported());
    assert!(server.finish(&client_final).unwrap().starts_with(b"v="));
}

#[test]
fn malformed_client_first_messages_are_rejected() {
    let long = format!("n,,n=,r={}", "a".repeat(MAX_SCRAM_MESSAGE_LEN));
    let cases: &[(&[u8], AuthErrorKind)] = &[
        (b"", AuthErrorKind::Malformed),
        (b"n", AuthErrorKind::Malformed),
        (b"n,", AuthErrorKind::Malformed),
        (b"n,,", AuthErrorKind::Malformed),
        (b"n,,n=", AuthErrorKind::Malformed),
        (b"n,,n=u,", AuthErrorKind::Malformed),
        (b"n,,n=u,r=", AuthErrorKind::Malformed),
        (b"n,,n=u,r=a b", AuthErrorKind::Malformed),
        (b"n,,n=u,r=ab,c", AuthErrorKind::Malformed),
        (b"n,,n=u,r=ab,=c", AuthErrorKind::Malformed),
        (b"n,,r=abc,n=u", AuthErrorKind::Malformed),
        (b"n,,n=u,s=abc", AuthErrorKind::Malformed),
        (b"x,,n=,r=abc", AuthErrorKind::Malformed),
        (b"nn,,n=,r=abc", AuthErrorKind::Malformed),
        (b"n,junk,n=,r=abc", AuthErrorKind::Malformed),
        (b"n,,n=\xff,r=abc", AuthErrorKind::Malformed),
        (b"n,,n=,r=ab\xc3", AuthErrorKind::Malformed),
        (
            b"p=tls-server-end-point,,n=,r=abc",
            AuthErrorKind::Unsupported,
        ),
        (b"n,a=admin,n=,r=abc", AuthErrorKind::Unsupported),
        (b"n,,m=ext,n=,r=abc", AuthErrorKind::Unsupported),
        (long.as_bytes(), AuthErrorKind::Length),
    ];
    for (input, kind) in cases {
        let err = start_err(input);
        assert_eq!(
            err.kind(),
            *kind,
            "{:?}: {err}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn channel_binding_request_gets_the_specific_error() {
    let err = start_err(b"p=tls-server-end-point,,n=,r=abc");
    assert!(matches!(err, AuthError::ChannelBindingUnsupported), "{err}");
    assert!(err.to_string().contains("SCRAM-SHA-256-PLUS"));
    assert!(matches!(
        start_err(b"n,a=admin,n=,r=abc"),
        AuthError::AuthzidUnsupported
    ));
    assert!(matches!(
        start_err(b"n,,m=x,n=,r=abc"),
        AuthError::ExtensionUnsupported
    ));
}

#[test]
fn client_first_ignores_user_name_and_extensions() {
    let secret = secret();
    for ok in [
        &b"n,,n=,r=abc"[..],
        b"y,,n=someone=2Celse,r=abc",
        b"n,,n=u,r=abc,x=1,y=",
    ] {
        let (_, server_first) = ScramServer::start_with_nonce(&secret, ok, "SRV").unwrap();
        assert!(server_first.starts_with(b"r=abcSRV,s="), "{ok:?}");
    }
}

#[test]
fn server_nonce_is_random_base64_of_18_bytes() {
    let secret = secret();
    let (a, _) = ScramServer::start(&secret, b"n,,n=,r=abc").unwrap();
    let (b, _) = ScramServer::start(&secret, b"n,,n=,r=abc").unwrap();
    let part = a.combined_nonce.strip_prefix("abc").unwrap();
    assert_eq!(STANDARD.decode(part).unwrap().len(), SERVER_NONCE_LEN);
    assert_ne!(a.combined_nonce, b.combined_nonce);
}

#[test]
fn malformed_client_final_messages_are_rejected() {
    let (_, valid) = must_exchange(ChannelBinding::unsupported());
    let valid = String::from_utf8(valid).unwrap();
    let (without_proof, _) = valid.rsplit_once(",p=").unwrap();
    let nonce_attr = without_proof.strip_prefix("c=biws,").unwrap();
    let short_proof = STANDARD.encode([7u8; 31]);
    let oversized = format!("{without_proof},p={}", "A".repeat(MAX_SCRAM_MESSAGE_LEN));
    let cases: Vec<(Vec<u8>, AuthErrorKind)> = vec![
        (b"".to_vec(), AuthErrorKind::Malformed),
        (b"garbage".to_vec(), AuthErrorKind::Malformed),
        (without_proof.into(), AuthErrorKind::Malformed),
        (
            format!("{without_proof},p=!!!notbase64").into(),
            AuthErrorKind::Malformed,
        ),
        (
            format!("{without_proof},p={short_proof}").into(),
            AuthErrorKind::Malformed,
        ),
        (
            format!("{without_proof},p=").into(),
            AuthErrorKind::Malformed,
        ),
        (
            format!("{nonce_attr},p={short_proof}").into(),
            AuthErrorKind::Malformed,
        ),
        (
            format!("c=biws,p={short_proof}").into(),
            AuthErrorKind::Malformed,
        ),
        (
            format!("c=biws,{nonce_attr},7,p=x").into(),
            AuthErrorKind::Malformed,
        ),
        (
            format!("c=eSws,{nonce_attr},p={short_proof}").into(),
            AuthErrorKind::Malformed,
        ),
        (
            format!("c=biws,r=wrong,p={short_proof}").into(),
            AuthErrorKind::Malformed,
        ),
        (
            [without_proof.as_bytes(), b",p=\xff\xfe"].concat(),
            AuthErrorKind::Malformed,
        ),
        (oversized.into(), AuthErrorKind::Length),
    ];
    for (input, kind) in cases {
        let (server, _) = must_exchange(ChannelBinding::unsupported());
        let err = server.finish(&input).unwrap_err();
        assert_eq!(
            err.kind(),
            kind,
            "{:?}: {err}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn channel_binding_attribute_must_match_the_gs2_header() {
    // n,, first, then c= claims y,,.
    let (server, valid) = must_exchange(ChannelBinding::unsupported());
    let forged = String::from_utf8(valid)
        .unwrap()
        .replacen("c=biws", "c=eSws", 1);
    assert!(matches!(
        server.finish(forged.as_bytes()),
        Err(AuthError::ChannelBindingMismatch)
    ));
    // y,, first, then c= claims n,,.
    let (server, valid) = must_exchange(ChannelBinding::unrequested());
    let forged = String::from_utf8(valid)
        .unwrap()
        .replacen("c=eSws", "c=biws", 1);
    assert!(matches!(
        server.finish(forged.as_bytes()),
        Err(AuthError::ChannelBindingMismatch)
    ));
}

#[test]
fn y_header_exchange_succeeds() {
    let (server, valid) = must_exchange(ChannelBinding::unrequested());
    assert!(valid.starts_with(b"c=eSws,"));
    assert!(server.finish(&valid).is_ok());
}

#[test]
fn client_final_from_another_exchange_is_a_nonce_mismatch() {
    let (server, _) = must_exchange(ChannelBinding::unsupported());
    let (_, other) = must_exchange(ChannelBinding::unsupported());
    assert!(matches!(
        server.finish(&other),
        Err(AuthError::NonceMismatch)
    ));
}

#[test]
fn nonce_that_only_extends_the_combined_nonce_is_rejected() {
    let (server, valid) = must_exchange(ChannelBinding::unsupported());
    let valid = String::from_utf8(valid).unwrap();
    let (head, proof) = valid.rsplit_once(",p=").unwrap();
    let forged = format!("{head}X,p={proof}");
    assert!(matches!(
        server.finish(forged.as_bytes()),
        Err(AuthError::NonceMismatch)
    ));
}

#[test]
fn altered_proof_is_wrong_password() {
    let (server, valid) = must_exchange(ChannelBinding::unsupported());
    let valid = String::from_utf8(valid).unwrap();
    let (head, proof) = valid.rsplit_once(",p=").unwrap();
    let mut proof = STANDARD.decode(proof).unwrap();
    proof[0] ^= 1;
    let forged = format!("{head},p={}", STANDARD.encode(proof));
    assert!(matches!(
        server.finish(forged.as_bytes()),
        Err(AuthError::WrongPassword)
    ));
}

#[test]
fn every_truncation_of_a_valid_client_final_is_rejected() {
    let replay = Replay::must_new();
    let valid = &replay.client_final;
    assert!(replay.server().finish(valid).is_ok());
    for cut in 0..valid.len() {
        assert!(
            replay.server().finish(&valid[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn every_truncation_of_a_valid_client_first_is_rejected_or_a_shorter_nonce() {
    let first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    let nonce_at = first.len() - "rOprNGfwEbeRWgbNEkqO".len();
    for cut in 0..first.len() {
        let result = ScramServer::start(&secret(), &first[..cut]);
        // A prefix that still has one nonce character is a valid (shorter) message.
        assert_eq!(result.is_ok(), cut > nonce_at, "cut at {cut}");
    }
}

/// Bytes drawn mostly from the SCRAM alphabet, so random inputs reach deep parser states.
fn random_message(rng: &mut StdRng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"nyp=,acrmsiv0123ABCxyz+/=\xff\x00";
    let len = match rng.gen_range(0..10) {
        0 => rng.gen_range(0..=MAX_SCRAM_MESSAGE_LEN + 64),
        _ => rng.gen_range(0..48),
    };
    (0..len)
        .map(|_| {
            if rng.gen_bool(0.8) {
                ALPHABET[rng.gen_range(0..ALPHABET.len())]
            } else {
                rng.r#gen()
            }
        })
        .collect()
}

#[test]
fn random_bytes_never_panic_the_server() {
    let mut rng = StdRng::seed_from_u64(0x5ca1ab1e);
    let secret = secret();
    for _ in 0..5_000 {
        let input = random_message(&mut rng);
        let _ = ScramServer::start(&secret, &input);
        let prefixed = [&b"n,,n=,r=abc,"[..], &input].concat();
        let _ = ScramServer::start(&secret, &prefixed);
    }
    let replay = Replay::must_new();
    let valid = &replay.client_final;
    for _ in 0..2_000 {
        let mut input = valid.clone();
        match rng.gen_range(0..3) {
            0 => input = random_message(&mut rng),
            1 => input.truncate(rng.gen_range(0..=valid.len())),
            _ => {
                let i = rng.gen_range(0..input.len());
                input[i] = rng.r#gen();
            }
        }
        let result = replay.server().finish(&input);
        assert!(
            &input == valid || result.is_err(),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
}
