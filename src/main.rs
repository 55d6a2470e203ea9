//! The `shardmq` command line: parse arguments, load the config, start the broker, wait
//! for SIGINT / SIGTERM. The only place that uses `anyhow`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shardmq::cli::{Args, Command};
use shardmq::runtime::signals::{self, Signal};
use shardmq::{log_error, log_notice, log_warning, Broker};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Passwd(p)) = &args.command {
        return match shardmq::cli::run_passwd(p) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_error!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = match shardmq::cli::load_config(args) {
        Ok(c) => c,
        Err(e) => {
            // A bad config file names the file, the line and the option.
            anyhow::bail!("{e}");
        }
    };
    if args.test_config {
        for w in &config.warnings {
            eprintln!("Warning: {w}");
        }
        println!("Configuration OK");
        return Ok(());
    }
    shardmq::log::init(&config.log).context("cannot open the log destination")?;
    for w in &config.warnings {
        log_warning!("Warning: {w}");
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
    let log_config = config.log.clone();
    signals::block().context("cannot block signals")?;
    let broker = Broker::builder(config).start()?;
    let stopper = broker.stopper();
    signals::spawn_handler(move |sig| match sig {
        Signal::Stop => {
            log_notice!("Signal received, shutting down.");
            stopper.stop();
        }
        Signal::Reload => {
            log_notice!("Reloading config (log files).");
            if let Err(e) = shardmq::log::reinit(&log_config) {
                log_error!("Error: cannot reopen the log: {e}");
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
