//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), the server side, as an MQTT 5
//! enhanced authentication method: the client-first message comes in CONNECT's (or a
//! re-authentication AUTH's) Authentication Data, the server-first message goes back in
//! AUTH 0x18, the client-final message comes in AUTH 0x18, and the server-final message
//! (the server's signature, which proves to the client that the server knows the
//! credentials) goes in CONNACK or AUTH 0x00.
//!
//! Sans-IO and pure: messages in, messages out; nonces are passed in. Credentials are the
//! salted keys a password file holds (`$scram-sha-256$...`, written by `shardmq passwd -H
//! scram-sha-256`), never a password. It never logs secrets; an unknown user goes through
//! the same exchange with made-up credentials and fails at the end, so the exchange does
//! not tell which users exist. Channel binding is not offered (gs2 `n` or `y` only).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The MQTT Authentication Method name.
pub const METHOD: &str = "SCRAM-SHA-256";

/// RFC 7677's minimum iteration count.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// What a password file keeps for a SCRAM user (RFC 5802 section 3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramCredentials({}, ..)", self.iterations) // never print keys
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(data);
    m.finalize().into_bytes().into()
}

impl ScramCredentials {
    /// Derives the credentials of `password` (SaltedPassword, then the client's stored
    /// key and the server key).
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Whether `password` derives these credentials (a plain CONNECT password checked
    /// against a SCRAM entry), in constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = Self::derive(password, &self.salt, self.iterations);
        other.stored_key.ct_eq(&self.stored_key).into()
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802's grammar (or asks for channel
    /// binding, or an authorisation identity).
    #[error("malformed SCRAM message")]
    Malformed,
    /// Wrong proof, unknown user or a nonce that is not ours.
    #[error("SCRAM authentication failed")]
    Failed,
}

/// The server between its first message and the client's final one.
#[derive(Debug)]
pub struct ScramServer {
    username: String,
    /// `None`: unknown user, the exchange runs on made-up credentials and fails.
    credentials: Option<ScramCredentials>,
    /// client-first-message-bare "," server-first-message
    auth_message: String,
    nonce: String,
    gs2_header: String,
}

/// RFC 5802 saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).ok_or(ScramError::Malformed)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return Err(ScramError::Malformed),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A nonce in printable ASCII without `,` (RFC 5802), from random bytes.
pub fn nonce_from(random: &[u8]) -> String {
    STANDARD.encode(random)
}

impl ScramServer {
    /// Takes the client-first message; `lookup` finds the user's credentials, `fake`
    /// stands in for an unknown user (derived from the name, so a second try looks the
    /// same), `server_nonce` is fresh randomness. Returns the server-first message.
    pub fn start(
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredentials>,
        fake: impl FnOnce(&str) -> (Vec<u8>, u32),
        server_nonce: &str,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed)?;
        // gs2-header: "n,," or "y,," (no channel binding, no authzid).
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))
            .ok_or(ScramError::Malformed)?;
        let gs2_header = text[..3].to_owned();
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or(ScramError::Malformed)?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed)?;
        if fields.any(|f| f.starts_with("m=")) {
            return Err(ScramError::Malformed); // mandatory extension we do not know
        }
        let username = decode_saslname(user)?;
        if username.is_empty() {
            return Err(ScramError::Malformed);
        }
        let credentials = lookup(&username);
        let (salt, iterations) = match &credentials {
            Some(c) => (c.salt.clone(), c.iterations),
            None => fake(&username),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", STANDARD.encode(&salt));
        let auth_message = format!("{bare},{server_first}");
        Ok((
            Self {
                username,
                credentials,
                auth_message,
                nonce,
                gs2_header,
            },
            server_first.into_bytes(),
        ))
    }

    /// The user the client claims to be.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Takes the client-final message: checks the channel binding, the nonce and the
    /// proof. Returns the server-final message (`v=` the server signature).
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Malformed)?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed)?;
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed)?;
        let binding_ok = STANDARD
            .decode(binding)
            .is_ok_and(|b| b == self.gs2_header.as_bytes());
        let auth_message = format!("{},{without_proof}", self.auth_message);
        let Some(c) = self.credentials else {
            return Err(ScramError::Failed);
        };
        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) must be
        // the StoredKey.
        let signature = hmac(&c.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
            *k = p ^ s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let proof_ok: bool = stored.ct_eq(&c.stored_key).into();
        if !(proof_ok && binding_ok && nonce == self.nonce) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&c.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example: user "user", password "pencil".
    #[test]
    fn rfc_7677_example_exchange() {
        let creds = ScramCredentials::derive(
            b"pencil",
            &STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let (server, first) = ScramServer::start(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| creds.clone()),
            |_| unreachable!(),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(creds.verify_password(b"pencil"));
        assert!(!creds.verify_password(b"pencil2"));
    }

    #[test]
    fn wrong_proof_unknown_user_and_bad_messages_fail() {
        let creds = ScramCredentials::derive(b"pencil", b"salt", 4096);
        let start = |first: &[u8]| {
            ScramServer::start(
                first,
                |u| (u == "user").then(|| creds.clone()),
                |_| (b"fake".to_vec(), 4096),
                "SN",
            )
        };
        let (s, _) = start(b"n,,n=user,r=CN").unwrap();
        assert_eq!(
            s.finish(b"c=biws,r=CNSN,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .unwrap_err(),
            ScramError::Failed
        );
        let (s, first) = start(b"n,,n=nobody,r=CN").unwrap();
        assert!(String::from_utf8(first).unwrap().contains("s=ZmFrZQ=="));
        assert_eq!(
            s.finish(b"c=biws,r=CNSN,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .unwrap_err(),
            ScramError::Failed
        );
        for bad in [
            &b"p=tls-unique,,n=user,r=CN"[..],
            b"n,a=admin,n=user,r=CN",
            b"n,,n=user",
            b"n,,n=us=41er,r=CN",
            b"n,,n=user,r=CN,m=ext",
            b"\xff",
        ] {
            assert_eq!(start(bad).unwrap_err(), ScramError::Malformed, "{bad:?}");
        }
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
    }
}
