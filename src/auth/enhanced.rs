//! MQTT 5 enhanced authentication (4.12): the methods a client can name in CONNECT's
//! Authentication Method, each behind the [`Authenticator`] trait, and the registry that
//! finds one by name. An exchange is a chain of [`AuthStep`]s: data in (CONNECT or AUTH),
//! data out (AUTH 0x18), until success (the user name, and data for CONNACK or AUTH 0x00)
//! or failure (a reason code).
//!
//! Sans-IO: it never sees packets or sockets (the broker's `auth.rs` carries the data) and
//! never logs a secret. One method is built in: SCRAM-SHA-256 ([`super::scram`]) against
//! the listener's password file. Adding a method is one more [`Authenticator`] in
//! [`authenticator`].

use std::sync::OnceLock;

use crate::codec::ReasonCode;

use super::scram::{self, ScramServer};
use super::Domain;

/// One authentication method.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Its Authentication Method name (case-sensitive, as the client sends it).
    fn method(&self) -> &'static str;

    /// The first step, with the Authentication Data of the CONNECT (or of the AUTH 0x19
    /// that starts a re-authentication), for a client of `domain`.
    fn start(&self, domain: &Domain, data: &[u8]) -> AuthStep;
}

/// An exchange waiting for the client's next AUTH.
pub trait AuthExchange: Send + std::fmt::Debug {
    /// The next step, with the Authentication Data of the client's AUTH 0x18.
    fn step(self: Box<Self>, data: &[u8]) -> AuthStep;
}

/// Where an exchange is after one message from the client.
#[derive(Debug)]
pub enum AuthStep {
    /// Send AUTH 0x18 (Continue authentication) with `data`; the client answers.
    Continue {
        data: Vec<u8>,
        next: Box<dyn AuthExchange>,
    },
    /// Authenticated as `username`; `data` goes in the CONNACK (or AUTH 0x00).
    Success {
        username: String,
        data: Option<Vec<u8>>,
    },
    /// Refused: CONNACK (or DISCONNECT) with this code.
    Failure(ReasonCode),
}

/// The method named `method`, if this broker has it.
pub fn authenticator(method: &str) -> Option<&'static dyn Authenticator> {
    static SCRAM: ScramSha256 = ScramSha256;
    (method == scram::METHOD).then_some(&SCRAM as &dyn Authenticator)
}

/// SCRAM-SHA-256 against the users of the listener's password file that have
/// `$scram-sha-256$` entries.
#[derive(Debug)]
struct ScramSha256;

/// Random bytes; `None` if the system has none to give (the exchange then fails).
fn random<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).ok()?;
    Some(b)
}

/// A salt for a user that does not exist: the same for the same name within this process,
/// so that asking twice does not tell real users from made-up ones.
fn fake_salt(username: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(|| random().unwrap_or([0x5a; 32]));
    let mut h = Sha256::new();
    h.update(secret);
    h.update(username.as_bytes());
    h.finalize()[..16].to_vec()
}

impl Authenticator for ScramSha256 {
    fn method(&self) -> &'static str {
        scram::METHOD
    }

    fn start(&self, domain: &Domain, data: &[u8]) -> AuthStep {
        let Some(passwords) = &domain.passwords else {
            // No password file on this listener: nothing to check SCRAM against.
            return AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let Some(nonce) = random::<18>() else {
            return AuthStep::Failure(ReasonCode::UNSPECIFIED_ERROR);
        };
        let started = ScramServer::start(
            data,
            |user| passwords.scram(user),
            |user| (fake_salt(user), scram::DEFAULT_ITERATIONS),
            &scram::nonce_from(&nonce),
        );
        match started {
            Ok((server, first)) => AuthStep::Continue {
                data: first,
                next: Box::new(ScramExchange(server)),
            },
            Err(_) => AuthStep::Failure(ReasonCode::MALFORMED_PACKET),
        }
    }
}

#[derive(Debug)]
struct ScramExchange(ScramServer);

impl AuthExchange for ScramExchange {
    fn step(self: Box<Self>, data: &[u8]) -> AuthStep {
        let username = self.0.username().to_owned();
        match self.0.finish(data) {
            Ok(last) => AuthStep::Success {
                username,
                data: Some(last),
            },
            Err(scram::ScramError::Malformed) => AuthStep::Failure(ReasonCode::MALFORMED_PACKET),
            Err(scram::ScramError::Failed) => {
                AuthStep::Failure(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{HashKind, PasswordFile, PasswordHash};

    #[test]
    fn mqtt_4_12_0_1_unknown_method_is_not_found() {
        assert!(authenticator("SCRAM-SHA-1").is_none());
        assert!(authenticator("scram-sha-256").is_none());
        assert_eq!(
            authenticator("SCRAM-SHA-256").map(|a| a.method()),
            Some("SCRAM-SHA-256")
        );
    }

    #[test]
    fn scram_without_password_file_is_a_bad_method() {
        let a = authenticator(scram::METHOD).unwrap();
        assert!(matches!(
            a.start(&Domain::default(), b"n,,n=u,r=x"),
            AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD)
        ));
        let hash = PasswordHash::new(HashKind::ScramSha256, b"pw").unwrap();
        let domain = Domain {
            passwords: Some(
                PasswordFile::parse(&format!("u:{}\n", hash.encode()), "pw".as_ref()).unwrap(),
            ),
            ..Domain::default()
        };
        assert!(matches!(
            a.start(&domain, b"n,,n=u,r=x"),
            AuthStep::Continue { .. }
        ));
        assert!(matches!(
            a.start(&domain, b"garbage"),
            AuthStep::Failure(ReasonCode::MALFORMED_PACKET)
        ));
    }
}
