//! `shardmq passwd`: creates and edits Mosquitto password files the way `mosquitto_passwd`
//! does (`-c` create, `-b` batch, `-D` delete, `-U` hash a plain-text file, `-H sha512 |
//! sha512-pbkdf2 | scram-sha-256`; the last is shardmq's own, for MQTT 5 SCRAM-SHA-256
//! enhanced authentication). Files are rewritten through a temporary file and a rename, mode 0600.
//!
//! It never echoes a password and never prints a hash. Without `-b` the password is read
//! twice from standard input, as mosquitto_passwd does: with echo off on a terminal, or
//! as two lines when standard input is a pipe or a file
//! (`printf 'secret\nsecret\n' | shardmq passwd -c FILE USER`).

use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::password::{format_entries, parse_entries, Entry, HashKind, PasswordHash};

/// What `shardmq passwd` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswdCommand {
    /// Add or update `user` (password from the command line with `-b`, else prompted).
    Set {
        file: PathBuf,
        user: String,
        password: Option<String>,
        create: bool,
        kind: HashKind,
    },
    Delete {
        file: PathBuf,
        user: String,
    },
    /// `-U`: hash every plain-text password in the file.
    Upgrade {
        file: PathBuf,
        kind: HashKind,
    },
}

/// Why the `passwd` tool (as mosquitto_passwd) failed; printed as Mosquitto's tool prints it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    /// The command line is wrong: the usage message.
    #[error("{0}")]
    Usage(String),
    /// The password file cannot be read or written.
    #[error("Error: cannot {action} password file {}: {source}", path.display())]
    Io {
        /// What the tool was doing ("read", "write", ...).
        action: &'static str,
        /// The password file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `-D`: the user is not in the file.
    #[error("Error: user {0} not found in the password file.")]
    UserNotFound(String),
    /// The password typed is empty.
    #[error("Error: Empty password.")]
    EmptyPassword,
    /// The password and its confirmation differ.
    #[error("Error: Passwords do not match.")]
    Mismatch,
    /// `--help` / `-h`: the usage, for standard output.
    #[error("{0}")]
    Help(String),
    /// The password could not be hashed.
    #[error("Error: {0}")]
    Hash(#[from] super::PasswordError),
}

pub const USAGE: &str = concat!(
    "Usage: shardmq passwd [-H sha512 | -H sha512-pbkdf2 | -H scram-sha-256] [-c | -D] passwordfile username\n",
    "       shardmq passwd [-H sha512 | -H sha512-pbkdf2 | -H scram-sha-256] [-c] -b passwordfile username password\n",
    "       shardmq passwd -U passwordfile",
);

/// `shardmq passwd --help`: mosquitto_passwd's help, for shardmq.
pub const HELP: &str = concat!(
    "shardmq passwd manages password files for shardmq and Mosquitto (the format of ",
    "mosquitto_passwd).\n\n",
    "Usage: shardmq passwd [-H sha512 | -H sha512-pbkdf2 | -H scram-sha-256] [-c | -D] passwordfile username\n",
    "       shardmq passwd [-H sha512 | -H sha512-pbkdf2 | -H scram-sha-256] [-c] -b passwordfile username password\n",
    "       shardmq passwd -U passwordfile\n",
    " -b : run in batch mode to allow passing passwords on the command line.\n",
    " -c : create a new password file. This will overwrite existing files.\n",
    " -D : delete the username rather than adding/updating its password.\n",
    " -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended;\n",
    "      scram-sha-256 (shardmq only) also allows MQTT 5 SCRAM-SHA-256 authentication.\n",
    " -U : update a plain text password file to use hashed passwords.\n\n",
    "Without -b the password is read from standard input, twice: typed at a terminal (not\n",
    "echoed), or as two lines from a pipe or a file.",
);

/// Parses mosquitto_passwd's arguments.
pub fn parse_args(args: &[String]) -> Result<PasswdCommand, PasswdError> {
    let usage = |msg: &str| PasswdError::Usage(format!("Error: {msg}\n{USAGE}"));
    let (mut create, mut batch, mut delete, mut upgrade) = (false, false, false, false);
    let mut kind = HashKind::Pbkdf2;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Err(PasswdError::Help(HELP.to_string())),
            "-c" => create = true,
            "-b" => batch = true,
            "-D" => delete = true,
            "-U" => upgrade = true,
            "-H" => {
                kind = match it.next().map(String::as_str) {
                    Some("sha512") => HashKind::Sha512,
                    Some("sha512-pbkdf2") => HashKind::Pbkdf2,
                    Some("scram-sha-256") => HashKind::ScramSha256,
                    _ => return Err(usage("-H takes sha512, sha512-pbkdf2 or scram-sha-256.")),
                }
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(usage(&format!("unknown option {s}.")))
            }
            _ => rest.push(a.clone()),
        }
    }
    if (create && delete) || (upgrade && (create || delete || batch)) || (batch && delete) {
        return Err(usage("conflicting options."));
    }
    let check_user = |u: &str| {
        if u.contains(':') {
            Err(usage("username must not contain the ':' character."))
        } else if u.is_empty() {
            Err(usage("empty username."))
        } else {
            Ok(())
        }
    };
    match (upgrade, delete, batch, rest.as_slice()) {
        (true, _, _, [file]) => Ok(PasswdCommand::Upgrade {
            file: file.into(),
            kind,
        }),
        (false, true, _, [file, user]) => {
            check_user(user)?;
            Ok(PasswdCommand::Delete {
                file: file.into(),
                user: user.clone(),
            })
        }
        (false, false, true, [file, user, password]) => {
            check_user(user)?;
            Ok(PasswdCommand::Set {
                file: file.into(),
                user: user.clone(),
                password: Some(password.clone()),
                create,
                kind,
            })
        }
        (false, false, false, [file, user]) => {
            check_user(user)?;
            Ok(PasswdCommand::Set {
                file: file.into(),
                user: user.clone(),
                password: None,
                create,
                kind,
            })
        }
        _ => Err(usage("wrong number of arguments.")),
    }
}

