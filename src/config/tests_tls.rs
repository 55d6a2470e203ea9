//! Parser tests for TLS-PSK (`psk_hint`, `psk_file`), `crlfile` and cipher lists: what a
//! listener gets, and which combinations stop the start naming file, line and option.

use std::path::Path;

use super::tests::{parse, parse_err};

#[cfg(feature = "psk")]
#[test]
fn psk_listener_takes_the_global_psk_file() {
    let c = parse(
        "psk_file /etc/psk\nlistener 8883\npsk_hint shardmq\nuse_identity_as_username true\n\
         tls_version tlsv1.2\nciphers PSK-AES128-GCM-SHA256\nciphers_tls1.3 TLS_AES_128_GCM_SHA256\n\
         listener 1883\n",
    );
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert!(tls.is_psk());
    assert_eq!(tls.psk_hint.as_deref(), Some("shardmq"));
    assert_eq!(tls.psk_file.as_deref(), Some(Path::new("/etc/psk")));
    assert!(tls.use_identity_as_username);
    assert_eq!(tls.ciphers.as_deref(), Some("PSK-AES128-GCM-SHA256"));
    assert_eq!(tls.ciphers_tls13.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
    assert_eq!(tls.origin("psk_hint").map(|l| l.line), Some(3));
    assert_eq!(tls.origin("psk_file").map(|l| l.line), Some(1));
    // The global psk_file does not make a plain listener a TLS one.
    assert!(c.listeners[1].tls.is_none());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[cfg(feature = "psk")]
#[test]
fn per_listener_psk_file() {
    let c = parse(
        "per_listener_settings true\nlistener 8883\npsk_hint a\npsk_file /a\n\
         listener 8884\npsk_hint b\npsk_file /b\nlistener 1883\npsk_file /unused\n",
    );
    let file = |i: usize| c.listeners[i].tls.as_ref().and_then(|t| t.psk_file.clone());
    assert_eq!(file(0).as_deref(), Some(Path::new("/a")));
    assert_eq!(file(1).as_deref(), Some(Path::new("/b")));
    assert!(c.listeners[2].tls.is_none());
    assert!(
        c.warnings[0].contains("psk_file") && c.warnings[0].contains("line 9"),
        "{:?}",
        c.warnings
    );
}

#[cfg(feature = "psk")]
#[test]
fn psk_and_certificates_on_one_listener_is_an_error() {
    for (text, option, line) in [
        (
            "listener 8883\npsk_hint h\npsk_file /p\ncertfile /c\nkeyfile /k\n",
            "certfile",
            4,
        ),
        (
            "listener 8883\ncafile /ca\npsk_hint h\npsk_file /p\n",
            "cafile",
            2,
        ),
        (
            "listener 8883\npsk_hint h\npsk_file /p\nrequire_certificate true\n",
            "require_certificate",
            4,
        ),
        (
            "listener 8883\npsk_hint h\npsk_file /p\ncrlfile /crl\n",
            "crlfile",
            4,
        ),
    ] {
        let e = parse_err(text);
        assert!(
            e.contains("Cannot use both certificate and psk encryption")
                && e.contains(option)
                && e.contains(&format!("/etc/x.conf line {line}")),
            "{text:?}: {e}"
        );
    }
}

#[cfg(feature = "psk")]
#[test]
fn psk_hint_needs_a_psk_file_and_a_sane_hint() {
    let e = parse_err("listener 8883\npsk_hint h\n");
    assert!(e.contains("psk_file") && e.contains("line 2"), "{e}");
    let e = parse_err(&format!("listener 8883\npsk_hint {}\n", "h".repeat(129)));
    assert!(e.contains("psk_hint") && e.contains("128"), "{e}");
    // use_identity_as_username is fine without require_certificate on a PSK listener.
    parse("listener 8883\npsk_hint h\npsk_file /p\nuse_identity_as_username true\n");
}

#[test]
fn crlfile_needs_a_ca() {
    let e = parse_err("listener 8883\ncertfile /c\nkeyfile /k\ncrlfile /crl\n");
    assert!(
        e.contains("crlfile") && e.contains("line 4") && e.contains("cafile"),
        "{e}"
    );
    let c = parse(
        "listener 8883\ncertfile /c\nkeyfile /k\ncafile /ca\nrequire_certificate true\ncrlfile /crl\n",
    );
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.crlfile.as_deref(), Some(Path::new("/crl")));
    assert!(!tls.is_psk());
}

#[cfg(not(feature = "psk"))]
#[test]
fn without_the_psk_feature_psk_options_stop_the_start() {
    for text in ["listener 8883\npsk_hint h\n", "psk_file /p\n"] {
        let e = parse_err(text);
        assert!(
            e.contains("feature") && e.contains("/etc/x.conf line"),
            "{e}"
        );
    }
}
