//! TLS settings of one listener, as the configuration file gives them (Mosquitto's
//! per-listener `certfile`, `keyfile`, `cafile`, ... keys).
//!
//! Pure data: paths and choices, checked for what can be checked without reading a file
//! (versions, cipher names, combinations). Loading the certificates and building the
//! rustls configuration is `net::transport::tls`'s job, at start-up and on SIGHUP, so that
//! replaced certificate files are picked up by a reload.
//!
//! The cipher-suite names are those of the suites rustls (ring provider) implements, in
//! both the OpenSSL spelling Mosquitto users write (`ECDHE-RSA-AES128-GCM-SHA256`) and the
//! IANA one (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); anything else (OpenSSL cipher
//! strings such as `HIGH:!aNULL`, suites rustls does not have) is refused by the parser.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How a client certificate becomes the MQTT user name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertIdentity {
    /// The CONNECT user name is used (with the password file, if any).
    #[default]
    None,
    /// `use_identity_as_username`: the certificate subject's common name (CN). A client
    /// without a certificate, or whose certificate has no CN, is refused (as Mosquitto).
    CommonName,
    /// `use_subject_as_username`: the whole subject in RFC 2253 form.
    Subject,
}

/// The lowest TLS version a listener accepts (`tls_version`; Mosquitto 2.0 treats the
/// value as a minimum). rustls has no TLS 1.0/1.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

/// One listener's TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Server certificate chain (PEM), required.
    pub certfile: Option<PathBuf>,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1), required.
    pub keyfile: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are checked against.
    pub cafile: Option<PathBuf>,
    /// Directory of CA certificate files (every PEM file in it is read).
    pub capath: Option<PathBuf>,
    /// Certificate revocation lists (PEM) for client certificates.
    pub crlfile: Option<PathBuf>,
    /// Clients must present a certificate signed by `cafile`/`capath`.
    pub require_certificate: bool,
    pub identity: CertIdentity,
    pub min_version: TlsVersion,
    /// TLS 1.2 suites by IANA name (`ciphers`); `None` = rustls's defaults.
    pub ciphers: Option<Vec<&'static str>>,
    /// TLS 1.3 suites by IANA name (`ciphers_tls1.3`); `None` = rustls's defaults.
    pub ciphers_tls13: Option<Vec<&'static str>>,
    /// Where the listener is configured (`file:line`), for messages about it.
    pub origin: String,
}

/// TLS settings for one listening address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// The configured address (as in `Config::listeners`).
    pub addr: SocketAddr,
    pub settings: TlsSettings,
}

/// TLS 1.2 suites: (OpenSSL name, IANA name).
pub const TLS12_SUITES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// TLS 1.3 suites (OpenSSL and IANA use the same names).
pub const TLS13_SUITES: &[&str] = &[
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// What `ciphers` accepts, for error messages.
pub(crate) const TLS12_EXPECTED: &str = "a ':'-separated list of TLS 1.2 suites rustls supports: \
     ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, \
     ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256, \
     ECDHE-RSA-CHACHA20-POLY1305 (or their IANA names); OpenSSL cipher strings such as \
     HIGH:!aNULL are not understood";

/// What `ciphers_tls1.3` accepts, for error messages.
pub(crate) const TLS13_EXPECTED: &str = "a ':'-separated list of TLS_AES_256_GCM_SHA384, \
     TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256";

/// Parses a `ciphers` value into IANA names; `None` if a name is not a supported suite.
pub(crate) fn parse_tls12_suites(value: &str) -> Option<Vec<&'static str>> {
    let mut out = Vec::new();
    for name in value.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        let (_, iana) = TLS12_SUITES.iter().find(|(openssl, iana)| {
            openssl.eq_ignore_ascii_case(name) || iana.eq_ignore_ascii_case(name)
        })?;
        if !out.contains(iana) {
            out.push(*iana);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Parses a `ciphers_tls1.3` value; `None` if a name is not a supported suite.
pub(crate) fn parse_tls13_suites(value: &str) -> Option<Vec<&'static str>> {
    let mut out = Vec::new();
    for name in value.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        let iana = TLS13_SUITES.iter().find(|s| s.eq_ignore_ascii_case(name))?;
        if !out.contains(iana) {
            out.push(*iana);
        }
    }
    (!out.is_empty()).then_some(out)
}
