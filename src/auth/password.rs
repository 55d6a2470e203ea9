//! Mosquitto password files: `username:HASH` lines where HASH is `$6$SALT$HASH` (salted
//! SHA-512 of password || salt, Mosquitto 1.x) or `$7$ITERATIONS$SALT$HASH` (PBKDF2-HMAC-
//! SHA512, Mosquitto 2's default, 101 iterations), salts and hashes in standard base64;
//! and shardmq's own `$scram-sha-256$ITERATIONS$SALT$STOREDKEY$SERVERKEY` (RFC 5802's
//! salted keys, for MQTT 5 SCRAM-SHA-256 enhanced authentication, see `scram.rs`; such a
//! user can also log in with a plain CONNECT password).
//!
//! This module parses, verifies (in constant time), hashes and writes such files. It never
//! logs a password or a hash, and never panics on a malformed line: a bad line is a
//! [`PasswordError`] naming the file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::scram::{self, ScramCredentials};

/// Mosquitto's salt length in bytes.
pub const SALT_LEN: usize = 12;
/// Mosquitto 2's default PBKDF2 iteration count.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// A bound on iterations read from a file, so that a hostile file cannot make every
/// CONNECT burn seconds of CPU.
const MAX_ITERATIONS: u32 = 1_000_000;

/// Why a password file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The file cannot be read.
    #[error("cannot read password file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a hash shardmq can check.
    #[error("password file {}, line {line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with the line.
        reason: &'static str,
    },
    /// The operating system's random source failed (hashing a new password).
    #[error("cannot get random bytes for a salt: {0}")]
    Random(String),
}

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$`: SHA-512(password || salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$scram-sha-256$`: SCRAM-SHA-256 stored key and server key.
    Scram(ScramCredentials),
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print hashes.
        match self {
            Self::Sha512 { .. } => f.write_str("PasswordHash::Sha512(..)"),
            Self::Pbkdf2 { iterations, .. } => write!(f, "PasswordHash::Pbkdf2({iterations}, ..)"),
            Self::Scram(c) => write!(f, "PasswordHash::Scram({}, ..)", c.iterations),
        }
    }
}

/// Which hash `shardmq passwd` writes (`-H sha512 | sha512-pbkdf2 | scram-sha-256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Sha512,
    Pbkdf2,
    ScramSha256,
}

impl PasswordHash {
    /// Parses the part after `username:`.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let mut parts = s.split('$');
        if parts.next() != Some("") {
            return Err("the password is not hashed (run `shardmq passwd -U FILE`)");
        }
        let decode = |p: Option<&str>| -> Result<Vec<u8>, &'static str> {
            let p = p.ok_or("truncated password hash")?;
            STANDARD
                .decode(p)
                .map_err(|_| "invalid base64 in password hash")
        };
        match parts.next() {
            Some("6") => {
                let salt = decode(parts.next())?;
                let hash = decode(parts.next())?;
                if parts.next().is_some() || hash.len() != 64 {
                    return Err("invalid $6$ password hash");
                }
                Ok(Self::Sha512 { salt, hash })
            }
            Some("7") => {
                let iterations: u32 = parts
                    .next()
                    .and_then(|i| i.parse().ok())
                    .filter(|&i| (1..=MAX_ITERATIONS).contains(&i))
                    .ok_or("invalid iteration count in $7$ password hash")?;
                let salt = decode(parts.next())?;
                let hash = decode(parts.next())?;
                if parts.next().is_some() || hash.len() != 64 {
                    return Err("invalid $7$ password hash");
                }
                Ok(Self::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                })
            }
            Some("scram-sha-256") => {
                let iterations: u32 = parts
                    .next()
                    .and_then(|i| i.parse().ok())
                    .filter(|&i| (1..=MAX_ITERATIONS).contains(&i))
                    .ok_or("invalid iteration count in $scram-sha-256$ password hash")?;
                let salt = decode(parts.next())?;
                let key = |p: Option<&str>| -> Result<[u8; 32], &'static str> {
                    decode(p)?
                        .try_into()
                        .map_err(|_| "invalid $scram-sha-256$ password hash")
                };
                let stored_key = key(parts.next())?;
                let server_key = key(parts.next())?;
                if parts.next().is_some() {
                    return Err("invalid $scram-sha-256$ password hash");
                }
                Ok(Self::Scram(ScramCredentials {
                    iterations,
                    salt,
                    stored_key,
                    server_key,
                }))
            }
            _ => Err("unknown password hash type (expected $6$, $7$ or $scram-sha-256$)"),
        }
    }

    /// Hashes `password` with a fresh random salt.
    pub fn new(kind: HashKind, password: &[u8]) -> Result<Self, PasswordError> {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).map_err(|e| PasswordError::Random(e.to_string()))?;
        Ok(match kind {
            HashKind::Sha512 => Self::Sha512 {
                hash: sha512_salted(password, &salt),
                salt,
            },
            HashKind::Pbkdf2 => Self::Pbkdf2 {
                iterations: DEFAULT_ITERATIONS,
                hash: pbkdf2_sha512(password, &salt, DEFAULT_ITERATIONS),
                salt,
            },
            HashKind::ScramSha256 => Self::Scram(ScramCredentials::derive(
                password,
                &salt,
                scram::DEFAULT_ITERATIONS,
            )),
        })
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let (computed, stored) = match self {
            Self::Sha512 { salt, hash } => (sha512_salted(password, salt), hash),
            Self::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => (pbkdf2_sha512(password, salt, *iterations), hash),
            Self::Scram(c) => return c.verify_password(password),
        };
        computed.ct_eq(stored).into()
    }

    /// The file form: `$6$salt$hash` or `$7$iter$salt$hash`.
    pub fn encode(&self) -> String {
        match self {
            Self::Sha512 { salt, hash } => {
                format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            Self::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => format!(
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            Self::Scram(c) => format!(
                "$scram-sha-256${}${}${}${}",
                c.iterations,
                STANDARD.encode(&c.salt),
                STANDARD.encode(c.stored_key),
                STANDARD.encode(c.server_key)
            ),
        }
    }
}

fn sha512_salted(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut h = Sha512::new();
    h.update(password);
    h.update(salt);
    h.finalize().to_vec()
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

/// One line of a password file as `shardmq passwd` edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub username: String,
    /// Everything after the first `:` (a hash, or a plain password before `-U`).
    pub secret: String,
}

/// Splits a file into entries; blank lines and `#` comments are skipped.
pub fn parse_entries(text: &str) -> Vec<(usize, Entry)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (username, secret) = line.split_once(':').unwrap_or((line, ""));
        out.push((
            i + 1,
            Entry {
                username: username.to_owned(),
                secret: secret.to_owned(),
            },
        ));
    }
    out
}

