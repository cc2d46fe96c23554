//! The subject of an X.509 certificate, read from its DER bytes, as the MQTT user name for
//! `use_identity_as_username` (the common name) and `use_subject_as_username` (the whole
//! subject in RFC 2253 form, formatted the way Mosquitto does it through OpenSSL's
//! `X509_NAME_print_ex(.., XN_FLAG_RFC2253)`: last RDN first, OpenSSL short names, `\XX`
//! for bytes outside printable ASCII, `#hex` for values that are not strings).
//!
//! Hand-written rather than a crate: the certificate has already been verified by rustls
//! (webpki), and a full X.509 parser would add far more code than these few DER steps.
//! Every length is checked; malformed input yields `None`, never a panic.

/// The subject's common name (2.5.4.3), decoded to UTF-8; `None` without one (or with a
/// malformed certificate).
pub(crate) fn common_name(cert: &[u8]) -> Option<String> {
    let subject = subject(cert)?;
    let mut found = None;
    for_each_attribute(subject, |_, oid, tag, value, _| {
        if oid == OID_CN {
            found = decode_string(tag, value);
        }
    })?;
    found
}

/// The subject in RFC 2253 form; `None` for a malformed certificate.
pub(crate) fn subject_rfc2253(cert: &[u8]) -> Option<String> {
    let subject = subject(cert)?;
    // Collect RDNs in order, then print them last first (RFC 2253 section 2.1).
    let mut rdns: Vec<Vec<String>> = Vec::new();
    for_each_attribute(subject, |rdn, oid, vtag, value, value_tlv| {
        let mut part = attribute_name(oid);
        part.push('=');
        match decode_string(vtag, value) {
            Some(text) => escape_rfc2253(&text, &mut part),
            None => {
                part.push('#');
                for b in value_tlv {
                    part.push_str(&format!("{b:02X}"));
                }
            }
        }
        if rdns.len() <= rdn {
            rdns.resize_with(rdn + 1, Vec::new);
        }
        rdns[rdn].push(part);
    })?;
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&rdn.join("+"));
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version` in TBSCertificate.
const VERSION_TAG: u8 = 0xA0;
/// 2.5.4.3 (id-at-commonName).
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element: (tag, content, what follows). Single-byte tags only (all X.509 Name
/// and TBSCertificate fields up to the subject use them).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The content of the subject Name (the RDN sequence) of a DER certificate.
fn subject(cert: &[u8]) -> Option<&[u8]> {
    let (tag, certificate, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == VERSION_TAG {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, then subject.
    let (tag, _, after) = tlv(rest)?;
    if tag != INTEGER {
        return None;
    }
    rest = after;
    for _ in 0..3 {
        let (tag, _, after) = tlv(rest)?;
        if tag != SEQUENCE {
            return None;
        }
        rest = after;
    }
    let (tag, subject, _) = tlv(rest)?;
    (tag == SEQUENCE).then_some(subject)
}

/// Calls `f(RDN index, oid, value tag, value, whole value element)` for every attribute of
/// a Name, in order (a multi-valued RDN gives several attributes with one index).
fn for_each_attribute<'a>(
    name: &'a [u8],
    mut f: impl FnMut(usize, &'a [u8], u8, &'a [u8], &'a [u8]),
) -> Option<()> {
    let mut rest = name;
    let mut rdn = 0;
    while !rest.is_empty() {
        let (tag, set, after) = tlv(rest)?;
        rest = after;
        if tag != SET {
            return None;
        }
        let mut attrs = set;
        while !attrs.is_empty() {
            let (tag, atv, after) = tlv(attrs)?;
            attrs = after;
            if tag != SEQUENCE {
                return None;
            }
            let (oid_tag, oid, value_tlv) = tlv(atv)?;
            if oid_tag != OID {
                return None;
            }
            let (vtag, value, _) = tlv(value_tlv)?;
            f(rdn, oid, vtag, value, value_tlv);
        }
        rdn += 1;
    }
    Some(())
}

/// A directory string as UTF-8; `None` for types that are not strings.
fn decode_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0C | 0x13 | 0x16 | 0x12 | 0x1A => String::from_utf8(value.to_vec()).ok(),
        // T61String: treated as Latin-1, as OpenSSL does.
        0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UCS-2 big endian.
        0x1E => {
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // UniversalString: UCS-4 big endian.
        0x1C => {
            if !value.len().is_multiple_of(4) {
                return None;
            }
            value
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// OpenSSL's short name for an attribute type, or its dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    const NAMES: &[(&[u8], &str)] = &[
        (&[0x55, 0x04, 0x03], "CN"),
        (&[0x55, 0x04, 0x04], "SN"),
        (&[0x55, 0x04, 0x05], "serialNumber"),
        (&[0x55, 0x04, 0x06], "C"),
        (&[0x55, 0x04, 0x07], "L"),
        (&[0x55, 0x04, 0x08], "ST"),
        (&[0x55, 0x04, 0x09], "street"),
        (&[0x55, 0x04, 0x0A], "O"),
        (&[0x55, 0x04, 0x0B], "OU"),
        (&[0x55, 0x04, 0x0C], "title"),
        (&[0x55, 0x04, 0x2A], "GN"),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19],
            "DC",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01],
            "UID",
        ),
        (
            &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01],
            "emailAddress",
        ),
    ];
    if let Some((_, name)) = NAMES.iter().find(|(o, _)| *o == oid) {
        return (*name).to_string();
    }
    dotted(oid)
}

/// An OID in dotted form (X.690 8.19).
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = (acc << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// RFC 2253 section 2.4 escaping, with OpenSSL's `ESC_CTRL | ESC_MSB`: control bytes and
/// bytes with the high bit set (each byte of a UTF-8 sequence) as `\XX`.
fn escape_rfc2253(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
            || (i == 0 && (b == b'#' || b == b' '))
            || (i == last && b == b' ');
        if !(0x20..0x7F).contains(&b) {
            out.push_str(&format!("\\{b:02X}"));
        } else if special {
            out.push('\\');
            out.push(char::from(b));
        } else {
            out.push(char::from(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(subject: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for (t, v) in subject {
            dn.push(t.clone(), *v);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_and_subject_of_a_generated_certificate() {
        let der = cert(&[
            (rcgen::DnType::CountryName, "GB"),
            (rcgen::DnType::OrganizationName, "Wren, Ltd"),
            (rcgen::DnType::CommonName, "sensor-1"),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("sensor-1"));
        assert_eq!(
            subject_rfc2253(&der).as_deref(),
            Some("CN=sensor-1,O=Wren\\, Ltd,C=GB")
        );
    }

    #[test]
    fn certificate_without_cn_has_no_common_name() {
        let der = cert(&[(rcgen::DnType::OrganizationName, "Wren")]);
        assert_eq!(common_name(&der), None);
        assert_eq!(subject_rfc2253(&der).as_deref(), Some("O=Wren"));
    }

    #[test]
    fn malformed_der_is_none_at_every_truncation() {
        let der = cert(&[(rcgen::DnType::CommonName, "x")]);
        for cut in 0..der.len() / 2 {
            assert_eq!(common_name(&der[..cut]), None);
        }
        assert_eq!(common_name(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }

    #[test]
    fn escaping_follows_rfc2253_with_high_bytes_as_hex() {
        let mut s = String::new();
        escape_rfc2253(" a+b;é ", &mut s);
        assert_eq!(s, "\\ a\\+b\\;\\C3\\A9\\ ");
        assert_eq!(
            dotted(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D]),
            "1.2.840.113549"
        );
    }
}
