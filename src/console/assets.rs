//! The console page's static files, embedded in the binary (`include_str!`: no build
//! step, no CDN, nothing read from disk at run time). The page (`assets/index.html`,
//! `console.js`, `console.css`) only calls the JSON API of [`super::api`].

const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "/console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

/// The content type and body of the file at `path`.
pub fn find(path: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, ctype, body)| (*ctype, *body))
}