/// Writes entries back in file form.
pub fn format_entries(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str(&e.username);
        s.push(':');
        s.push_str(&e.secret);
        s.push('\n');
    }
    s
}

/// A loaded password file: username -> hash.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    pub fn load(path: &Path) -> Result<Self, PasswordError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses file text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PasswordError> {
        let mut users = HashMap::new();
        for (line, e) in parse_entries(text) {
            let err = |reason| PasswordError::Line {
                path: path.to_owned(),
                line,
                reason,
            };
            if e.username.is_empty() {
                return Err(err("empty username"));
            }
            let hash = PasswordHash::parse(&e.secret).map_err(err)?;
            users.insert(e.username, hash);
        }
        Ok(Self { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// The SCRAM-SHA-256 credentials of `username`, if its entry has them.
    pub fn scram(&self, username: &str) -> Option<ScramCredentials> {
        match self.users.get(username)? {
            PasswordHash::Scram(c) => Some(c.clone()),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `username` exists and `password` is right. A missing password or user
    /// still costs one hash computation, so timing does not reveal which users exist.
    pub fn check(&self, username: &str, password: Option<&[u8]>) -> bool {
        let Some(hash) = self.users.get(username) else {
            let _ = pbkdf2_sha512(password.unwrap_or_default(), &[0; SALT_LEN], 101);
            return false;
        };
        match password {
            Some(p) => hash.verify(p),
            None => {
                let _ = hash.verify(b"");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with mosquitto_passwd 2.x: alice/secret ($7$), bob/hunter2 ($6$).
    const FILE: &str = "alice:$7$101$56S0SQnIE4ncZRY3$jCsbSezZYfVOuXPS0iV5Rj3K8h2TiOFarSuSU7gm05YLNXabpUA+KV/M5rTXILm9PlBQfLFPqPpQIqdz2dMGOQ==\n\
bob:$6$cf5t8rSWxrBYnN9r$GuwtqPMOJ4rUWpGSUckoukz3iVGhIhJa6zOWxdxgHQg4Gmz2OW/DP3G8XTyS4z/mWzGp6tdqmybxw3wxcaFETg==\n";

    #[test]
    fn verifies_mosquitto_passwd_hashes() {
        let f = PasswordFile::parse(FILE, Path::new("pw")).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.check("alice", Some(b"secret")));
        assert!(!f.check("alice", Some(b"Secret")));
        assert!(!f.check("alice", None));
        assert!(f.check("bob", Some(b"hunter2")));
        assert!(!f.check("bob", Some(b"hunter")));
        assert!(!f.check("carol", Some(b"secret")));
    }

    #[test]
    fn new_hashes_round_trip() {
        for kind in [HashKind::Sha512, HashKind::Pbkdf2] {
            let h = PasswordHash::new(kind, b"pw").unwrap();
            let parsed = PasswordHash::parse(&h.encode()).unwrap();
            assert_eq!(parsed, h);
            assert!(parsed.verify(b"pw"));
            assert!(!parsed.verify(b"pw2"));
        }
    }

    #[test]
    fn bad_lines_name_the_line() {
        for bad in [
            "a:plain",
            "a:$5$x$y",
            "a:$6$!!!$abc",
            "a:$7$0$c2FsdA==$aGFzaA==",
            "a:$7$101$c2FsdA==",
            ":$6$c2FsdA==$aGFzaA==",
        ] {
            let text = format!("# comment\n\n{bad}\n");
            let e = PasswordFile::parse(&text, Path::new("/etc/pw"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("/etc/pw") && e.contains("line 3"), "{bad}: {e}");
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = parse_entries("a:1\n#c\nb\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].1.secret, "");
        let entries: Vec<Entry> = e.into_iter().map(|(_, e)| e).collect();
        assert_eq!(format_entries(&entries), "a:1\nb:\n");
    }
}
