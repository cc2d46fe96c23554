//! TLS with rustls, driven sans-IO: [`TlsLayer`] takes the bytes the socket gave and
//! returns the decrypted ones, and takes plaintext and returns records for the socket; it
//! never touches the socket itself (`read_tls` reads from a byte slice, `write_tls`
//! writes to whatever the caller passes).
//!
//! Configuration: [`ServerTls::load`] reads a listener's certificate, key, CA and CRL
//! files and builds the rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3, the
//! configured minimum version and suites). It runs at start-up and on SIGHUP; a
//! connection keeps the `Arc<ServerConfig>` it was accepted with, so a reload affects only
//! new connections. [`ClientTls::load`] is the same for outbound connections (the bridge).
//!
//! Memory: the send side is bounded by rustls's buffer limit ([`SEND_BUFFER`]):
//! [`TlsLayer::write`] takes only what fits, so the broker's own output buffer keeps its
//! back-pressure role. The receive side is bounded by rustls (a record is at most 16 KiB
//! plus overhead, its deframer buffer shrinks when drained) and the plaintext is handed on
//! at once.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite,
    SupportedProtocolVersion,
};

use super::unbuffered::ServerSide;
use super::x509;
use crate::config::{CertIdentity, TlsSettings, TlsVersion};

/// Encrypted bytes rustls may hold for the socket before [`TlsLayer::write`] takes no
/// more plaintext.
pub(crate) const SEND_BUFFER: usize = 64 * 1024;

/// Why TLS configuration could not be built.
#[derive(Debug)]
pub(crate) enum TlsConfigError {
    /// A file could not be read or holds no usable PEM item of the kind wanted.
    File {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    /// rustls refused the combination (key does not match the certificate, ...).
    Rustls { what: &'static str, why: String },
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::File { what, path, why } => {
                write!(f, "{what} {}: {why}", path.display())
            }
            TlsConfigError::Rustls { what, why } => write!(f, "{what}: {why}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// A TLS listener's server configuration and how its clients' certificates name them.
#[derive(Clone)]
pub(crate) struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) identity: CertIdentity,
}

impl ServerTls {
    /// Reads the files `settings` names and builds the configuration.
    pub(crate) fn load(settings: &TlsSettings) -> Result<ServerTls, TlsConfigError> {
        let missing = |what: &'static str| TlsConfigError::Rustls {
            what,
            why: "not set".into(),
        };
        let certfile = settings.certfile.as_deref().ok_or(missing("certfile"))?;
        let keyfile = settings.keyfile.as_deref().ok_or(missing("keyfile"))?;
        let chain = load_certs("certfile", certfile)?;
        let key = load_key(keyfile)?;
        let provider = provider(
            settings.ciphers.as_deref(),
            settings.ciphers_tls13.as_deref(),
        );
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(settings.min_version))
            .map_err(|e| rustls_error("protocol versions and ciphers", e))?;
        let roots = client_roots(settings)?;
        let builder = match roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if let Some(path) = &settings.crlfile {
                    let crls = CertificateRevocationListDer::pem_file_iter(path)
                        .map_err(|e| file_error("crlfile", path, e))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| file_error("crlfile", path, e))?;
                    v = v.with_crls(crls);
                }
                if !settings.require_certificate {
                    v = v.allow_unauthenticated();
                }
                let verifier = v
                    .build()
                    .map_err(|e| rustls_error("client certificate verifier", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| rustls_error("certfile/keyfile", e))?;
        Ok(ServerTls {
            config: Arc::new(config),
            identity: settings.identity,
        })
    }
}

// Dead until the bridge (next issue) dials out with it; tested below.
#[cfg_attr(not(test), allow(dead_code))]
/// Settings of an outbound TLS connection (the bridge's `bridge_cafile`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientTlsSettings {
    /// CA certificates the server is checked against (`bridge_cafile`/`bridge_capath`;
    /// one of them is required).
    pub(crate) cafile: Option<PathBuf>,
    pub(crate) capath: Option<PathBuf>,
    /// Client certificate chain and key, for servers that require one.
    pub(crate) certfile: Option<PathBuf>,
    pub(crate) keyfile: Option<PathBuf>,
    /// `bridge_insecure`: do not check that the certificate names the host (the chain is
    /// still checked against the CA), as Mosquitto.
    pub(crate) insecure: bool,
    /// ALPN protocols offered (`bridge_alpn`).
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) min_version: TlsVersion,
}

