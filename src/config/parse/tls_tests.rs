//! TLS listener keys: what they parse to, and the messages for what is refused.

use super::*;
use crate::config::{CertIdentity, TlsVersion};

fn parse(text: &str) -> Result<Parsed, String> {
    let src = MemSource(
        [(PathBuf::from("/etc/w.conf"), text.to_string())]
            .into_iter()
            .collect(),
    );
    parse_with(&src, Path::new("/etc/w.conf")).map_err(|e| e.to_string())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(p) => panic!("{text:?} parsed: {p:?}"),
        Err(e) => e,
    }
}

const TLS: &str = "listener 8883 127.0.0.1\ncertfile /c.pem\nkeyfile /k.pem\n";

#[test]
fn tls_keys_belong_to_their_listener() {
    let p = parse(&format!(
        "listener 1883 127.0.0.1\n{TLS}cafile /ca.pem\nrequire_certificate true\n\
         use_identity_as_username true\ntls_version tlsv1.3\n\
         ciphers_tls1.3 TLS_AES_128_GCM_SHA256\ncrlfile /crl.pem\n"
    ))
    .unwrap();
    let c = &p.config;
    assert_eq!(c.listeners.len(), 2);
    assert!(c.tls_for("127.0.0.1:1883".parse().unwrap()).is_none());
    let t = c.tls_for("127.0.0.1:8883".parse().unwrap()).unwrap();
    assert_eq!(t.certfile.as_deref(), Some(Path::new("/c.pem")));
    assert_eq!(t.keyfile.as_deref(), Some(Path::new("/k.pem")));
    assert_eq!(t.cafile.as_deref(), Some(Path::new("/ca.pem")));
    assert_eq!(t.crlfile.as_deref(), Some(Path::new("/crl.pem")));
    assert!(t.require_certificate);
    assert_eq!(t.identity, CertIdentity::CommonName);
    assert_eq!(t.min_version, TlsVersion::Tls13);
    assert_eq!(t.ciphers_tls13, Some(vec!["TLS_AES_128_GCM_SHA256"]));
    assert_eq!(t.origin, "/etc/w.conf:3");
}

#[test]
fn tls_listener_without_address_covers_both_families() {
    let p = parse("listener 8883\ncertfile /c.pem\nkeyfile /k.pem\n").unwrap();
    assert_eq!(p.config.tls.len(), 2);
}

#[test]
fn openssl_and_iana_cipher_names_map_to_rustls_suites() {
    let p = parse(&format!(
        "{TLS}ciphers ECDHE-RSA-AES128-GCM-SHA256:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n"
    ))
    .unwrap();
    let t = &p.config.tls[0].settings;
    assert_eq!(
        t.ciphers,
        Some(vec![
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        ])
    );
}

#[test]
fn tls_version_below_1_2_is_refused_naming_the_line() {
    assert_eq!(
        err(&format!("{TLS}tls_version tlsv1.1")),
        "/etc/w.conf:4: tls_version: not supported: TLS 1.0 and 1.1 (insecure; rustls has \
         neither): use tlsv1.2 or tlsv1.3"
    );
    assert_eq!(
        err(&format!("{TLS}tls_version tlsv1")),
        "/etc/w.conf:4: tls_version: not supported: TLS 1.0 and 1.1 (insecure; rustls has \
         neither): use tlsv1.2 or tlsv1.3"
    );
    assert!(err(&format!("{TLS}tls_version sslv3")).contains("expected tlsv1.2 or tlsv1.3"));
}

#[test]
fn openssl_cipher_strings_are_refused_with_the_supported_names() {
    let e = err(&format!("{TLS}ciphers HIGH:!aNULL"));
    assert!(
        e.starts_with("/etc/w.conf:4: ciphers: invalid value 'HIGH:!aNULL'"),
        "{e}"
    );
    assert!(e.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{e}");
    let e = err(&format!("{TLS}ciphers_tls1.3 TLS_AES_128_CCM_SHA256"));
    assert!(
        e.starts_with("/etc/w.conf:4: ciphers_tls1.3: invalid value"),
        "{e}"
    );
}

#[test]
fn tls_without_certfile_or_keyfile_is_refused() {
    assert_eq!(
        err("listener 8883\ncafile /ca.pem\nkeyfile /k.pem"),
        "/etc/w.conf:2: cafile: not supported: a TLS listener needs both certfile and \
         keyfile (refused rather than run unencrypted)"
    );
}

#[test]
fn client_certificate_options_need_a_ca() {
    assert!(err(&format!("{TLS}require_certificate true"))
        .contains("require_certificate true needs cafile or capath"));
    assert!(err(&format!("{TLS}use_identity_as_username true")).contains("need cafile or capath"));
    assert!(err(&format!("{TLS}crlfile /crl.pem")).contains("crlfile needs cafile"));
    assert!(err(&format!(
        "{TLS}cafile /ca.pem\nuse_identity_as_username true\nuse_subject_as_username true"
    ))
    .contains("both use_identity_as_username and use_subject_as_username"));
}

#[test]
fn keys_rustls_cannot_honour_are_refused_or_warned_naming_the_line() {
    assert_eq!(
        err(&format!("{TLS}psk_hint hint")),
        "/etc/w.conf:4: psk_hint: not supported: TLS pre-shared keys (rustls has no PSK \
         suites); use certificates"
    );
    assert!(err(&format!("{TLS}tls_engine pkcs11")).starts_with("/etc/w.conf:4: tls_engine:"));
    assert!(err(&format!("{TLS}tls_keyform engine")).starts_with("/etc/w.conf:4: tls_keyform:"));
    let p = parse(&format!("{TLS}dhparamfile /dh.pem\ntls_keyform pem")).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].line, 4);
    assert_eq!(p.warnings[0].key, "dhparamfile");
}

#[test]
fn psk_alone_never_makes_an_unencrypted_listener() {
    // Mosquitto would run this listener with PSK; wrenmq cannot, so it refuses to start.
    let e = err("listener 8883\npsk_file /psk\npsk_hint x");
    assert!(e.contains("psk_file: not supported"), "{e}");
}
