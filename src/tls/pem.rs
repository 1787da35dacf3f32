//! Reading the configuration's inputs: PEM files or bytes, or DER values held in memory (what
//! the SPIFFE Workload API delivers), checked certificate by certificate so that an error names
//! the input and the position.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::audit;
use crate::identity::name::DistinguishedName;
use crate::tls::config_error::{ConfigError, Origin};

/// Where an input is read from: a file (read again at every build, so reloads see new
/// contents), PEM bytes given in memory, or DER values given in memory.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    File(PathBuf),
    Pem(&'static str, Vec<u8>),
    Der(&'static str, Der),
}

/// DER values given in memory, of the kind the builder method that took them expects.
#[derive(Clone, Debug)]
pub(crate) enum Der {
    Certs(Vec<CertificateDer<'static>>),
    // `PrivateKeyDer` is not `Clone`; its `Debug` elides the key.
    Key(Arc<PrivateKeyDer<'static>>),
    Crls(Vec<CertificateRevocationListDer<'static>>),
}

impl Source {
    pub(crate) fn origin(&self) -> Origin {
        match self {
            Source::File(p) => Origin::File(p.clone()),
            Source::Pem(what, _) | Source::Der(what, _) => Origin::Memory(what),
        }
    }

    fn read(&self) -> Result<(Origin, Vec<u8>), ConfigError> {
        match self {
            Source::File(path) => std::fs::read(path)
                .map(|bytes| (self.origin(), bytes))
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            Source::Pem(_, bytes) => Ok((self.origin(), bytes.clone())),
            // The builder keeps DER sources to the method of their kind; the caller asked for
            // another kind, and finds none.
            Source::Der(..) => Ok((self.origin(), Vec::new())),
        }
    }

    /// The certificates of this input, each checked to be X.509; at least one.
    pub(crate) fn certs(&self) -> Result<(Origin, Vec<CertificateDer<'static>>), ConfigError> {
        let origin = self.origin();
        match self {
            Source::Der(_, Der::Certs(certs)) => {
                if certs.is_empty() {
                    return Err(ConfigError::NoPem {
                        origin,
                        expected: "CERTIFICATE",
                    });
                }
                for (i, cert) in certs.iter().enumerate() {
                    parse_cert(&origin, i + 1, cert)?;
                }
                Ok((origin, certs.clone()))
            }
            _ => {
                let (origin, bytes) = self.read()?;
                let certs = read_certs(&origin, &bytes)?;
                Ok((origin, certs))
            }
        }
    }

    /// The private key of this input.
    pub(crate) fn key(&self) -> Result<(Origin, PrivateKeyDer<'static>), ConfigError> {
        match self {
            Source::Der(_, Der::Key(key)) => Ok((self.origin(), key.clone_key())),
            _ => {
                let (origin, bytes) = self.read()?;
                let key = read_key(&origin, &bytes)?;
                Ok((origin, key))
            }
        }
    }

    /// The CRLs of this input, each checked to parse; at least one.
    pub(crate) fn crls(
        &self,
    ) -> Result<(Origin, Vec<CertificateRevocationListDer<'static>>), ConfigError> {
        let (origin, crls) = match self {
            Source::Der(_, Der::Crls(crls)) if !crls.is_empty() => (self.origin(), crls.clone()),
            _ => {
                let (origin, bytes) = self.read()?;
                let crls = read_crls(&origin, &bytes)?;
                (origin, crls)
            }
        };
        for (i, crl) in crls.iter().enumerate() {
            // rustls only reports "invalid CRL" for the whole set; parse each one here so
            // the error names the input.
            crl_check(&origin, i + 1, crl)?;
        }
        Ok((origin, crls))
    }
}

fn read_certs(origin: &Origin, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConfigError::Pem {
            origin: origin.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ConfigError::NoPem {
            origin: origin.clone(),
            expected: "CERTIFICATE",
        });
    }
    for (i, cert) in certs.iter().enumerate() {
        parse_cert(origin, i + 1, cert)?;
    }
    Ok(certs)
}

fn read_key(origin: &Origin, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => ConfigError::NoPem {
            origin: origin.clone(),
            expected: "PRIVATE KEY",
        },
        source => ConfigError::Pem {
            origin: origin.clone(),
            source,
        },
    })
}

fn read_crls(
    origin: &Origin,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConfigError::Pem {
            origin: origin.clone(),
            source,
        })?;
    if crls.is_empty() {
        return Err(ConfigError::NoPem {
            origin: origin.clone(),
            expected: "X509 CRL",
        });
    }
    Ok(crls)
}