// Dead until the bridge (next issue) dials out with it; tested below.
#[cfg_attr(not(test), allow(dead_code))]
/// An outbound TLS configuration.
#[derive(Clone)]
pub(crate) struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
}

// Dead until the bridge (next issue) dials out with it; tested below.
#[cfg_attr(not(test), allow(dead_code))]
impl ClientTls {
    pub(crate) fn load(settings: &ClientTlsSettings) -> Result<ClientTls, TlsConfigError> {
        let provider = provider(None, None);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(settings.min_version))
            .map_err(|e| rustls_error("protocol versions", e))?;
        let Some(roots) = load_roots(settings.cafile.as_deref(), settings.capath.as_deref())?
        else {
            return Err(TlsConfigError::Rustls {
                what: "cafile/capath",
                why: "needed to check the server".into(),
            });
        };
        let builder = if settings.insecure {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rustls_error("server certificate verifier", e))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(danger::AnyHostName(inner)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match (&settings.certfile, &settings.keyfile) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs("certfile", cert)?, load_key(key)?)
                .map_err(|e| rustls_error("certfile/keyfile", e))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsConfigError::Rustls {
                    what: "certfile/keyfile",
                    why: "give both or neither".into(),
                })
            }
        };
        config.alpn_protocols = settings.alpn.clone();
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }
}

/// Who the peer's certificate says it is, once the handshake is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerIdentity {
    /// The user name taken from the certificate.
    Name(String),
    /// The listener takes the user name from the certificate, but there is none (no
    /// certificate, or no CN in it): the client must be refused (as Mosquitto does).
    Missing,
}

/// Why a TLS connection failed (the peer sent something TLS does not allow).
#[derive(Debug)]
pub(crate) enum TlsError {
    Protocol(rustls::Error),
    /// rustls refused more input (its buffers are full): a peer that does not play by
    /// the record rules.
    Buffer(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Protocol(e) => write!(f, "TLS: {e}"),
            TlsError::Buffer(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// One TLS connection, server or client side.
pub(crate) struct TlsLayer {
    side: Side,
    identity: CertIdentity,
    /// The handshake finished and the identity (if any) was handed out.
    identity_taken: bool,
}

/// The server side holds no buffer while idle (unbuffered API, see `unbuffered`); the
/// client side (one per bridge, not thousands) uses rustls's buffered connection.
enum Side {
    Server(ServerSide),
    Client(ClientConnection),
}

impl TlsLayer {
    pub(crate) fn server(tls: &ServerTls) -> Result<TlsLayer, TlsError> {
        Ok(TlsLayer {
            side: Side::Server(ServerSide::new(Arc::clone(&tls.config))?),
            identity: tls.identity,
            identity_taken: false,
        })
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn client(tls: &ClientTls, server_name: &str) -> Result<TlsLayer, TlsError> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            TlsError::Protocol(rustls::Error::General("invalid server name".into()))
        })?;
        let mut conn =
            ClientConnection::new(Arc::clone(&tls.config), name).map_err(TlsError::Protocol)?;
        conn.set_buffer_limit(Some(SEND_BUFFER));
        Ok(TlsLayer {
            side: Side::Client(conn),
            identity: CertIdentity::None,
            identity_taken: true,
        })
    }

    /// Decrypts `input` (bytes from the socket), appending the plaintext to `plain`.
    /// Returns whether the peer closed the TLS session (close_notify). Records to send
    /// back (handshake, alerts) are queued: see [`TlsLayer::wants_write`].
    pub(crate) fn read(&mut self, mut input: &[u8], plain: &mut Vec<u8>) -> Result<bool, TlsError> {
        let conn = match &mut self.side {
            Side::Server(s) => return s.read(input, plain),
            Side::Client(c) => c,
        };
        let mut closed = false;
        while !input.is_empty() {
            match conn.read_tls(&mut input) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsError::Buffer(e)),
            }
            let state = conn.process_new_packets().map_err(TlsError::Protocol)?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                if let Err(e) = conn.reader().read_exact(&mut plain[start..]) {
                    plain.truncate(start);
                    return Err(TlsError::Buffer(e));
                }
            }
            closed |= state.peer_has_closed();
        }
        Ok(closed)
    }

    /// Takes as much of `plain` as the send buffer has room for; returns how much.
    pub(crate) fn write(&mut self, plain: &[u8]) -> usize {
        match &mut self.side {
            Side::Server(s) => s.write(plain),
            Side::Client(c) => c.writer().write(plain).unwrap_or(0),
        }
    }

    /// Encrypts all of `plain` regardless of the buffer limit, adds close_notify, and
    /// appends everything pending for the socket to `out` (a connection's last words).
    pub(crate) fn seal_final(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let conn = match &mut self.side {
            Side::Server(s) => return s.seal_final(plain, out),
            Side::Client(c) => c,
        };
        conn.set_buffer_limit(None);
        let _ = conn.writer().write_all(plain);
        conn.send_close_notify();
        while conn.wants_write() {
            match conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Whether records wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        match &self.side {
            Side::Server(s) => s.wants_write(),
            Side::Client(c) => c.wants_write(),
        }
    }

    /// Writes pending records to `w` (the socket) once.
    pub(crate) fn write_to(&mut self, w: &mut dyn Write) -> io::Result<usize> {
        match &mut self.side {
            Side::Server(s) => s.write_to(w),
            Side::Client(c) => c.write_tls(w),
        }
    }

    /// Received bytes held for a partial record (server side; rustls holds the client's).
    pub(crate) fn input_bytes(&self) -> usize {
        match &self.side {
            Side::Server(s) => s.input_bytes(),
            Side::Client(_) => 0,
        }
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        match &self.side {
            Side::Server(s) => s.is_handshaking(),
            Side::Client(c) => c.is_handshaking(),
        }
    }

    /// After the handshake, once: the user name the client certificate gives, if the
    /// listener takes it from there.
    pub(crate) fn poll_identity(&mut self) -> Option<PeerIdentity> {
        if self.identity_taken || self.is_handshaking() {
            return None;
        }
        self.identity_taken = true;
        let certs = match &self.side {
            Side::Server(s) => s.peer_certificates(),
            Side::Client(c) => c.peer_certificates(),
        };
        let cert = certs.and_then(|c| c.first());
        let name = match self.identity {
            CertIdentity::None => return None,
            CertIdentity::CommonName => cert.and_then(|c| x509::common_name(c)),
            CertIdentity::Subject => cert.and_then(|c| x509::subject_rfc2253(c)),
        };
        Some(match name {
            Some(n) if !n.is_empty() => PeerIdentity::Name(n),
            _ => PeerIdentity::Missing,
        })
    }
}

