//! The per-listener TLS keys (see `config::tls`). Like Mosquitto, they belong to the last
//! `listener` line above them (or the default listener) whatever `per_listener_settings`
//! says. Keys rustls cannot honour are errors when ignoring them would change who may
//! connect (`psk_*`, engines) and warnings when it would not (`dhparamfile`: rustls uses
//! ECDHE only); a listener never silently ends up unencrypted.

use std::path::PathBuf;

use super::{Line, Parser};
use crate::config::error::{ConfigError, ErrorKind};
use crate::config::tls::{
    parse_tls12_suites, parse_tls13_suites, CertIdentity, TlsSettings, TlsVersion, TLS12_EXPECTED,
    TLS13_EXPECTED,
};

/// Every TLS key this module handles, for "did you mean" and `Parser::apply`.
pub(super) const TLS_KEYS: &[&str] = &[
    "certfile",
    "keyfile",
    "cafile",
    "capath",
    "crlfile",
    "require_certificate",
    "use_identity_as_username",
    "use_subject_as_username",
    "tls_version",
    "ciphers",
    "ciphers_tls1.3",
    "dhparamfile",
    "psk_hint",
    "psk_file",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
];

/// Where a listener's TLS settings were first given, for errors found at the end.
#[derive(Clone, Debug)]
pub(super) struct TlsOrigin {
    pub(super) file: PathBuf,
    pub(super) line: usize,
    pub(super) key: String,
}

impl Parser {
    /// Applies one TLS key to the current listener.
    pub(super) fn apply_tls(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let origin = format!("{}:{}", line.file.display(), line.number);
        let spec = self.listener();
        if spec.tls_origin.is_none() {
            spec.tls_origin = Some(TlsOrigin {
                file: line.file.to_path_buf(),
                line: line.number,
                key: line.key.to_string(),
            });
        }
        let tls = spec.tls.get_or_insert_with(|| TlsSettings {
            origin,
            ..TlsSettings::default()
        });
        match line.key {
            "certfile" => tls.certfile = Some(line.path()?),
            "keyfile" => tls.keyfile = Some(line.path()?),
            "cafile" => tls.cafile = Some(line.path()?),
            "capath" => tls.capath = Some(line.path()?),
            "crlfile" => tls.crlfile = Some(line.path()?),
            "require_certificate" => tls.require_certificate = line.bool()?,
            "use_identity_as_username" | "use_subject_as_username" => {
                let wanted = if line.key == "use_identity_as_username" {
                    CertIdentity::CommonName
                } else {
                    CertIdentity::Subject
                };
                if line.bool()? {
                    if tls.identity != CertIdentity::None && tls.identity != wanted {
                        return Err(line.error(ErrorKind::Unsupported(
                            "both use_identity_as_username and use_subject_as_username on one listener",
                        )));
                    }
                    tls.identity = wanted;
                } else if tls.identity == wanted {
                    tls.identity = CertIdentity::None;
                }
            }
            "tls_version" => {
                tls.min_version = match line.word()? {
                    "tlsv1.2" => TlsVersion::Tls12,
                    "tlsv1.3" => TlsVersion::Tls13,
                    "tlsv1" | "tlsv1.1" => return Err(line.error(ErrorKind::Unsupported(
                        "TLS 1.0 and 1.1 (insecure; rustls has neither): use tlsv1.2 or tlsv1.3",
                    ))),
                    _ => return Err(line.invalid("tlsv1.2 or tlsv1.3")),
                };
            }
            "ciphers" => {
                let value = line.word()?;
                tls.ciphers =
                    Some(parse_tls12_suites(value).ok_or_else(|| line.invalid(TLS12_EXPECTED))?);
            }
            "ciphers_tls1.3" => {
                let value = line.word()?;
                tls.ciphers_tls13 =
                    Some(parse_tls13_suites(value).ok_or_else(|| line.invalid(TLS13_EXPECTED))?);
            }
            "tls_keyform" => match line.word()? {
                "pem" => {}
                "engine" => {
                    return Err(line.error(ErrorKind::Unsupported(
                        "keys held by an OpenSSL engine; give a PEM keyfile",
                    )))
                }
                _ => return Err(line.invalid("pem")),
            },
            "dhparamfile" => {
                line.path()?;
                self.warn(
                    line,
                    "ignored: rustls offers no finite-field Diffie-Hellman suites; key \
                     exchange uses ECDHE",
                );
            }
            "psk_hint" | "psk_file" => {
                return Err(line.error(ErrorKind::Unsupported(
                    "TLS pre-shared keys (rustls has no PSK suites); use certificates",
                )))
            }
            "tls_engine" | "tls_engine_kpass_sha1" => {
                return Err(line.error(ErrorKind::Unsupported(
                    "OpenSSL engines; give PEM certfile and keyfile",
                )))
            }
            _ => return Err(line.error(ErrorKind::UnknownKey { suggestion: None })),
        }
        Ok(())
    }
}

/// Checks one listener's TLS settings as a whole (after its last line).
pub(super) fn check(tls: &TlsSettings, origin: &TlsOrigin) -> Result<(), ConfigError> {
    let error = |why: &'static str| ConfigError {
        file: origin.file.clone(),
        line: origin.line,
        key: Some(origin.key.clone()),
        kind: ErrorKind::Unsupported(why),
    };
    if tls.certfile.is_none() || tls.keyfile.is_none() {
        return Err(error(
            "a TLS listener needs both certfile and keyfile (refused rather than run unencrypted)",
        ));
    }
    let has_ca = tls.cafile.is_some() || tls.capath.is_some();
    if tls.require_certificate && !has_ca {
        return Err(error(
            "require_certificate true needs cafile or capath to check client certificates",
        ));
    }
    if tls.crlfile.is_some() && !has_ca {
        return Err(error(
            "crlfile needs cafile or capath (client certificates)",
        ));
    }
    if tls.identity != CertIdentity::None && !has_ca {
        return Err(error(
            "use_identity_as_username/use_subject_as_username need cafile or capath to \
             check client certificates",
        ));
    }
    if tls.ciphers.is_some() && tls.min_version == TlsVersion::Tls13 {
        return Err(error(
            "ciphers lists TLS 1.2 suites but tls_version is tlsv1.3; use ciphers_tls1.3",
        ));
    }
    Ok(())
}
