//! `http_dir`: the static files a WebSockets listener serves to plain HTTP requests, as
//! Mosquitto 2 serves them (GET or HEAD; `/` and paths ending in `/` mean `index.html`
//! there; anything but a regular file below the directory is refused).
//!
//! No path traversal: the request path is percent-decoded, joined to the directory,
//! then resolved with realpath(3) (`..`, symbolic links) and served only if the result is
//! still inside the directory, else 403 — Mosquitto's check. It reads files only (never
//! writes), at most [`MAX_FILE`] bytes each, and never touches a socket.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Request, Response, Status};

/// Largest file served (it is read whole into memory and written from there).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// The directory of one listener's `http_dir`, resolved once at start.
#[derive(Debug, Clone)]
pub struct HttpDir {
    /// Canonical (realpath) form.
    root: PathBuf,
}

/// A request answered from the directory: what to send and, for the log, which file.
#[derive(Debug)]
pub struct Served {
    pub response: Response,
    /// The file sent (200) or the path that was refused.
    pub path: String,
}

impl HttpDir {
    /// Resolves `dir` (it must exist and be a directory).
    pub fn open(dir: &Path) -> io::Result<Self> {
        let root = fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The answer to a plain (not upgrade) request.
    pub fn serve(&self, request: &Request) -> Served {
        let path = request.path().to_string();
        let head_only = match request.method.as_str() {
            "GET" => false,
            "HEAD" => true,
            _ => {
                return Served {
                    response: Response::error(Status::MethodNotAllowed, "only GET and HEAD")
                        .header("Allow", "GET, HEAD"),
                    path,
                }
            }
        };
        let response = match self.resolve(&path) {
            Ok(file) => read(&file).map_or_else(
                |status| Response::error(status, "cannot read the file"),
                |body| Response::new(Status::Ok).body(content_type(&file), body),
            ),
            Err(status) => Response::error(status, "no such file"),
        };
        Served {
            response: response.head_only(head_only),
            path,
        }
    }

    /// The file a request path names, if it may be served.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, Status> {
        let decoded = percent_decode(path).ok_or(Status::BadRequest)?;
        if !decoded.starts_with('/') || decoded.contains('\0') {
            return Err(Status::BadRequest);
        }
        let mut relative = decoded.trim_start_matches('/').to_string();
        if relative.is_empty() || relative.ends_with('/') {
            relative.push_str("index.html");
        }
        let wanted = self.root.join(&relative);
        let real = fs::canonicalize(&wanted).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Status::NotFound,
            io::ErrorKind::PermissionDenied => Status::Forbidden,
            _ if e.raw_os_error() == Some(libc::ENOTDIR) => Status::NotFound,
            _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => Status::UriTooLong,
            _ => Status::InternalServerError,
        })?;
        // [Mosquitto] "Requested file isn't within http_dir, deny access."
        if !real.starts_with(&self.root) {
            return Err(Status::Forbidden);
        }
        match fs::metadata(&real) {
            Ok(m) if m.is_file() => Ok(real),
            Ok(_) => Err(Status::Forbidden),
            Err(_) => Err(Status::NotFound),
        }
    }
}

fn read(file: &Path) -> Result<Bytes, Status> {
    let len = fs::metadata(file).map_err(|_| Status::NotFound)?.len();
    if len > MAX_FILE {
        return Err(Status::InternalServerError);
    }
    fs::read(file).map(Bytes::from).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => Status::Forbidden,
        _ => Status::InternalServerError,
    })
}

/// `%XX` decoding of a request path; None if an escape is malformed or the result is not
/// UTF-8.
pub fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The Content-Type of a file, by extension.
pub fn content_type(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}
