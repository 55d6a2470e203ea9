//! The `shardmq` command line: parse arguments, load the config, bind the listeners,
//! drop privileges and become a daemon when asked, start the broker, wait for SIGINT /
//! SIGTERM. The only place that uses `anyhow`.

use std::process::ExitCode;

use anyhow::Context;
use shardmq::executable::signals::{self, Signal};
use shardmq::executable::{notify, process, Args, Command, PasswdError};
use shardmq::{log_error, log_notice, log_warning};

fn main() -> ExitCode {
    let args = Args::from_env();
    if let Err(e) = shardmq::executable::check_supported(&args) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    match &args.command {
        Some(Command::Passwd { args }) => {
            return match shardmq::executable::passwd(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(PasswdError::Help(help)) => {
                    println!("{help}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::ImportMosquittoDb { path, config_file }) => {
            return report(shardmq::executable::import_mosquitto_db(
                &args,
                path,
                config_file.as_deref(),
            ));
        }
        None => {}
    }
    if args.test_config {
        return report(shardmq::executable::test_config(&args));
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One log line per problem (a config may have several), each cause once.
            for line in describe(&e).lines() {
                if line.starts_with("Error") {
                    log_error!("{line}");
                } else {
                    log_error!("Error: {line}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each stated once: most errors already include their
/// cause in their message.
fn describe(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !msg.contains(&cause) {
            msg.push_str(": ");
            msg.push_str(&cause);
        }
    }
    msg
}

/// Prints a report on standard output (success) or standard error (failure).
fn report(outcome: Result<String, String>) -> ExitCode {
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    // A bad config file names the file, the line and the option.
    let config = shardmq::executable::load_config(args).map_err(|e| anyhow::anyhow!("{e}"))?;
    shardmq::log::init(&config.log).context("cannot open the log destination")?;
    for w in &config.warnings {
        log_warning!("{w}");
    }
    log_notice!("shardmq version {} starting", env!("CARGO_PKG_VERSION"));
    match config.source_files.first() {
        Some(f) => log_notice!("Config loaded from {}.", f.display()),
        None => log_notice!("Using default config."),
    }
    let pid_file = config.pid_file.clone();
    let user = config.user.clone();
    let config_file = config.source_files.first().cloned();
    // Before anything is bound: a SIGINT / SIGTERM from now on is a clean shutdown (the
    // signal thread takes them once the broker runs).
    signals::block().context("cannot block signals")?;
    // Listeners bound (privileged ports work), TLS, password and ACL files loaded.
    let prepared = shardmq::executable::prepare_config(config)?;
    // Then, as Mosquitto: switch from root to `user`; persistence, pid_file and later
    // reloads happen as that user.
    match process::drop_privileges(user.as_deref())? {
        Some(u) => log_notice!(
            "Dropped privileges to user {} (uid {}, gid {}).",
            u.name,
            u.uid,
            u.gid
        ),
        None if process::running_as_root() && user.is_none() => log_warning!(
            "Warning: shardmq is running as root; set `user` to the account it should run \
             as (Mosquitto would switch to 'mosquitto')."
        ),
        None if process::running_as_root() => {
            log_warning!("Warning: shardmq should not be run as root/administrator.");
        }
        None => {}
    }
    let daemon = if args.daemon {
        Some(process::daemonize()?)
    } else {
        None
    };
    if let Some(path) = &pid_file {
        // As Mosquitto 2: written by the process that runs, as the user it runs as.
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("Unable to write pid file {}", path.display()))?;
    }
    let remove_pid = || {
        if let Some(path) = &pid_file {
            let _ = std::fs::remove_file(path);
        }
    };
    let broker = match prepared.start() {
        Ok(b) => b,
        Err(e) => {
            remove_pid();
            return Err(e.into());
        }
    };
    let stopper = broker.stopper();
    let reloader = broker.reloader();
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping_signal = std::sync::Arc::clone(&stopping);
    signals::spawn_handler(move |sig| match sig {
        Signal::Stop => {
            log_notice!("Signal received, shutting down.");
            stopping_signal.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = notify::notify("STOPPING=1");
            stopper.stop();
        }
        Signal::Reload => {
            log_notice!(
                "Reloading config (log files, password and ACL files, TLS certificates, \
                 keys, CRLs and PSK files)."
            );
            let _ = notify::notify("RELOADING=1");
            if let Err(e) = shardmq::log::reinit() {
                log_error!("Error: cannot reopen the log: {e}");
            }
            // A bad file keeps the old rules in force.
            match reloader.reload_security() {
                Ok(()) => log_notice!("Password and ACL files reloaded."),
                Err(e) => log_error!("Error: reload failed, keeping the old rules: {e}"),
            }
            // Bridges: from the config file read again; a bad file changes none.
            if let Some(path) = &config_file {
                match shardmq::Config::from_file(path) {
                    Ok(c) => reloader.reload_bridges(&c.bridges),
                    Err(e) => log_error!("Error: bridges not reloaded, {}: {e}", path.display()),
                }
            }
            // Per listener: a file that fails to load keeps that listener's old files.
            for (port, outcome) in reloader.reload_tls() {
                match outcome {
                    Ok(()) => log_notice!("TLS files of listener {port} reloaded."),
                    Err(e) => log_error!(
                        "Error: TLS reload of listener {port} failed, keeping its old \
                         configuration: {e}"
                    ),
                }
            }
            let _ = notify::notify("READY=1");
        }
    })
    .context("cannot start the signal thread")?;
    log_notice!("shardmq version {} running", env!("CARGO_PKG_VERSION"));
    if let Some(d) = daemon {
        d.running()?;
    }
    // systemd (Type=notify): ready now; the watchdog pings every shard loop.
    let ready = format!("READY=1\nMAINPID={}\nSTATUS=running", std::process::id());
    if let Err(e) = notify::notify(&ready) {
        log_warning!("Warning: cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
    if let Some(interval) = notify::watchdog_interval() {
        let watchdog = broker.watchdog();
        std::thread::Builder::new()
            .name("shardmq-watchdog".into())
            .spawn(move || {
                watchdog.run(interval, &|| {
                    stopping.load(std::sync::atomic::Ordering::Relaxed)
                });
            })
            .context("cannot start the watchdog thread")?;
    }
    broker.join();
    remove_pid();
    log_notice!("shardmq version {} terminating", env!("CARGO_PKG_VERSION"));
    let lost = shardmq::executable::persistence_lost_records();
    if lost > 0 {
        // Nothing that depended on them was acknowledged, but the shutdown was not clean.
        anyhow::bail!("{lost} persistence records could not be written before stopping");
    }
    Ok(())
}
