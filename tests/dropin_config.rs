//! A Mosquitto operator's mosquitto.conf: a typo, an ACL line with an unknown access type
//! or an option shardmq cannot honour yet stops the start with file, line and option;
//! harmless leftovers (`retry_interval`) only warn; X.509 version 1 client certificates
//! are refused with the reason and the fix.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::tls::{listener_port, publish, refused_start, tools, Pki};
use common::BrokerProc;

#[test]
fn a_typo_in_an_option_stops_the_start_with_file_and_line() {
    let err = refused_start("listener 0 127.0.0.1\nacl_fille /etc/mosquitto/acl\n");
    assert!(
        err.contains("Error: Unknown configuration variable \"acl_fille\" in ")
            && err.contains("c.conf line 2."),
        "{err}"
    );
}

#[test]
fn an_acl_line_with_an_unknown_access_type_stops_the_start() {
    let dir = common::temp_dir("acl-reed");
    let acl = dir.join("acl");
    std::fs::write(&acl, "user alice\ntopic read a/#\ntopic reed sensors/#\n").unwrap();
    let err = refused_start(&format!(
        "listener 0 127.0.0.1\nacl_file {}\n",
        acl.display()
    ));
    assert!(err.contains("line 3") && err.contains("\"reed\""), "{err}");
}

#[test]
fn options_shardmq_cannot_honour_yet_stop_the_start() {
    for (lines, option) in [
        ("auth_plugin /usr/lib/x.so", "auth_plugin"),
        (
            "bridge_require_ocsp true\nconnection up\naddress 10.0.0.1\ntopic # out 0",
            "bridge_require_ocsp",
        ),
    ] {
        let err = refused_start(&format!("listener 0 127.0.0.1\n{lines}\n"));
        assert!(
            err.contains(&format!("Error: {option} is not supported yet"))
                && err.contains("c.conf line 2."),
            "{lines}: {err}"
        );
    }
}

#[test]
fn harmless_leftovers_only_warn() {
    let b = BrokerProc::start("retry_interval 20\nmax_qos 2\ndhparamfile /etc/dh.pem");
    assert!(b.wait_log("retry_interval in "));
    assert!(b.wait_log("The retry_interval option is no longer available"));
    assert!(b.wait_log("dhparamfile in "));
    common::V4::connect("warned", b.port).disconnect();
}

#[test]
fn x509_v1_client_certificates_are_refused_with_the_fix() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    // A client certificate as `openssl x509 -req` makes it without extensions: version 1.
    let run = |args: &[&str]| {
        let ok = Command::new(&t.openssl).args(args).output().unwrap();
        assert!(ok.status.success(), "{ok:?}");
        String::from_utf8_lossy(&ok.stdout).into_owned()
    };
    let (csr, key, crt) = (pki.path("v1.csr"), pki.path("v1.key"), pki.path("v1.crt"));
    run(&[
        "req",
        "-new",
        "-subj",
        "/CN=v1client",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &pki.path("ca.crt"),
        "-CAkey",
        &pki.path("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &crt,
    ]);
    assert!(run(&["x509", "-in", &crt, "-noout", "-text"]).contains("Version: 1 (0x0)"));
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true",
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = listener_port(&b, 1);
    let mut v1 = pki.client_args(None);
    v1.extend(["--cert".into(), crt, "--key".into(), key]);
    assert!(
        !publish(&t, port, "v1/t", "x", &v1),
        "a v1 certificate is refused"
    );
    assert!(b.wait_log("the client certificate is X.509 version 1"));
    assert!(
        b.wait_log("-extfile"),
        "the log line says how to make a v3 certificate"
    );
    // The same CA's version 3 certificate works.
    assert!(publish(
        &t,
        port,
        "v3/t",
        "x",
        &pki.client_args(Some("client1"))
    ));
}

/// An error states its cause once (the message already carries it; the chain of causes
/// must not repeat it).
#[test]
fn start_errors_state_their_cause_once() {
    let dir = common::temp_dir("cause-once");
    for conf in [
        format!(
            "listener 0 127.0.0.1\ncertfile {d}/none.crt\nkeyfile {d}/none.key\n",
            d = dir.display()
        ),
        format!(
            "listener 0 127.0.0.1\npassword_file {}/none\n",
            dir.display()
        ),
    ] {
        let err = refused_start(&conf);
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    }
}
