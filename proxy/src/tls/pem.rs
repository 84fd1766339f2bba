//! Reading `[pools.tls]` PEM files. Blocking file reads: done once when a pool is built.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TlsError;

/// Every certificate in the PEM file at `path`, in file order (for a chain: leaf first).
///
/// # Errors
/// The file is unreadable, not PEM, or holds no certificate.
pub(super) fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in the PEM file at `path`: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1
/// (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
///
/// # Errors
/// The file is unreadable, not PEM, or holds no such key (encrypted keys are not supported).
pub(super) fn private_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        },
    })
}

/// A trust store of every certificate in the PEM file at `path`.
///
/// # Errors
/// As [`certificates`], or a certificate rustls cannot use as a trust anchor.
pub(super) fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(what, path)? {
        store.add(cert).map_err(|source| TlsError::BadCertificate {
            what,
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(store)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Config {
        what,
        path: path.to_owned(),
        source,
    })
}