fn crl_check(
    origin: &Origin,
    index: usize,
    crl: &CertificateRevocationListDer<'_>,
) -> Result<(), ConfigError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    match CertificateRevocationList::from_der(crl.as_ref()) {
        Ok(([], _)) => Ok(()),
        Ok(_) => Err(ConfigError::BadCrl {
            origin: origin.clone(),
            reason: format!("CRL #{index} has trailing data"),
        }),
        Err(e) => Err(ConfigError::BadCrl {
            origin: origin.clone(),
            reason: format!("CRL #{index}: {e}"),
        }),
    }
}

pub(crate) fn parse_cert<'a>(
    origin: &Origin,
    index: usize,
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, ConfigError> {
    let bad = |reason: String| ConfigError::BadCertificate {
        origin: origin.clone(),
        index,
        reason,
    };
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(bad("trailing data after the certificate".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

pub(crate) fn check_is_ca(
    origin: &Origin,
    index: usize,
    der: &CertificateDer<'_>,
) -> Result<(), ConfigError> {
    let cert = parse_cert(origin, index, der)?;
    if cert.is_ca() {
        Ok(())
    } else {
        Err(ConfigError::NotACa {
            origin: origin.clone(),
            index,
            subject: DistinguishedName::from_x509(cert.subject()).to_string(),
        })
    }
}

/// The server leaf's `notAfter`, warning when the certificate is not valid yet.
pub(crate) fn server_not_after(
    origin: &Origin,
    chain: &[CertificateDer<'_>],
) -> Option<SystemTime> {
    let Some(Ok(cert)) = chain.first().map(|leaf| parse_cert(origin, 1, leaf)) else {
        return None;
    };
    let validity = cert.validity();
    if validity.not_before.timestamp() > unix_now() {
        tracing::warn!(file = %origin, not_before = %validity.not_before, "the server certificate is not valid yet; clients will refuse it");
    }
    Some(system_time(validity.not_after.timestamp()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn system_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

/// Logs every certificate of `certs` that has expired (error) or expires within `window`
/// (warning); `what` says what they are to the configuration.
pub(crate) fn warn_expiring_certs(
    what: &str,
    origin: &Origin,
    certs: &[CertificateDer<'_>],
    window: Duration,
) {
    let horizon = unix_now().saturating_add(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
    for (i, der) in certs.iter().enumerate() {
        let Ok(cert) = parse_cert(origin, i + 1, der) else {
            continue;
        };
        let not_after = cert.validity().not_after.timestamp();
        if not_after <= horizon {
            let name = DistinguishedName::from_x509(cert.subject()).to_string();
            audit::expiry(what, origin, &name, system_time(not_after));
        }
    }
}

/// Logs every CRL of `crls` whose `nextUpdate` has passed (error) or comes within `window`
/// (warning).
pub(crate) fn warn_expiring_crls(
    origin: &Origin,
    crls: &[CertificateRevocationListDer<'_>],
    window: Duration,
) {
    use x509_parser::revocation_list::CertificateRevocationList;
    let horizon = unix_now().saturating_add(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
    for der in crls {
        let Ok((_, crl)) = CertificateRevocationList::from_der(der.as_ref()) else {
            continue;
        };
        let Some(next_update) = crl.next_update() else {
            continue;
        };
        if next_update.timestamp() <= horizon {
            let issuer = DistinguishedName::from_x509(crl.issuer()).to_string();
            audit::expiry("CRL", origin, &issuer, system_time(next_update.timestamp()));
        }
    }
}
