#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use super::files::{percent_decode, HttpDir};
use super::*;

const GET: &[u8] = b"GET /mqtt?x=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\
Upgrade: websocket\r\n\r\nrest";

#[test]
fn a_complete_head_is_parsed_and_what_follows_is_left() {
    let (req, n) = parse_request(GET, 1024).unwrap().unwrap();
    assert_eq!(&GET[n..], b"rest");
    assert_eq!(req.method, "GET");
    assert_eq!(req.target, "/mqtt?x=1");
    assert_eq!(req.path(), "/mqtt");
    assert_eq!(req.minor_version, 1);
    assert_eq!(req.header("host"), Some(&b"h"[..]));
    assert!(req.has_token("connection", "upgrade"));
    assert!(!req.has_token("connection", "close"));
}

#[test]
fn a_partial_head_waits_and_every_prefix_is_partial() {
    let end = GET.len() - 4;
    for cut in 0..end {
        assert_eq!(parse_request(&GET[..cut], 1024), Ok(None), "cut at {cut}");
    }
}

#[test]
fn a_head_over_the_limit_is_431_complete_or_not() {
    // Incomplete and already at the limit.
    let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 100]].concat();
    assert_eq!(parse_request(&long, 64), Err(RequestError::TooLarge(64)));
    assert_eq!(parse_request(&long, 64).unwrap_err().status().code(), 431);
    // Complete, but only beyond the limit.
    assert_eq!(parse_request(GET, 40), Err(RequestError::TooLarge(40)));
    // Within it: fine.
    assert!(parse_request(GET, GET.len()).unwrap().is_some());
}

#[test]
fn too_many_headers_is_431_and_garbage_is_400() {
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        parse_request(&many, 65535).unwrap_err().status(),
        Status::RequestHeaderFieldsTooLarge
    );
    for garbage in [
        &b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"[..],
        b"GET / FTP/1.0\r\n\r\n",
        b"\0\0\0\0",
    ] {
        let e = parse_request(garbage, 1024).unwrap_err();
        assert_eq!(e.status(), Status::BadRequest, "{garbage:?}");
    }
}

#[test]
fn responses_carry_length_and_close_and_head_leaves_the_body_out() {
    let r = Response::error(Status::NotFound, "no such file");
    let (head, body) = r.clone().into_parts();
    let head = String::from_utf8(head.to_vec()).unwrap();
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    assert!(head.contains("Connection: close\r\n"));
    assert!(head.ends_with("\r\n\r\n"));
    let (head2, body2) = r.head_only(true).into_parts();
    assert!(body2.is_empty());
    assert!(String::from_utf8_lossy(&head2).contains(&format!("Content-Length: {}", body.len())));
}

/// A private directory tree: www/ (served) with index.html, js/app.js, sub/ (no index),
/// a link to a file outside, and secret.txt next to www/.
fn tree() -> (PathBuf, HttpDir) {
    let base = std::env::temp_dir().join(format!(
        "shardmq-http-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let www = base.join("www");
    std::fs::create_dir_all(www.join("js")).unwrap();
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), "<p>hi</p>").unwrap();
    std::fs::write(www.join("js/app.js"), "let x = 1;").unwrap();
    std::fs::write(base.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), www.join("link.txt")).unwrap();
    let dir = HttpDir::open(&www).unwrap();
    (base, dir)
}

fn get(dir: &HttpDir, method: &str, target: &str) -> (u16, String, String) {
    let req = Request {
        method: method.into(),
        target: target.into(),
        minor_version: 1,
        headers: Vec::new(),
    };
    let (head, body) = dir.serve(&req).response.into_parts();
    let head = String::from_utf8(head.to_vec()).unwrap();
    let code = head[9..12].parse().unwrap();
    (code, head, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn http_dir_serves_files_and_index_html() {
    let (base, dir) = tree();
    let (code, head, body) = get(&dir, "GET", "/");
    assert_eq!((code, body.as_str()), (200, "<p>hi</p>"));
    assert!(head.contains("Content-Type: text/html"), "{head}");
    let (code, head, body) = get(&dir, "GET", "/js/app.js?v=2");
    assert_eq!((code, body.as_str()), (200, "let x = 1;"));
    assert!(head.contains("Content-Type: text/javascript"), "{head}");
    let (code, head, body) = get(&dir, "HEAD", "/index.html");
    assert_eq!((code, body.as_str()), (200, ""));
    assert!(head.contains("Content-Length: 9"), "{head}");
    assert_eq!(get(&dir, "GET", "/missing.html").0, 404);
    assert_eq!(get(&dir, "GET", "/sub/").0, 404); // no index.html there
    assert_eq!(get(&dir, "GET", "/sub").0, 403); // a directory
    assert_eq!(get(&dir, "POST", "/index.html").0, 405);
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn http_dir_never_serves_outside_its_directory() {
    let (base, dir) = tree();
    for target in [
        "/../secret.txt",
        "/js/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/link.txt",
    ] {
        let (code, _, body) = get(&dir, "GET", target);
        assert_eq!(code, 403, "{target}");
        assert!(
            !body.contains("secret\n") && body != "secret",
            "{target}: {body}"
        );
    }
    for target in ["/%zz", "/a%00b", "relative.html", "/%ff%fe"] {
        assert_eq!(get(&dir, "GET", target).0, 400, "{target}");
    }
    // Inside after resolution: allowed.
    assert_eq!(get(&dir, "GET", "/js/../index.html").0, 200);
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
    assert_eq!(percent_decode("/%").as_deref(), None);
    assert_eq!(percent_decode("/%4").as_deref(), None);
    assert_eq!(percent_decode("/%C3%A9").as_deref(), Some("/é"));
}
