//! Command-line parsing and output for the `vzhost` command.
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "vzhost",
    version,
    about = "Virtual private servers on one Linux kernel, confined by eBPF"
)]
struct Cli {
    /// Output format for commands that print data.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Report which kernel features vzhost relies on are present.
    Doctor,
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VZHOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vzhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Doctor => doctor(cli.output),
    }
}

fn doctor(output: Output) -> anyhow::Result<ExitCode> {
    let checks = vzhost::doctor::run();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
        Output::Table => {
            let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
            for c in &checks {
                let status = if c.ok { "OK" } else { "MISSING" };
                println!("{:width$}  {status:7}  {}", c.name, c.detail);
            }
        }
    }
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
