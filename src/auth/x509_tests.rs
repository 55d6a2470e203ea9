//! The subject DN against OpenSSL itself (`openssl x509 -nameopt RFC2253`, what Mosquitto
//! prints with `XN_FLAG_RFC2253`), on certificates `openssl req` makes here.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use super::*;

/// A self-signed DER certificate with `subject` (openssl's `-subj` syntax), and OpenSSL's
/// RFC 2253 rendering of it; None when openssl is not installed.
fn openssl_cert(subject: &str, tag: &str) -> Option<(Vec<u8>, String)> {
    let dir = std::env::temp_dir().join(format!("shardmq-x509-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, pem, der_path) = (dir.join("k.pem"), dir.join("c.pem"), dir.join("c.der"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-utf8",
            "-multivalue-rdn",
            "-subj",
            subject,
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&pem)
        .output()
        .ok()?;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let conv = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der_path)
        .status()
        .unwrap();
    assert!(conv.success());
    let shown = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let line = String::from_utf8(shown.stdout).unwrap();
    let dn = line
        .trim_end()
        .strip_prefix("subject=")
        .unwrap()
        .to_string();
    let der = std::fs::read(&der_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some((der, dn))
}

#[test]
fn subject_dn_is_what_openssl_prints_with_rfc2253() {
    for (i, subject) in [
        "/CN=client",
        "/C=GB/ST=Derbyshire/L=Matlock/O=Example Ltd/OU=IoT/CN=sensor-1/emailAddress=a@b.c",
        "/DC=org/DC=example/UID=u42/CN=with\\,comma+SN=multi",
        "/CN=needs \\\"quotes\\\" <and> ;semi\\\\ back/O= lead and trail /OU=#hash",
        "/CN=caf\u{e9} \u{65e5}\u{672c}/O=x",
        "/CN=x/serialNumber=42/street=Main St/postalCode=DE4 3AB/title=Dr",
    ]
    .into_iter()
    .enumerate()
    {
        let Some((der, want)) = openssl_cert(subject, &i.to_string()) else {
            eprintln!("SKIPPED: openssl not found");
            return;
        };
        assert_eq!(
            subject_dn(&der).as_deref(),
            Some(want.as_str()),
            "{subject}"
        );
    }
}

#[test]
fn subject_cn_of_a_real_certificate() {
    let Some((der, _)) = openssl_cert("/O=x/CN=the-cn", "cn") else {
        return;
    };
    assert_eq!(subject_cn(&der).as_deref(), Some("the-cn"));
}

#[test]
fn garbage_has_no_name() {
    for input in [
        &[][..],
        &[0x30],
        &[0x30, 0x85, 1, 2, 3, 4, 5],
        &[0x30, 0x82, 0xFF],
        &[0x30, 0x03, 0x30, 0x01, 0x00],
    ] {
        assert!(subject_cn(input).is_none());
        assert!(subject_dn(input).is_none());
    }
}

#[test]
fn dotted_oids() {
    assert_eq!(dotted(&[0x55, 0x04, 0x63]).as_deref(), Some("2.5.4.99"));
    assert_eq!(
        dotted(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D]).as_deref(),
        Some("1.2.840.113549")
    );
}
