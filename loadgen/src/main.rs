//! `shardmq-loadgen`: an MQTT 3.1.1 / 5.0 load generator for any broker (shardmq,
//! Mosquitto, ...). Parses the command line, runs the scenario, prints the report and
//! writes the JSON / SVG files. Exit status: 0 ok, 1 error (unreachable broker, refused
//! CONNACK, subscription not granted, ...), 2 a run that received nothing
//! (with publishers only: that nothing was acknowledged at QoS 1/2, or sent at QoS 0).

mod housekeeping;
mod net;
mod opts;
mod pacing;
mod plot;
mod publisher;
mod report;
mod run;
mod shared;
mod stamp;
mod timer;
mod tracker;
mod wire;
mod worker;
mod ws;

use anyhow::{Context, Result};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shardmq-loadgen: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let cli = opts::Cli::parse();
    let plan = opts::resolve(cli.cmd, command_line)?;
    let report = run::run(&plan)?;
    print!("{}", report.text());
    if let Some(path) = &report.plan.json {
        std::fs::write(path, report.json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &report.plan.plot {
        std::fs::write(path, plot::svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.plan.publishers_only() && report.accepted() == 0 {
        eprintln!(
            "shardmq-loadgen: error: the broker accepted nothing ({} messages sent, {} acknowledged)",
            report.totals.sent, report.totals.acked
        );
        return Ok(ExitCode::from(2));
    }
    if report.is_messaging() && !report.plan.publishers_only() && report.totals.counts.received == 0
    {
        eprintln!(
            "shardmq-loadgen: error: received nothing ({} messages sent): is the broker routing {}?",
            report.totals.sent,
            report.plan.topic(0)
        );
        return Ok(ExitCode::from(2));
    }
    if !report.is_messaging() && report.totals.connects_ok == 0 {
        eprintln!("shardmq-loadgen: error: no connection succeeded");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