/// The ring provider, restricted to the configured suites (`None` = rustls's defaults).
fn provider(tls12: Option<&[&str]>, tls13: Option<&[&str]>) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if tls12.is_some() || tls13.is_some() {
        p.cipher_suites.retain(|s: &SupportedCipherSuite| {
            let name = s.suite().as_str().unwrap_or("");
            let wanted = match s {
                SupportedCipherSuite::Tls13(_) => tls13,
                SupportedCipherSuite::Tls12(_) => tls12,
            };
            // A family without a list keeps rustls's defaults.
            wanted.is_none_or(|w| w.iter().any(|n| suite_matches(name, n)))
        });
    }
    Arc::new(p)
}

/// rustls names TLS 1.3 suites `TLS13_AES_128_GCM_SHA256`; IANA `TLS_AES_128_GCM_SHA256`.
fn suite_matches(rustls_name: &str, iana: &str) -> bool {
    rustls_name == iana
        || rustls_name
            .strip_prefix("TLS13_")
            .is_some_and(|rest| iana.strip_prefix("TLS_") == Some(rest))
}

fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => BOTH,
        TlsVersion::Tls13 => ONLY13,
    }
}

/// The CAs client certificates are checked against, if the listener checks them.
fn client_roots(settings: &TlsSettings) -> Result<Option<RootCertStore>, TlsConfigError> {
    load_roots(settings.cafile.as_deref(), settings.capath.as_deref())
}

/// The CAs of `cafile` and every PEM file in `capath`; `None` if neither is given.
fn load_roots(
    cafile: Option<&Path>,
    capath: Option<&Path>,
) -> Result<Option<RootCertStore>, TlsConfigError> {
    if cafile.is_none() && capath.is_none() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    if let Some(path) = cafile {
        add_roots(&mut roots, "cafile", path)?;
    }
    if let Some(dir) = capath {
        let entries = std::fs::read_dir(dir).map_err(|e| file_error("capath", dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| file_error("capath", dir, e))?.path();
            if !path.is_file() {
                continue;
            }
            // OpenSSL's hashed directories hold other files too (CRLs, links): every file
            // that yields certificates counts, the others are skipped.
            if let Ok(iter) = CertificateDer::pem_file_iter(&path) {
                for cert in iter.flatten() {
                    let _ = roots.add(cert);
                }
            }
        }
    }
    if roots.is_empty() {
        let path = cafile.or(capath);
        return Err(TlsConfigError::File {
            what: "cafile/capath",
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            why: "no CA certificate found".into(),
        });
    }
    Ok(Some(roots))
}

