//! HTTP/1.1 as the broker's listeners speak it, sans-IO: a client's request head (parsed
//! with httparse, bounded by a size limit), the responses the broker sends (status line,
//! headers, a body), and the static files of `http_dir` (`files.rs`). The WebSockets
//! listener (`src/ws`: its upgrade request, or a plain request for a file) uses it, and
//! so does the HTTP console (`src/console`, a [`Handler`] behind the same connection
//! state machine): one parser for both.
//!
//! It never touches a socket, never panics on what a client sent and never looks at more
//! than the limit it is given: a head that does not fit is refused with 431, a malformed
//! one with 400. Only `files.rs` reads the file system, and only below its directory.

pub mod files;

#[cfg(test)]
mod tests;

use bytes::Bytes;

/// Headers per request at most (more: 431).
pub const MAX_HEADERS: usize = 64;

/// One request header. Names are compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// The `x` of `HTTP/1.x`.
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

impl Request {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Every comma-separated element of every header called `name`, trimmed, in order
    /// (`Connection: keep-alive, Upgrade`); values that are not UTF-8 are skipped.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether header `name` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }
}

/// Answers the requests of a listener that serves more than files (the HTTP console).
/// Called on a shard thread with a complete request head; it must answer at once and
/// never block (it reads what the shards published, it never waits for a shard).
pub trait Handler: Send + Sync + std::fmt::Debug {
    fn handle(
        &self,
        request: &Request,
        peer: std::net::SocketAddr,
        now: std::time::Instant,
    ) -> Response;
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The head is larger than the limit (or has more than [`MAX_HEADERS`] headers).
    #[error("request header larger than {0} bytes")]
    TooLarge(usize),
    /// Not an HTTP/1.x request head.
    #[error("malformed HTTP request ({0})")]
    Malformed(String),
}

impl RequestError {
    /// The status to answer with.
    pub fn status(&self) -> Status {
        match self {
            Self::TooLarge(_) => Status::RequestHeaderFieldsTooLarge,
            Self::Malformed(_) => Status::BadRequest,
        }
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: not complete yet (and
/// within `limit`); `Ok(Some((request, n)))`: the head is the first `n` bytes (what
/// follows belongs to the next protocol, e.g. WebSocket frames).
pub fn parse_request(buf: &[u8], limit: usize) -> Result<Option<(Request, usize)>, RequestError> {
    let window = &buf[..buf.len().min(limit)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(window) {
        Ok(httparse::Status::Partial) if buf.len() >= limit => Err(RequestError::TooLarge(limit)),
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let request = Request {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                minor_version: req.version.unwrap_or(0),
                headers: req
                    .headers
                    .iter()
                    .map(|h| Header {
                        name: h.name.to_string(),
                        value: h.value.to_vec(),
                    })
                    .collect(),
            };
            Ok(Some((request, n)))
        }
        Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooLarge(limit)),
        Err(e) => Err(RequestError::Malformed(e.to_string())),
    }
}

/// The statuses the broker answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    SwitchingProtocols,
    Ok,
    Accepted,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UriTooLong,
    UpgradeRequired,
    RequestHeaderFieldsTooLarge,
    InternalServerError,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Self::SwitchingProtocols => 101,
            Self::Ok => 200,
            Self::Accepted => 202,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UriTooLong => 414,
            Self::UpgradeRequired => 426,
            Self::RequestHeaderFieldsTooLarge => 431,
            Self::InternalServerError => 500,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::SwitchingProtocols => "Switching Protocols",
            Self::Ok => "OK",
            Self::Accepted => "Accepted",
            Self::BadRequest => "Bad Request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::UriTooLong => "URI Too Long",
            Self::UpgradeRequired => "Upgrade Required",
            Self::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            Self::InternalServerError => "Internal Server Error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

/// A response: status, headers and body. Every response but 101 carries its
/// `Content-Length` and `Connection: close` (the broker answers one request per
/// connection).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// Answer to HEAD: the headers of the body without the body.
    head_only: bool,
}

impl Response {
    pub fn new(status: Status) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            head_only: false,
        }
    }

    /// A short plain-text error page saying what was wrong.
    pub fn error(status: Status, message: &str) -> Self {
        Self::new(status).body(
            "text/plain; charset=utf-8",
            Bytes::from(format!("{status}: {message}\n")),
        )
    }

    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    #[must_use]
    pub fn body(self, content_type: &str, body: Bytes) -> Self {
        let mut r = self.header("Content-Type", content_type);
        r.body = body;
        r
    }

    /// Leaves the body out (a HEAD request), keeping its Content-Length.
    #[must_use]
    pub fn head_only(mut self, yes: bool) -> Self {
        self.head_only = yes;
        self
    }

    /// The status line and headers, ending with the blank line.
    pub fn head(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status.code(),
            self.status.reason()
        );
        if self.status != Status::SwitchingProtocols {
            out.push_str("Server: shardmq\r\n");
        }
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        if self.status != Status::SwitchingProtocols {
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                self.body.len()
            ));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// Head and body, as written to the connection.
    pub fn into_parts(self) -> (Bytes, Bytes) {
        let head = Bytes::from(self.head());
        let body = if self.head_only {
            Bytes::new()
        } else {
            self.body
        };
        (head, body)
    }
}
