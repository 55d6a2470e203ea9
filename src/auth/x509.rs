//! The client-certificate names Mosquitto turns into usernames: the subject commonName
//! (`use_identity_as_username`) and the whole subject DN in the exact string Mosquitto
//! makes with OpenSSL's `X509_NAME_print_ex(.., XN_FLAG_RFC2253)`
//! (`use_subject_as_username`): RDNs last-first, `,` between them and `+` inside one,
//! OpenSSL's short names (an unknown attribute as its dotted OID with the value as
//! `#` + hex of its DER), strings as UTF-8 with RFC 2253's escapes and every byte above
//! 0x7F and every control character as `\XX`.
//!
//! Sans-IO: it reads DER bytes the TLS layer already verified, never trusts them (no
//! panic on any input: a certificate it cannot read has no name) and never allocates more
//! than the name it returns.

use std::fmt::Write as _;

/// One DER element: (tag, contents, rest).
pub fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7F);
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

/// The contents of the subject Name (a SEQUENCE of RDN SETs) of a DER certificate.
fn subject(cert: &[u8]) -> Option<&[u8]> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature, issuer, validity, subject.
    let (tag, _, r) = der(rest)?;
    if tag == 0xA0 {
        rest = r;
    }
    for _ in 0..4 {
        let (_, _, r) = der(rest)?;
        rest = r;
    }
    let (tag, name, _) = der(rest)?;
    (tag == 0x30).then_some(name)
}

/// One attribute of a Name: (RDN index, OID contents, the value's whole DER element).
type Attribute<'a> = (usize, &'a [u8], &'a [u8]);

/// Each attribute of a Name, in DER order.
fn attributes(name: &[u8]) -> Option<Vec<Attribute<'_>>> {
    let mut out = Vec::new();
    let mut rdns = name;
    let mut index = 0;
    while !rdns.is_empty() {
        let (tag, mut set, r) = der(rdns)?;
        if tag != 0x31 {
            return None;
        }
        rdns = r;
        while !set.is_empty() {
            let (_, attr, r) = der(set)?;
            set = r;
            let (oid_tag, oid, value) = der(attr)?;
            if oid_tag != 0x06 {
                return None;
            }
            der(value)?;
            out.push((index, oid, value));
        }
        index += 1;
    }
    Some(out)
}

/// The subject commonName (OID 2.5.4.3) of a DER certificate, if it is valid UTF-8.
pub fn subject_cn(cert: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    attributes(subject(cert)?)?
        .into_iter()
        .find(|(_, oid, _)| *oid == CN)
        .and_then(|(_, _, value)| {
            let (_, v, _) = der(value)?;
            String::from_utf8(v.to_vec()).ok()
        })
}

/// The subject DN of a DER certificate as Mosquitto's `use_subject_as_username` makes it
/// (see the module documentation), e.g. `CN=client,OU=iot,O=Example,C=GB`.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let attrs = attributes(subject(cert)?)?;
    let mut out = String::new();
    let mut previous: Option<usize> = None;
    // XN_FLAG_DN_REV: every attribute last-first (so a multi-valued RDN's too).
    for (index, oid, value) in attrs.iter().rev() {
        {
            if let Some(p) = previous {
                out.push(if p == *index { '+' } else { ',' });
            }
            previous = Some(*index);
            match short_name(oid) {
                Some(name) => {
                    out.push_str(name);
                    out.push('=');
                    push_value(&mut out, value);
                }
                None => {
                    // XN_FLAG_DUMP_UNKNOWN_FIELDS: dotted OID, value as DER hex.
                    out.push_str(&dotted(oid)?);
                    out.push_str("=#");
                    push_hex(&mut out, value);
                }
            }
        }
    }
    Some(out)
}

/// OpenSSL's short name of the attribute types certificates use.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    const X520: &[(u8, &str)] = &[
        (3, "CN"),
        (4, "SN"),
        (5, "serialNumber"),
        (6, "C"),
        (7, "L"),
        (8, "ST"),
        (9, "street"),
        (10, "O"),
        (11, "OU"),
        (12, "title"),
        (13, "description"),
        (15, "businessCategory"),
        (17, "postalCode"),
        (41, "name"),
        (42, "GN"),
        (43, "initials"),
        (44, "generationQualifier"),
        (46, "dnQualifier"),
        (65, "pseudonym"),
        (97, "organizationIdentifier"),
    ];
    match oid {
        [0x55, 0x04, n] => X520.iter().find(|(k, _)| k == n).map(|(_, v)| *v),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => Some("emailAddress"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19] => Some("DC"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01] => Some("UID"),
        _ => None,
    }
}

/// An OID's dotted form (OpenSSL's `OBJ_obj2txt(.., 1)`).
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let (&first, rest) = arcs.split_first()?;
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut out = format!("{a}.{b}");
    for arc in rest {
        let _ = write!(out, ".{arc}");
    }
    Some(out)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
}

/// A string value (ASN1_STRFLGS_RFC2253): decoded to characters by its type, written as
/// UTF-8 and escaped; a value of any other type as `#` + its DER in hex.
fn push_value(out: &mut String, element: &[u8]) {
    let Some((tag, content, _)) = der(element) else {
        return;
    };
    let chars: Option<Vec<u32>> = match tag {
        // UTF8String
        0x0C => std::str::from_utf8(content)
            .ok()
            .map(|s| s.chars().map(u32::from).collect()),
        // NumericString, PrintableString, T61String (Latin-1 to OpenSSL), IA5String,
        // VisibleString: one byte a character.
        0x12 | 0x13 | 0x14 | 0x16 | 0x1A => Some(content.iter().map(|&b| u32::from(b)).collect()),
        // BMPString (UCS-2), UniversalString (UCS-4).
        0x1E if content.len() % 2 == 0 => Some(
            content
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .collect(),
        ),
        0x1C if content.len() % 4 == 0 => Some(
            content
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => None,
    };
    let Some(chars) = chars else {
        out.push('#');
        push_hex(out, element);
        return;
    };
    let n = chars.len();
    for (i, &c) in chars.iter().enumerate() {
        let Some(ch) = char::from_u32(c) else {
            let _ = write!(out, "\\W{c:08X}");
            continue;
        };
        let mut utf8 = [0u8; 4];
        for &b in ch.encode_utf8(&mut utf8).as_bytes() {
            push_escaped(out, b, i == 0, i + 1 == n);
        }
    }
}

/// One byte as OpenSSL's `do_esc_char` writes it under ASN1_STRFLGS_RFC2253.
fn push_escaped(out: &mut String, b: u8, first: bool, last: bool) {
    let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
        || (first && b == b'#')
        || ((first || last) && b == b' ');
    if !(0x20..0x7F).contains(&b) {
        let _ = write!(out, "\\{b:02X}");
    } else if special {
        out.push('\\');
        out.push(char::from(b));
    } else {
        out.push(char::from(b));
    }
}

#[cfg(test)]
#[path = "x509_tests.rs"]
mod tests;
