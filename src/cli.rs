//! The `shardmq` command line, mirroring `mosquitto`'s: `-c FILE`, `-p PORT`, `-v`,
//! `-d`, plus `--test-config`, the `passwd` subcommand (run by
//! [`crate::auth::passwd::run`]) and `import-mosquitto-db` ([`import_mosquitto_db`]).
//!
//! This module owns argument parsing, the Mosquitto rules for combining the command line
//! with the config file ([`load_config`]), and the reports of `--test-config` (with the
//! file checks of [`crate::runtime::preflight`]) and of an import. It prints nothing and
//! never exits the process: `main` does that with what these functions return.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Listener, LogTypes};

/// `shardmq [-c FILE] [-p PORT]... [-v] [-d] [--test-config] [passwd ...]`
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "shardmq",
    version,
    about = "shardmq: a thread-per-core MQTT 3.1/3.1.1/5.0 broker, drop-in for Mosquitto",
    long_about = "shardmq: a thread-per-core MQTT 3.1/3.1.1/5.0 broker, drop-in for Mosquitto.\n\n\
        Without -c it runs like Mosquitto 2 without a config file: one listener on \
        127.0.0.1:1883, anonymous clients allowed. With -c it reads a mosquitto.conf-style \
        file; if that file defines no listener, it listens on 127.0.0.1:1883 only."
)]
pub struct Args {
    /// Read the configuration from FILE (mosquitto.conf syntax, include_dir supported).
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Listen on PORT on all interfaces. Adds to the listeners of the config file, or
    /// replaces the loopback default when there are none. May be given several times.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Vec<u16>,

    /// Verbose: log every message type (same as `log_type all`).
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,

    /// Run in the background as a daemon (as mosquitto -d). The command returns once the
    /// broker listens (status 0) or failed to start (status 1, with the reason); the
    /// daemon writes pid_file. Under systemd prefer the foreground (dist/shardmq.service).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Check the configuration and every file it names (password, ACL, certificates,
    /// keys, psk_file, crlfile, persistence), print every problem or
    /// "Configuration OK", and exit (status 0 if it can be used, 1 otherwise).
    #[arg(long = "test-config")]
    pub test_config: bool,

    /// A tool to run instead of the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The `shardmq` executable's tools (subcommands).
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Manage a Mosquitto password file, as mosquitto_passwd does:
    /// `passwd [-H sha512|sha512-pbkdf2|scram-sha-256] [-c|-D] FILE USER`,
    /// `passwd [-H ..] [-c] -b FILE USER PASSWORD`, `passwd -U FILE`.
    #[command(disable_help_flag = true)]
    Passwd {
        /// Arguments, as for mosquitto_passwd (-c create, -b batch, -D delete, -U hash a
        /// plain-text file, -H hash algorithm); `shardmq passwd --help` for details.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Import a Mosquitto persistence file (mosquitto.db of Mosquitto 1.3 to 2.0):
    /// retained messages, persistent sessions, subscriptions, queued and in-flight
    /// messages go into shardmq's store (persistence_location / persistence_file of
    /// the config), which must be empty. A Mosquitto file at shardmq's own snapshot path
    /// is kept as FILE.mosquitto.
    #[command(name = "import-mosquitto-db")]
    ImportMosquittoDb {
        /// Mosquitto's persistence file.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// The config whose persistence_location and persistence_file receive the data
        /// (default: the embedded config, ./mosquitto.db).
        #[arg(short = 'c', long = "config-file", value_name = "FILE")]
        config_file: Option<PathBuf>,
    },
}

/// Why the command line cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] config::Error),
}

impl Args {
    /// Parses `std::env::args`; on a usage error or `--help` clap prints and exits.
    pub fn from_env() -> Self {
        Self::parse()
    }
}

/// Rejects what the command line asks for but shardmq cannot do (nothing today: `-d`
/// is supported).
pub fn check_supported(_args: &Args) -> Result<(), CliError> {
    Ok(())
}

