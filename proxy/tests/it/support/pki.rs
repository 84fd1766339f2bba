//! A throwaway PKI for the TLS tests, made with rcgen: a CA, a server certificate it signed for
//! `localhost` and 127.0.0.1, and an unrelated CA, as PEM strings and as files in a temp dir
//! (`ca.crt`, `other-ca.crt`, `server.crt`, `server.key`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

pub struct Pki {
    dir: tempfile::TempDir,
    pub cert_pem: String,
    pub key_pem: String,
}

fn must_make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.self_signed(&key).expect("self-signed CA"), key)
}

impl Pki {
    pub fn must_generate() -> Pki {
        let (ca, ca_key) = must_make_ca("sidepool test CA");
        let (other, _) = must_make_ca("some other CA");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let write = |name: &str, pem: &str| std::fs::write(pki.path(name), pem).expect(name);
        write("ca.crt", &ca.pem());
        write("other-ca.crt", &other.pem());
        write("server.crt", &pki.cert_pem);
        write("server.key", &pki.key_pem);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A path as a TOML basic string.
pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}
