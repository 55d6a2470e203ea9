//! [`ByteStr`]: the MQTT UTF-8 string, a zero-copy slice of the read buffer that is known
//! to be valid UTF-8. Its own module so that `packet` and `properties` (which both hold
//! strings) do not import each other.
//!
//! It owns the one invariant everything else relies on: the bytes of a `ByteStr` are
//! valid UTF-8, so [`ByteStr::as_str`] need not check them again on the publish hot path.
//! It must never hand out a `ByteStr` built from unchecked bytes: the only constructor
//! that skips validation, [`ByteStr::from_validated`], is `unsafe` and crate-private.

use bytes::Bytes;

/// The bytes of a short string inline, with their length: the owner of a [`Bytes`] made
/// by [`ByteStr::compact_shared`], which holds it next to its reference count.
struct Inline<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// `bytes` (at most `N`, and `N` < 256, long).
    fn new(bytes: &[u8]) -> Self {
        let mut buf = [0; N];
        let len = bytes.len().min(N);
        buf[..len].copy_from_slice(&bytes[..len]);
        Self {
            len: u8::try_from(len).unwrap_or(u8::MAX),
            buf,
        }
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A UTF-8 string as MQTT encodes it, validated on decode (well-formed UTF-8, no U+0000
/// [MQTT-1.5.3-1] [MQTT-1.5.3-2]), held as a zero-copy slice of the read buffer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteStr(Bytes);

impl ByteStr {
    /// Wraps a static string (no copy).
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes the codec has just validated with [`super::wire::is_mqtt_utf8`]
    /// (avoids validating twice on the decode path). Use [`ByteStr::try_from_bytes`] for
    /// anything that was not checked.
    ///
    /// # Safety
    ///
    /// `b` must be valid UTF-8. [`ByteStr::as_str`] (and `Deref`, `Display`, every topic
    /// match) reads the bytes with `str::from_utf8_unchecked`, so anything else is
    /// undefined behaviour. The MQTT rules beyond UTF-8 (no U+0000) are the caller's too,
    /// but breaking them is a protocol error, not unsoundness.
    pub(crate) const unsafe fn from_validated(b: Bytes) -> Self {
        Self(b)
    }

    /// Validates `b` as an MQTT UTF-8 string.
    pub fn try_from_bytes(b: Bytes) -> Result<Self, Bytes> {
        match std::str::from_utf8(&b) {
            Ok(s) if !s.contains('\0') => Ok(Self(b)),
            _ => Err(b),
        }
    }

    pub fn as_str(&self) -> &str {
        debug_assert!(std::str::from_utf8(&self.0).is_ok());
        // SAFETY: every constructor guarantees valid UTF-8: `from_static`, `From<&str>` and
        // `From<String>` take a `str`, `try_from_bytes` validates, and `from_validated` is
        // `unsafe` with valid UTF-8 as its contract. This is on the publish hot path (topic
        // matching), so it must not re-validate.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// A copy in its own exact-size allocation. Decoded strings are slices of a read
    /// buffer; anything kept for long (client ids, subscription filters, wills, retained
    /// messages) is compacted so that it does not pin that whole buffer in memory.
    #[must_use]
    pub fn compact(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }

    /// A compact copy (see [`ByteStr::compact`]) that stays one allocation when cloned:
    /// for a string kept as long as a session and cloned by the broker (a client id).
    /// `compact`'s copy gets a second allocation, the shared header, on its first clone
    /// (64 bytes of heap for a short id, 48 here: issue 14, memory per connection).
    #[must_use]
    pub fn compact_shared(&self) -> Self {
        let bytes = &self.0[..];
        match bytes.len() {
            0 => Self::default(),
            1..=23 => Self(Bytes::from_owner(Inline::<23>::new(bytes))),
            24..=55 => Self(Bytes::from_owner(Inline::<55>::new(bytes))),
            _ => self.compact(),
        }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for ByteStr {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl std::fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for ByteStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::ops::Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::ByteStr;

    #[test]
    fn compact_shared_keeps_the_string_at_every_length() {
        for n in [0, 1, 13, 23, 24, 55, 56, 300] {
            let s: String = "é-".chars().cycle().take(n).collect();
            let original = ByteStr::from(s.as_str());
            let copy = original.compact_shared();
            let clone = copy.clone();
            assert_eq!(copy, original, "length {n}");
            assert_eq!(clone.as_str(), s);
            assert_eq!(copy.len(), original.len());
            drop(copy);
            assert_eq!(clone.as_str(), s, "a clone outlives the copy");
        }
    }
}
