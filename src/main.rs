//! The `shardmq` command line: parse arguments, load the config, start the broker, wait
//! for SIGINT / SIGTERM. The only place that uses `anyhow`.

use std::process::ExitCode;

use anyhow::Context;
use shardmq::executable::signals::{self, Signal};
use shardmq::executable::Args;
use shardmq::{log_error, log_notice, log_warning, Broker};

fn main() -> ExitCode {
    let args = Args::from_env();
    if let Err(e) = shardmq::executable::check_supported(&args) {
        eprintln!("Error: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(shardmq::executable::Command::Passwd { args }) = &args.command {
        return match shardmq::executable::passwd(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.test_config {
        return match shardmq::executable::test_config(&args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            if msg.starts_with("Error") {
                log_error!("{msg}");
            } else {
                log_error!("Error: {msg}");
            }
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
    if let Some(path) = &pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid_file {}", path.display()))?;
    }
    signals::block().context("cannot block signals")?;
    let broker = Broker::builder(config).start()?;
    let stopper = broker.stopper();
    let reloader = broker.reloader();
    signals::spawn_handler(move |sig| match sig {
        Signal::Stop => {
            log_notice!("Signal received, shutting down.");
            stopper.stop();
        }
        Signal::Reload => {
            log_notice!(
                "Reloading config (log files, password and ACL files, TLS certificates, \
                 keys, CRLs and PSK files)."
            );
            if let Err(e) = shardmq::log::reinit() {
                log_error!("Error: cannot reopen the log: {e}");
            }
            // A bad file keeps the old rules in force.
            match reloader.reload_security() {
                Ok(()) => log_notice!("Password and ACL files reloaded."),
                Err(e) => log_error!("Error: reload failed, keeping the old rules: {e}"),
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
        }
    })
    .context("cannot start the signal thread")?;
    broker.join();
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    log_notice!("shardmq version {} terminating", env!("CARGO_PKG_VERSION"));
    Ok(())
}
