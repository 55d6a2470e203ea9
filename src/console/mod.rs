//! The HTTP console of an `http_listener`: `GET /metrics` (Prometheus, [`exposition`]),
//! the JSON API under `/api/v1/` ([`api`]) and the page at `/` that uses it (static
//! files embedded in the binary, [`assets`]), every request authenticated with HTTP basic
//! against the listener's password file and only `http_acl write` users allowed to act.
//!
//! It is an [`http::Handler`] behind the same connection state machine as the WebSockets
//! listener (`ws::WsConn`: one HTTP parser, the same size limits, one request per
//! connection, the broker's `connect_timeout` as the header timeout). It runs on the shard
//! thread that accepted the connection and reads only what every shard pinned on the
//! [`board::Board`]; actions (disconnect, delete retained) go to the shards as commands
//! through the runtime's dispatcher and are answered 202 Accepted. It never waits for a
//! shard, never touches a socket, and never logs a password.

pub mod api;
pub mod assets;
pub mod board;
pub mod exposition;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;

use crate::auth::Security;
use crate::http::{self, Request, Response, Status};
use crate::log::Level;

pub use board::Board;

/// Largest request head the console reads (a browser's headers with credentials).
pub const HEADERS_SIZE: usize = 8 * 1024;

/// What the console asks the shards to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Disconnect this client wherever it is connected.
    Disconnect(String),
    /// Delete the retained message of this topic.
    DeleteRetained(String),
}

/// Sends an [`Action`] to the shards (set by the runtime once they run).
pub type Dispatch = Box<dyn Fn(Action) -> bool + Send + Sync>;

/// The console's shared state: one per broker, used by every `http_listener`.
pub struct Console {
    pub board: Arc<Board>,
    info: exposition::Info,
    security: RwLock<Arc<Security>>,
    writers: Vec<String>,
    dispatch: OnceLock<Dispatch>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("writers", &self.writers)
            .finish()
    }
}

impl Console {
    pub fn new(
        board: Arc<Board>,
        info: exposition::Info,
        security: Arc<Security>,
        writers: Vec<String>,
    ) -> Self {
        Self {
            board,
            info,
            security: RwLock::new(security),
            writers,
            dispatch: OnceLock::new(),
        }
    }

    /// Installs how actions reach the shards (once).
    pub fn set_dispatch(&self, dispatch: Dispatch) {
        let _ = self.dispatch.set(dispatch);
    }

    /// The password file reloaded (SIGHUP).
    pub fn set_security(&self, security: Arc<Security>) {
        *self
            .security
            .write()
            .unwrap_or_else(PoisonError::into_inner) = security;
    }

    pub fn info(&self) -> &exposition::Info {
        &self.info
    }

    fn act(&self, action: Action) -> bool {
        self.dispatch.get().is_some_and(|d| d(action))
    }

    /// The user a request's basic credentials name, if the listener's password file
    /// accepts them.
    fn authenticate(&self, request: &Request, listener: usize) -> Option<String> {
        let value = std::str::from_utf8(request.header("Authorization")?).ok()?;
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        let security = Arc::clone(&self.security.read().unwrap_or_else(PoisonError::into_inner));
        let passwords = security.domain(listener).passwords.as_ref()?;
        passwords
            .check(user, Some(password.as_bytes()))
            .then(|| user.to_string())
    }

    fn may_write(&self, user: &str) -> bool {
        self.writers.iter().any(|w| w == user)
    }
}

/// One `http_listener`'s handler: the console and the listener's index (whose password
/// file applies).
#[derive(Debug)]
pub struct ConsoleListener {
    pub console: Arc<Console>,
    pub listener: usize,
}

impl http::Handler for ConsoleListener {
    fn handle(&self, request: &Request, peer: SocketAddr, now: Instant) -> Response {
        let response = self.route(request, now);
        let status = response.status;
        if status.code() >= 400 {
            crate::log_limited!(
                Level::Notice,
                now,
                "HTTP console: {} {} {} from {}: {}.",
                request.method,
                request.path().chars().take(128).collect::<String>(),
                if request.header("Authorization").is_some() {
                    "(credentials)"
                } else {
                    "(no credentials)"
                },
                peer,
                status
            );
        }
        response
            .header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
            .head_only(request.method == "HEAD")
    }
}

impl ConsoleListener {
    fn route(&self, request: &Request, now: Instant) -> Response {
        let path = request.path();
        if !path.starts_with('/') {
            return Response::error(Status::BadRequest, "the request target must be a path");
        }
        if request.has_token("Upgrade", "websocket") {
            return Response::error(
                Status::BadRequest,
                "this is the HTTP console listener: it speaks no WebSockets (MQTT)",
            );
        }
        let Some(user) = self.console.authenticate(request, self.listener) else {
            return Response::error(
                Status::Unauthorized,
                "log in with a user of the broker's password file",
            )
            .header(
                "WWW-Authenticate",
                "Basic realm=\"shardmq\", charset=\"UTF-8\"",
            );
        };
        let read = matches!(request.method.as_str(), "GET" | "HEAD");
        if path == "/metrics" {
            if !read {
                return Response::error(Status::MethodNotAllowed, "GET /metrics")
                    .header("Allow", "GET, HEAD");
            }
            let views = self.console.board.read(|_, v| v.clone_figures());
            let open = exposition::wants_openmetrics(request.header("Accept"));
            let text = exposition::render(&views, &self.console.info, now, open);
            let ctype = if open {
                exposition::OPENMETRICS_TEXT
            } else {
                exposition::PROMETHEUS_TEXT
            };
            return Response::new(Status::Ok).body(ctype, Bytes::from(text));
        }
        if let Some(rest) = path.strip_prefix("/api/v1/") {
            let writer = self.console.may_write(&user);
            return api::route(&self.console, request, rest, &user, writer, now);
        }
        if !read {
            return Response::error(
                Status::MethodNotAllowed,
                "the console's pages are read with GET",
            )
            .header("Allow", "GET, HEAD");
        }
        match assets::find(path) {
            Some((ctype, body)) => {
                Response::new(Status::Ok).body(ctype, Bytes::from_static(body.as_bytes()))
            }
            None => Response::error(Status::NotFound, "no such page"),
        }
    }
}