/// The configuration the broker runs with, by Mosquitto's rules:
/// - no `-c`: the embedded default ([`Config::default`]: 127.0.0.1:1883, anonymous
///   allowed);
/// - `-c FILE`: that file, parsed and validated;
/// - `-p PORT`: a listener on all interfaces; it replaces the implied loopback listener
///   (no listener configured) or is added to the configured ones (skipped if one
///   already listens on that port on all interfaces);
/// - `-v`: `log_type all`.
pub fn load_config(args: &Args) -> Result<Config, config::Error> {
    let mut cfg = match &args.config_file {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !args.port.is_empty() {
        if cfg.local_only {
            cfg.listeners.clear();
            cfg.local_only = false;
        }
        for &port in &args.port {
            let exists = cfg
                .listeners
                .iter()
                .any(|l| l.port == port && l.bind_address.is_none());
            if !exists || port == 0 {
                cfg.listeners.push(Listener::new(port, None));
            }
        }
        cfg.validate()?;
    }
    if args.verbose {
        cfg.log.types = LogTypes::ALL;
    }
    Ok(cfg)
}

/// `--test-config`: `Ok(report)` if the configuration can be used (its warnings, then
/// "Configuration OK"), `Err(report)` with every problem otherwise: the config's wrong
/// lines, or, when it parses, each file or directory a start would fail on.
pub fn test_config(args: &Args) -> Result<String, String> {
    let cfg = load_config(args).map_err(|e| e.to_string())?;
    let mut report = String::new();
    for w in &cfg.warnings {
        report.push_str(w);
        report.push('\n');
    }
    let problems = crate::runtime::preflight::check(&cfg);
    if !problems.is_empty() {
        report.push_str(&problems.join("\n"));
        return Err(report);
    }
    report.push_str("Configuration OK");
    Ok(report)
}

/// `shardmq import-mosquitto-db PATH [-c FILE]`: the import's report, or why it failed
/// (nothing is written then).
pub fn import_mosquitto_db(
    args: &Args,
    path: &Path,
    config_file: Option<&Path>,
) -> Result<String, String> {
    let cfg = match config_file.or(args.config_file.as_deref()) {
        Some(file) => Config::from_file(file),
        None => Ok(Config::default()),
    }
    .map_err(|e| e.to_string())?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let imported =
        crate::persist::import::import_file(&cfg, path, std::time::Instant::now(), now_ms)
            .map_err(|e| e.to_string())?;
    let mut report = format!(
        "Imported {} (Mosquitto persistence format {}): {}.\nshardmq's store: {}.",
        path.display(),
        imported.version,
        imported.summary,
        imported.snapshot.display()
    );
    if let Some(moved) = &imported.moved {
        report.push_str(&format!(
            "\nThe Mosquitto file is kept as {}.",
            moved.display()
        ));
    }
    if !cfg.persistence {
        report.push_str(
            "\nNote: `persistence` is off in this configuration; set `persistence true` for \
             shardmq to load the imported data.",
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("shardmq").chain(argv.iter().copied())).unwrap()
    }

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let p = std::env::temp_dir().join(format!("shardmq-cli-{}-{name}", std::process::id()));
            std::fs::write(&p, text).unwrap();
            Self(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn help_documents_every_flag() {
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--config-file",
            "--port",
            "--verbose",
            "--daemon",
            "--test-config",
            "passwd",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn parses_mosquitto_flags() {
        let a = args(&["-c", "/etc/m.conf", "-p", "1884", "-p", "1885", "-v"]);
        assert_eq!(a.config_file, Some(PathBuf::from("/etc/m.conf")));
        assert_eq!(a.port, vec![1884, 1885]);
        assert!(a.verbose && !a.daemon && !a.test_config);
        let a = args(&[
            "--config-file",
            "x",
            "--port",
            "1",
            "--verbose",
            "--test-config",
        ]);
        assert!(a.test_config && a.verbose);
        assert!(Args::try_parse_from(["shardmq", "-p", "70000"]).is_err());
    }

    #[test]
    fn no_config_is_the_embedded_default() {
        let cfg = load_config(&args(&[])).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.listeners[0].bind_address.as_deref(), Some("127.0.0.1"));
        assert!(cfg.allow_anonymous);
    }

    #[test]
    fn port_without_config_listens_on_all_interfaces() {
        let cfg = load_config(&args(&["-p", "1884"])).unwrap();
        assert_eq!(cfg.listeners, vec![Listener::new(1884, None)]);
        assert!(!cfg.local_only);
        assert!(cfg.allow_anonymous);
    }

    #[test]
    fn port_adds_to_configured_listeners() {
        let f = TempFile::new("add.conf", "listener 1883\nlistener 9000 127.0.0.1\n");
        let path = f.0.to_str().unwrap();
        let cfg = load_config(&args(&["-c", path, "-p", "1883", "-p", "1990"])).unwrap();
        let ports: Vec<_> = cfg.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, vec![1883, 9000, 1990]);
        assert!(!cfg.allow_anonymous);
    }

    #[test]
    fn port_replaces_implied_loopback_listener_of_a_file() {
        let f = TempFile::new("nolistener.conf", "max_queued_messages 5\n");
        let cfg = load_config(&args(&["-c", f.0.to_str().unwrap(), "-p", "1884"])).unwrap();
        assert_eq!(cfg.listeners, vec![Listener::new(1884, None)]);
        assert_eq!(cfg.max_queued_messages, 5);
    }

    #[test]
    fn verbose_logs_everything() {
        let cfg = load_config(&args(&["-v"])).unwrap();
        assert_eq!(cfg.log.types, LogTypes::ALL);
    }

    #[test]
    fn daemon_and_subcommands_parse() {
        assert!(check_supported(&args(&["-d"])).is_ok());
        assert!(args(&["-d"]).daemon);
        let a = args(&[
            "import-mosquitto-db",
            "/var/lib/mosquitto/mosquitto.db",
            "-c",
            "/etc/s.conf",
        ]);
        assert_eq!(
            a.command,
            Some(Command::ImportMosquittoDb {
                path: "/var/lib/mosquitto/mosquitto.db".into(),
                config_file: Some("/etc/s.conf".into())
            })
        );
        let a = args(&["passwd", "--help"]);
        assert_eq!(
            a.command,
            Some(Command::Passwd {
                args: vec!["--help".into()]
            })
        );
        let a = args(&["passwd", "-c", "/etc/pw", "user"]);
        assert_eq!(
            a.command,
            Some(Command::Passwd {
                args: vec!["-c".into(), "/etc/pw".into(), "user".into()]
            })
        );
        assert!(check_supported(&a).is_ok());
        assert!(check_supported(&args(&["-v"])).is_ok());
    }

    #[test]
    fn test_config_reports() {
        let ok = TempFile::new("ok.conf", "listener 0 127.0.0.1\ndhparamfile x\n");
        let report = test_config(&args(&["-c", ok.0.to_str().unwrap(), "--test-config"])).unwrap();
        assert!(report.contains("dhparamfile"), "{report}");
        assert!(report.ends_with("Configuration OK"), "{report}");
        let bad = TempFile::new("bad.conf", "listener 0\nmax_keepalive x\n");
        let report = test_config(&args(&["-c", bad.0.to_str().unwrap()])).unwrap_err();
        assert!(
            report.contains("max_keepalive") && report.contains("line 2"),
            "{report}"
        );
        let missing = test_config(&args(&["-c", "/nonexistent/x.conf"])).unwrap_err();
        assert!(missing.contains("/nonexistent/x.conf"), "{missing}");
    }
}