fn add_roots(
    roots: &mut RootCertStore,
    what: &'static str,
    path: &Path,
) -> Result<(), TlsConfigError> {
    for cert in load_certs(what, path)? {
        roots.add(cert).map_err(|e| file_error(what, path, e))?;
    }
    Ok(())
}

fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no certificate in it"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error("keyfile", path, e))
}

fn file_error(what: &'static str, path: &Path, why: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::File {
        what,
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn rustls_error(what: &'static str, why: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::Rustls {
        what,
        why: why.to_string(),
    }
}

/// `insecure` (Mosquitto's `bridge_insecure`): the server's chain and signatures are
/// checked as usual; only a certificate that does not name the host is accepted.
mod danger {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    pub(super) struct AnyHostName(pub(super) Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyHostName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    //! Client and server sides against each other, in memory: certificates from rcgen,
    //! bytes pumped between two [`TlsLayer`]s without sockets.
    use super::*;
    use std::path::Path;

    struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        /// A CA, a server certificate for `localhost` and a client certificate with
        /// `client_cn` (none if empty), as PEM files in a fresh directory.
        fn new(name: &str, client_cn: &str) -> Pki {
            use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
            let dir =
                std::env::temp_dir().join(format!("wrenmq-tls-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::default();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "test CA");
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(ca, ca_key);
            let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();
            write("ca.pem", ca_cert.pem());
            let server_key = KeyPair::generate().unwrap();
            let server = CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .signed_by(&server_key, &issuer)
                .unwrap();
            write("server.pem", server.pem());
            write("server.key", server_key.serialize_pem());
            let client_key = KeyPair::generate().unwrap();
            let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
            client.distinguished_name = rcgen::DistinguishedName::new();
            if !client_cn.is_empty() {
                client
                    .distinguished_name
                    .push(DnType::CommonName, client_cn);
            }
            client
                .distinguished_name
                .push(DnType::OrganizationName, "Wren");
            let client = client.signed_by(&client_key, &issuer).unwrap();
            write("client.pem", client.pem());
            write("client.key", client_key.serialize_pem());
            Pki { dir }
        }

        fn path(&self, file: &str) -> PathBuf {
            self.dir.join(file)
        }

        fn server(&self, mtls: bool, identity: CertIdentity) -> ServerTls {
            ServerTls::load(&TlsSettings {
                certfile: Some(self.path("server.pem")),
                keyfile: Some(self.path("server.key")),
                cafile: mtls.then(|| self.path("ca.pem")),
                require_certificate: mtls,
                identity,
                ..TlsSettings::default()
            })
            .unwrap()
        }

        fn client(&self, with_cert: bool, min: TlsVersion) -> ClientTls {
            ClientTls::load(&ClientTlsSettings {
                cafile: Some(self.path("ca.pem")),
                certfile: with_cert.then(|| self.path("client.pem")),
                keyfile: with_cert.then(|| self.path("client.key")),
                min_version: min,
                ..ClientTlsSettings::default()
            })
            .unwrap()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Moves records between the two sides until neither has any; returns what each side
    /// decrypted, or the first error.
    fn pump(c: &mut TlsLayer, s: &mut TlsLayer) -> Result<(Vec<u8>, Vec<u8>), String> {
        let (mut at_c, mut at_s) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_to(&mut wire).unwrap();
            }
            s.read(&wire, &mut at_s)
                .map_err(|e| format!("server: {e}"))?;
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_to(&mut back).unwrap();
            }
            c.read(&back, &mut at_c)
                .map_err(|e| format!("client: {e}"))?;
            if wire.is_empty() && back.is_empty() {
                break;
            }
        }
        Ok((at_c, at_s))
    }

    #[test]
    fn client_and_server_exchange_bytes_both_versions() {
        let pki = Pki::new("both", "sensor-1");
        for min in [TlsVersion::Tls12, TlsVersion::Tls13] {
            let server = pki.server(false, CertIdentity::None);
            let mut s = TlsLayer::server(&server).unwrap();
            let mut c = TlsLayer::client(&pki.client(false, min), "localhost").unwrap();
            assert_eq!(c.write(b"\x10 connect"), 9);
            let (_, at_s) = pump(&mut c, &mut s).unwrap();
            assert_eq!(at_s, b"\x10 connect");
            assert!(!s.is_handshaking() && !c.is_handshaking());
            assert_eq!(s.poll_identity(), None);
            s.write(b"\x20\x02\x00\x00");
            let (at_c, _) = pump(&mut c, &mut s).unwrap();
            assert_eq!(at_c, b"\x20\x02\x00\x00");
        }
    }

    #[test]
    fn client_certificate_common_name_becomes_the_identity() {
        let pki = Pki::new("cn", "sensor-1");
        let mut s = TlsLayer::server(&pki.server(true, CertIdentity::CommonName)).unwrap();
        let mut c = TlsLayer::client(&pki.client(true, TlsVersion::Tls12), "localhost").unwrap();
        pump(&mut c, &mut s).unwrap();
        assert_eq!(
            s.poll_identity(),
            Some(PeerIdentity::Name("sensor-1".into()))
        );
        assert_eq!(s.poll_identity(), None, "handed out once");

        let mut s = TlsLayer::server(&pki.server(true, CertIdentity::Subject)).unwrap();
        let mut c = TlsLayer::client(&pki.client(true, TlsVersion::Tls13), "localhost").unwrap();
        pump(&mut c, &mut s).unwrap();
        assert_eq!(
            s.poll_identity(),
            Some(PeerIdentity::Name("O=Wren,CN=sensor-1".into()))
        );
    }

    #[test]
    fn certificate_without_cn_gives_a_missing_identity() {
        let pki = Pki::new("nocn", "");
        let mut s = TlsLayer::server(&pki.server(true, CertIdentity::CommonName)).unwrap();
        let mut c = TlsLayer::client(&pki.client(true, TlsVersion::Tls13), "localhost").unwrap();
        pump(&mut c, &mut s).unwrap();
        assert_eq!(s.poll_identity(), Some(PeerIdentity::Missing));
    }

    #[test]
    fn server_requiring_a_certificate_refuses_a_client_without_one() {
        let pki = Pki::new("req", "sensor-1");
        let mut s = TlsLayer::server(&pki.server(true, CertIdentity::None)).unwrap();
        let mut c = TlsLayer::client(&pki.client(false, TlsVersion::Tls13), "localhost").unwrap();
        let e = pump(&mut c, &mut s).unwrap_err();
        assert!(e.contains("server"), "{e}");
    }

    #[test]
    fn client_refuses_a_server_of_another_ca_even_insecure() {
        let ours = Pki::new("ours", "x");
        let theirs = Pki::new("theirs", "x");
        let server = theirs.server(false, CertIdentity::None);
        let mut s = TlsLayer::server(&server).unwrap();
        let mut c = TlsLayer::client(&ours.client(false, TlsVersion::Tls12), "localhost").unwrap();
        let e = pump(&mut c, &mut s).unwrap_err();
        assert!(e.starts_with("client"), "{e}");

        let insecure = |pki: &Pki| {
            ClientTls::load(&ClientTlsSettings {
                capath: Some(pki.dir.clone()),
                insecure: true,
                alpn: vec![b"mqtt".to_vec()],
                ..ClientTlsSettings::default()
            })
            .unwrap()
        };
        // insecure skips the host-name check only (Mosquitto's bridge_insecure).
        let mut s = TlsLayer::server(&server).unwrap();
        let mut c = TlsLayer::client(&insecure(&ours), "localhost").unwrap();
        assert!(
            pump(&mut c, &mut s).is_err(),
            "another CA passed with insecure"
        );
    }

    #[test]
    fn insecure_client_accepts_a_certificate_for_another_host_name() {
        let pki = Pki::new("name", "x");
        let server = pki.server(false, CertIdentity::None);
        let strict = pki.client(false, TlsVersion::Tls13);
        let mut s = TlsLayer::server(&server).unwrap();
        let mut c = TlsLayer::client(&strict, "broker.example").unwrap();
        assert!(pump(&mut c, &mut s).is_err(), "wrong host name passed");
        let insecure = ClientTls::load(&ClientTlsSettings {
            capath: Some(pki.dir.clone()),
            insecure: true,
            alpn: vec![b"mqtt".to_vec()],
            ..ClientTlsSettings::default()
        })
        .unwrap();
        let mut s = TlsLayer::server(&server).unwrap();
        let mut c = TlsLayer::client(&insecure, "broker.example").unwrap();
        c.write(b"hi");
        assert_eq!(pump(&mut c, &mut s).unwrap().1, b"hi");
    }

    #[test]
    fn idle_server_connection_holds_no_buffers() {
        let pki = Pki::new("idle", "x");
        let mut s = TlsLayer::server(&pki.server(false, CertIdentity::None)).unwrap();
        let mut c = TlsLayer::client(&pki.client(false, TlsVersion::Tls13), "localhost").unwrap();
        // A large message split over many records, both ways.
        let big = vec![0x5a; 200_000];
        let mut sent = 0;
        while sent < big.len() {
            sent += c.write(&big[sent..]);
            pump(&mut c, &mut s).unwrap();
        }
        let mut sent = 0;
        while sent < big.len() {
            sent += s.write(&big[sent..]);
            pump(&mut c, &mut s).unwrap();
        }
        let Side::Server(side) = &s.side else {
            panic!("server side expected")
        };
        assert_eq!(side.held_bytes(), 0);
        // A partial record is kept, and only that.
        let mut plain = Vec::new();
        s.read(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2], &mut plain)
            .unwrap();
        let Side::Server(side) = &s.side else {
            panic!("server side expected")
        };
        assert!(side.held_bytes() > 0);
    }

