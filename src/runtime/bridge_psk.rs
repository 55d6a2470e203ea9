//! TLS-PSK to a bridge's remote (`bridge_identity`, `bridge_psk`; cargo feature `psk`):
//! the OpenSSL client context, and the byte moves between a client-side
//! [`PskConn`] (the same non-blocking, in-memory session as the PSK listeners') and the
//! bridge's socket and link. It never blocks and never logs the key.

use std::io::{self, IoSlice};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use openssl::ssl::SslContext;

use super::conn::Outgoing;
use super::tls_psk::{client_context, PskConn};
use crate::auth::psk::decode_hex;
use crate::config::BridgeConfig;

/// The OpenSSL context of bridge `b`'s connections (checked by the config: both options
/// are set and the key is hexadecimal).
pub fn context(b: &BridgeConfig) -> Result<SslContext, String> {
    let key = b
        .psk
        .as_deref()
        .and_then(decode_hex)
        .ok_or_else(|| "bridge_psk is not a hexadecimal key".to_string())?;
    let identity = b.psk_identity.as_deref().unwrap_or_default();
    client_context(identity, key, b.tls.tls_version.as_deref())
}

/// Reads and decrypts what the socket has into `out`; `Ok(true)`: the remote closed.
pub fn read(p: &mut PskConn, stream: &mut TcpStream, out: &mut BytesMut) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match p.read(stream, &mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Encrypts `out` (what OpenSSL took is removed) and writes the records; `Ok(true)` when
/// everything was written.
pub fn write(p: &mut PskConn, stream: &mut TcpStream, out: &mut BytesMut) -> io::Result<bool> {
    p.flush(stream, &mut Plain(out))
}

/// The link's output as the PSK session's plaintext source.
struct Plain<'a>(&'a mut BytesMut);

impl Outgoing for Plain<'_> {
    fn io_slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        match iov.first_mut() {
            Some(slot) if !self.0.is_empty() => {
                *slot = IoSlice::new(self.0);
                1
            }
            _ => 0,
        }
    }

    fn consume(&mut self, n: usize) {
        self.0.advance(n.min(self.0.len()));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn chunks(&self) -> usize {
        usize::from(!self.0.is_empty())
    }
}
