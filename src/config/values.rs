//! One line of a config file and the typed values read from it.
//!
//! [`Line`] is `option value...` split once at the first run of whitespace; each
//! `Line::*` method reads the value as one type (bool, ranged integer, duration, ...) and
//! turns a bad value into an [`Error`] naming file, line and option. Nothing here knows
//! what an option means or reads files.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Location};

/// One non-comment line: the option name and the rest of the line (trimmed).
#[derive(Debug, Clone)]
pub(crate) struct Line<'a> {
    pub at: Location,
    pub option: &'a str,
    pub rest: &'a str,
}

impl<'a> Line<'a> {
    /// Splits a raw line; `None` for blank lines and `#` comments. Mosquitto has no
    /// trailing comments (`topic # both` is a valid bridge line), so only a `#` that starts
    /// the line makes a comment.
    pub fn split(raw: &'a str, at: Location) -> Option<Self> {
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            return None;
        }
        let (option, rest) = match text.find(char::is_whitespace) {
            Some(i) => (&text[..i], text[i..].trim()),
            None => (text, ""),
        };
        Some(Self { at, option, rest })
    }

    pub fn invalid_value(&self, value: &str, reason: impl Into<String>) -> Error {
        Error::InvalidValue {
            at: self.at.clone(),
            option: self.option.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn invalid(&self, message: impl Into<String>) -> Error {
        Error::Invalid {
            at: self.at.clone(),
            option: self.option.to_string(),
            message: message.into(),
        }
    }

    /// The whole value; an error if there is none.
    pub fn value(&self) -> Result<&'a str, Error> {
        if self.rest.is_empty() {
            Err(Error::MissingValue {
                at: self.at.clone(),
                option: self.option.to_string(),
            })
        } else {
            Ok(self.rest)
        }
    }

    /// The value split at whitespace (at least one token).
    pub fn tokens(&self) -> Result<Vec<&'a str>, Error> {
        Ok(self.value()?.split_whitespace().collect())
    }

    pub fn string(&self) -> Result<String, Error> {
        self.value().map(str::to_string)
    }

    pub fn path(&self) -> Result<PathBuf, Error> {
        self.value().map(PathBuf::from)
    }

    /// `true` or `false`, as Mosquitto spells them.
    pub fn bool(&self) -> Result<bool, Error> {
        match self.value()? {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.invalid_value(other, "expected true or false")),
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&self, min: i64, max: i64) -> Result<i64, Error> {
        let v = self.value()?;
        parse_int(v, min, max).ok_or_else(|| {
            self.invalid_value(v, format!("expected an integer from {min} to {max}"))
        })
    }

    /// A number of seconds (non-negative, at most about 136 years).
    pub fn seconds(&self) -> Result<Duration, Error> {
        self.int(0, i64::from(u32::MAX))
            .map(|s| Duration::from_secs(s.unsigned_abs()))
    }

    /// Mosquitto's `persistent_client_expiration` format: a number followed by `h`
    /// (hours), `d` (days), `w` (weeks), `m` (months of 30 days) or `y` (years of 365
    /// days), e.g. `2d`.
    pub fn expiration(&self) -> Result<Duration, Error> {
        let v = self.value()?;
        parse_expiration(v).ok_or_else(|| {
            self.invalid_value(
                v,
                "expected a positive number followed by h, d, w, m or y, e.g. 2d",
            )
        })
    }
}

/// Parses a decimal integer (optional leading `-`) and checks `min..=max`.
pub(crate) fn parse_int(v: &str, min: i64, max: i64) -> Option<i64> {
    let n: i64 = v.parse().ok()?;
    (min..=max).contains(&n).then_some(n)
}

pub(crate) fn parse_expiration(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let num = &v[..v.len() - unit.len_utf8()];
    let unit_secs: u64 = match unit {
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'm' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    if n == 0 {
        return None;
    }
    n.checked_mul(unit_secs).map(Duration::from_secs)
}

/// Normalises a bridge address `host[:port]` (IPv6 as `[addr]:port` or bare) to
/// `host:port`, 1883 when no port is given. `None` if the port is not a valid port.
pub(crate) fn parse_bridge_address(v: &str) -> Option<String> {
    let (host, port) = if let Some(inner) = v.strip_prefix('[') {
        let close = inner.find(']')?;
        let host = &inner[..close];
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{host}]"), port)
    } else {
        match v.matches(':').count() {
            0 => (v.to_string(), None),
            1 => {
                let (h, p) = v.split_once(':')?;
                (h.to_string(), Some(p))
            }
            // A bare IPv6 address without a port.
            _ => (format!("[{v}]"), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    let port = match port {
        Some(p) => parse_int(p, 1, 65535)?,
        None => 1883,
    };
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_units() {
        assert_eq!(parse_expiration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_expiration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_expiration("1w"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_expiration("1m"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(
            parse_expiration("1y"),
            Some(Duration::from_secs(31_536_000))
        );
        for bad in [
            "",
            "h",
            "0d",
            "-1d",
            "1",
            "1s",
            "1.5d",
            "d1",
            "99999999999999999999y",
            "é",
            "1é",
        ] {
            assert_eq!(parse_expiration(bad), None, "{bad}");
        }
    }

    #[test]
    fn bridge_addresses() {
        assert_eq!(parse_bridge_address("host").as_deref(), Some("host:1883"));
        assert_eq!(parse_bridge_address("h:8883").as_deref(), Some("h:8883"));
        assert_eq!(
            parse_bridge_address("[::1]:99").as_deref(),
            Some("[::1]:99")
        );
        assert_eq!(parse_bridge_address("::1").as_deref(), Some("[::1]:1883"));
        for bad in [":1", "h:0", "h:x", "h:70000", "[::1", "[::1]x", "[]"] {
            assert_eq!(parse_bridge_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn split_lines() {
        let at = Location::new("f", 1);
        assert!(Line::split("   ", at.clone()).is_none());
        assert!(Line::split("  # c", at.clone()).is_none());
        let l = Line::split("  port   1883  \t", at.clone()).unwrap();
        assert_eq!((l.option, l.rest), ("port", "1883"));
        let l = Line::split("topic # both 0", at).unwrap();
        assert_eq!(l.rest, "# both 0");
    }
}
