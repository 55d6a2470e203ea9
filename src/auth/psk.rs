//! Mosquitto `psk_file`s: one `identity:hexkey` line per TLS-PSK client.
//!
//! Sans-IO apart from [`PskFile::load`]: [`PskFile::parse`] turns text into identity -> key
//! and is what the fuzz target drives. As in Mosquitto, a line whose first character is
//! `#` is a comment, blank lines are skipped, blanks around the identity and the key are
//! trimmed, and the key is hexadecimal without `0x` (an odd number of digits reads as if
//! it had a leading `0`, as OpenSSL's `BN_hex2bn` does). Where Mosquitto skips a line it
//! cannot use or keeps the first of two entries for one identity, this parser stops with
//! the file and line: a key that silently does not apply is an outage waiting to happen.
//! It never logs or prints a key (the `Debug` output lists identities only).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The largest pre-shared key OpenSSL accepts (`PSK_MAX_PSK_LEN`), in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Why a psk_file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PskError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The keys of one psk_file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PskFile {
    /// identity -> (key, line it was defined on).
    keys: HashMap<Vec<u8>, (Vec<u8>, usize)>,
}

impl std::fmt::Debug for PskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<String> = self
            .keys
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        ids.sort();
        f.debug_struct("PskFile").field("identities", &ids).finish()
    }
}

impl PskFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, PskError> {
        let bytes = std::fs::read(path).map_err(|source| PskError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Self::parse(&text, path),
            Err(e) => {
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                Err(PskError::Invalid {
                    path: path.to_path_buf(),
                    line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                    reason: "not valid UTF-8".into(),
                })
            }
        }
    }

    /// Parses psk_file text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PskError> {
        let mut keys: HashMap<Vec<u8>, (Vec<u8>, usize)> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let invalid = |reason: String| PskError::Invalid {
                path: path.to_path_buf(),
                line,
                reason,
            };
            if raw.starts_with('#') || raw.trim().is_empty() {
                continue;
            }
            let Some((identity, key)) = raw.split_once(':') else {
                return Err(invalid("expected identity:hexkey".into()));
            };
            let (identity, key) = (identity.trim(), key.trim());
            if identity.is_empty() {
                return Err(invalid("empty identity".into()));
            }
            if key.is_empty() {
                return Err(invalid(format!("empty psk for identity \"{identity}\"")));
            }
            let key = decode_hex(key).ok_or_else(|| {
                invalid(format!(
                    "psk for identity \"{identity}\" contains non-hexadecimal characters"
                ))
            })?;
            if key.len() > MAX_KEY_LEN {
                return Err(invalid(format!(
                    "psk for identity \"{identity}\" is longer than {MAX_KEY_LEN} bytes"
                )));
            }
            if let Some((_, first)) = keys.get(identity.as_bytes()) {
                return Err(invalid(format!(
                    "identity \"{identity}\" already has a psk (line {first})"
                )));
            }
            keys.insert(identity.as_bytes().to_vec(), (key, line));
        }
        Ok(Self { keys })
    }

    /// The key of `identity`, if the file has one.
    pub fn key(&self, identity: &[u8]) -> Option<&[u8]> {
        self.keys.get(identity).map(|(k, _)| k.as_slice())
    }

    /// How many identities the file holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Hex digits to bytes; an odd count reads as if it had a leading `0`.
pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = hex.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
    let (first, rest) = bytes.split_at(bytes.len() % 2);
    if let [d] = first {
        out.push(digit(*d)?);
    }
    for pair in rest.chunks_exact(2) {
        out.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<PskFile, String> {
        PskFile::parse(text, Path::new("/etc/psk")).map_err(|e| e.to_string())
    }

    #[test]
    fn mosquitto_format_with_comments_blanks_and_trimming() {
        let f = parse("# clients\n\nsensor1:DEADbeef\n  sensor2 : 0a0b \n\t\nodd:abc\n").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f.key(b"sensor1"), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        assert_eq!(f.key(b"sensor2"), Some(&[0x0a, 0x0b][..]));
        assert_eq!(f.key(b"odd"), Some(&[0x0a, 0xbc][..]));
        assert_eq!(f.key(b"nobody"), None);
        assert_eq!(f.key(b"# clients"), None);
    }

    #[test]
    fn leading_zero_bytes_are_kept() {
        let f = parse("z:0000ff\n").unwrap();
        assert_eq!(f.key(b"z"), Some(&[0, 0, 0xff][..]));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line, what) in [
            ("a:00\nno-colon\n", 2, "expected identity:hexkey"),
            ("a:\n", 1, "empty psk"),
            (":00\n", 1, "empty identity"),
            ("a:0x00\n", 1, "non-hexadecimal"),
            ("a:00:11\n", 1, "non-hexadecimal"),
            ("a:00\n\na:11\n", 3, "already has a psk (line 1)"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains(what) && e.contains(&format!("/etc/psk line {line}")),
                "{text:?}: {e}"
            );
        }
        let long = format!("big:{}\n", "ab".repeat(MAX_KEY_LEN + 1));
        assert!(parse(&long).unwrap_err().contains("longer than"));
    }

    #[test]
    fn debug_never_shows_keys() {
        let f = parse("id:c0ffee\n").unwrap();
        let shown = format!("{f:?}");
        assert!(shown.contains("id") && !shown.contains("c0ffee"), "{shown}");
    }

    #[test]
    fn identities_are_utf8() {
        let dir = std::env::temp_dir().join(format!("shardmq-psk-{}", std::process::id()));
        std::fs::write(&dir, b"a:00\nb\xff:11\n").unwrap();
        let e = PskFile::load(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(e.contains("UTF-8") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = PskFile::load(Path::new("/nonexistent/psk")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/psk"));
    }
}