/// Runs `shardmq passwd ARGS`.
pub fn run(args: &[String]) -> Result<(), PasswdError> {
    match parse_args(args)? {
        PasswdCommand::Set {
            file,
            user,
            password,
            create,
            kind,
        } => {
            let mut entries = if create { Vec::new() } else { read(&file)? };
            let password = match password {
                Some(p) => p,
                None => prompt_password()?,
            };
            let secret = PasswordHash::new(kind, password.as_bytes())?.encode();
            match entries.iter_mut().find(|e| e.username == user) {
                Some(e) => e.secret = secret,
                None => entries.push(Entry {
                    username: user,
                    secret,
                }),
            }
            write(&file, &entries)
        }
        PasswdCommand::Delete { file, user } => {
            let mut entries = read(&file)?;
            let before = entries.len();
            entries.retain(|e| e.username != user);
            if entries.len() == before {
                return Err(PasswdError::UserNotFound(user));
            }
            write(&file, &entries)
        }
        PasswdCommand::Upgrade { file, kind } => {
            let mut entries = read(&file)?;
            for e in &mut entries {
                if PasswordHash::parse(&e.secret).is_err() {
                    e.secret = PasswordHash::new(kind, e.secret.as_bytes())?.encode();
                }
            }
            write(&file, &entries)
        }
    }
}

fn read(path: &Path) -> Result<Vec<Entry>, PasswdError> {
    let text = fs::read_to_string(path).map_err(|source| PasswdError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_entries(&text).into_iter().map(|(_, e)| e).collect())
}

fn write(path: &Path, entries: &[Entry]) -> Result<(), PasswdError> {
    let io = |source| PasswdError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(format_entries(entries).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Reads a password twice from standard input, as mosquitto_passwd does: prompts on
/// standard output, echo off when standard input is a terminal.
fn prompt_password() -> Result<String, PasswdError> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let first = read_quiet(&mut input, "Password: ")?;
    let second = read_quiet(&mut input, "Reenter password: ")?;
    if first != second {
        return Err(PasswdError::Mismatch);
    }
    Ok(first)
}

/// One line of standard input (without its line end), with echo off on a terminal.
fn read_quiet(input: &mut impl BufRead, prompt: &str) -> Result<String, PasswdError> {
    let mut out = std::io::stdout();
    let _ = out.write_all(prompt.as_bytes());
    let _ = out.flush();
    // SAFETY: termios is plain data; tcgetattr fills it when fd 0 is a terminal.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is open (or tcgetattr fails); `term` is a valid termios.
    let tty = unsafe { libc::tcgetattr(0, &mut term) } == 0;
    if tty {
        let mut quiet = term;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above; the original settings are restored below.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let res = input.read_line(&mut line);
    if tty {
        // SAFETY: restores the settings read by tcgetattr.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &term) };
    }
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    let password = line.trim_end_matches(['\r', '\n']);
    match res {
        Ok(n) if n > 0 && !password.is_empty() => Ok(password.to_owned()),
        _ => Err(PasswdError::EmptyPassword),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_mosquitto_passwd_forms() {
        assert_eq!(
            parse_args(&args(&["-c", "-b", "f", "u", "p"])).unwrap(),
            PasswdCommand::Set {
                file: "f".into(),
                user: "u".into(),
                password: Some("p".into()),
                create: true,
                kind: HashKind::Pbkdf2
            }
        );
        assert!(matches!(
            parse_args(&args(&["-H", "sha512", "-b", "f", "u", "p"])).unwrap(),
            PasswdCommand::Set {
                kind: HashKind::Sha512,
                ..
            }
        ));
        assert!(matches!(
            parse_args(&args(&["-D", "f", "u"])).unwrap(),
            PasswdCommand::Delete { .. }
        ));
        assert!(matches!(
            parse_args(&args(&["-U", "f"])).unwrap(),
            PasswdCommand::Upgrade { .. }
        ));
        for bad in [
            &["-c", "-D", "f", "u"][..],
            &["-b", "f", "u"],
            &["-b", "f", "a:b", "p"],
            &["-H", "md5", "f", "u"],
            &["-x", "f", "u"],
            &[],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_update_delete_upgrade() {
        let dir = std::env::temp_dir().join(format!("shardmq-passwd-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        let fs_ = f.to_str().unwrap();
        run(&args(&["-c", "-b", fs_, "a", "1"])).unwrap();
        run(&args(&["-H", "sha512", "-b", fs_, "b", "2"])).unwrap();
        run(&args(&["-b", fs_, "a", "3"])).unwrap();
        let pw = crate::auth::PasswordFile::load(&f).unwrap();
        assert!(pw.check("a", Some(b"3")) && pw.check("b", Some(b"2")));
        run(&args(&["-D", fs_, "a"])).unwrap();
        assert!(matches!(
            run(&args(&["-D", fs_, "a"])),
            Err(PasswdError::UserNotFound(_))
        ));
        fs::write(&f, "x:plain\ny:other\n").unwrap();
        run(&args(&["-U", fs_])).unwrap();
        let pw = crate::auth::PasswordFile::load(&f).unwrap();
        assert!(pw.check("x", Some(b"plain")) && pw.check("y", Some(b"other")));
        let _ = fs::remove_dir_all(&dir);
    }
}