    #[test]
    fn garbage_is_a_tls_error_not_a_panic() {
        let pki = Pki::new("garbage", "x");
        let mut s = TlsLayer::server(&pki.server(false, CertIdentity::None)).unwrap();
        let mut plain = Vec::new();
        // A plain MQTT CONNECT sent to a TLS port.
        let e = s.read(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", &mut plain);
        assert!(e.is_err());
        assert!(plain.is_empty());
    }

    /// Regression (ws merge): the loop sealed a connection it closed without final bytes
    /// through its transport, so a TLS layer that had failed got close_notify after its
    /// fatal alert, which rustls asserts against: garbage on a TLS port panicked the loop.
    #[test]
    fn a_failed_tls_transport_closes_without_sealing() {
        let pki = Pki::new("failed", "x");
        let server = pki.server(false, CertIdentity::None);
        for ws in [false, true] {
            let t = super::super::Transport::tls_server(&server).unwrap();
            #[cfg(feature = "websockets")]
            let t = match ws {
                true => super::super::Transport {
                    ws: Some(crate::net::websocket::WsServer::new(4096)),
                    ..t
                },
                false => t,
            };
            let _ = ws;
            let mut t = t;
            let r = t.read(
                b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
                &mut Vec::new(),
            );
            assert!(r.is_err());
            let mut out = Vec::new();
            t.seal_quiet(&mut out);
            t.seal_final(b"\xe0\x00", &mut out);
        }
    }

    #[test]
    fn seal_final_ends_with_close_notify() {
        let pki = Pki::new("seal", "x");
        let mut s = TlsLayer::server(&pki.server(false, CertIdentity::None)).unwrap();
        let mut c = TlsLayer::client(&pki.client(false, TlsVersion::Tls13), "localhost").unwrap();
        pump(&mut c, &mut s).unwrap();
        let mut out = Vec::new();
        s.seal_final(b"\xe0\x00", &mut out);
        let mut plain = Vec::new();
        assert!(c.read(&out, &mut plain).unwrap(), "close_notify seen");
        assert_eq!(plain, b"\xe0\x00");
    }

    #[test]
    fn missing_or_wrong_files_name_the_file() {
        let pki = Pki::new("files", "x");
        let mut settings = TlsSettings {
            certfile: Some(pki.path("nope.pem")),
            keyfile: Some(pki.path("server.key")),
            ..TlsSettings::default()
        };
        let e = ServerTls::load(&settings).err().unwrap().to_string();
        assert!(e.starts_with("certfile ") && e.contains("nope.pem"), "{e}");
        // A key that does not match the certificate.
        settings.certfile = Some(pki.path("server.pem"));
        settings.keyfile = Some(pki.path("client.key"));
        let e = ServerTls::load(&settings).err().unwrap().to_string();
        assert!(e.starts_with("certfile/keyfile"), "{e}");
        settings.keyfile = Some(pki.path("ca.pem"));
        let e = ServerTls::load(&settings).err().unwrap().to_string();
        assert!(e.starts_with("keyfile "), "{e}");
        let _ = Path::new("");
    }
}
