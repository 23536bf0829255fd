//! The `vzhost` command: a thin client of the daemon's API, plus the daemon
//! itself and `doctor`. The daemon's helpers (`__launch`, `__attach`) are
//! not here: `main` hands them to `vzhost::ns::helper` before parsing.
//!
//! - `args`: the command line (clap)
//! - `client`: typed calls to the daemon
//! - `tables`: how data prints without `-o json`
//! - a file per command group: `vps` (the verbs), `session` (exec, enter),
//!   `console`, `policy`, `events`, `template`, `stat`, `doctor`,
//!   `stop_all`
mod args;
mod client;
mod console;
mod doctor;
mod events;
mod policy;
mod session;
mod stat;
mod stop_all;
mod tables;
mod template;
mod vps;

use std::{path::PathBuf, process::ExitCode};

use args::{Cli, Command, Output};
use clap::Parser as _;
use client::{Client, ClientError};
use serde::Serialize;
use vzhost::{
    daemon,
    model::{ErrorKind, SpecError},
};

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VZHOST_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    if std::env::args().nth(1).as_deref() == Some("daemon") {
                        "info"
                    } else {
                        "warn"
                    },
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vzhost: {e:#}");
            ExitCode::from(failure_code(&e))
        }
    }
}

/// The exit code of a failure of `kind` (the README's table; clap exits
/// with 2 for usage errors, and exec and enter with the command's status).
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Internal => 1,
        ErrorKind::NotFound => 3,
        ErrorKind::Conflict => 4,
        ErrorKind::Invalid => 5,
        ErrorKind::Kernel => 6,
    }
}

/// The exit code for `e`: by its kind when it has one, else 1.
fn failure_code(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<ClientError>()
        .map(ClientError::kind)
        .or_else(|| e.downcast_ref::<SpecError>().map(SpecError::kind))
        .or_else(|| {
            e.downcast_ref::<vzhost::rootfs::TemplateError>()
                .map(vzhost::rootfs::TemplateError::kind)
        })
        .map_or(1, exit_code)
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let client = Client::new(&cli.socket);
    let out = cli.output;
    match &cli.command {
        Command::Daemon {
            root,
            network,
            bridge,
            subnet,
            subnet6,
            nat,
            policies,
            pins,
            metrics,
        } => {
            let metrics = match metrics.as_str() {
                "none" | "off" => None,
                addr => Some(addr.parse().map_err(|_| SpecError::Field {
                    field: "--metrics",
                    value: addr.to_owned(),
                    why: "use ADDRESS:PORT, e.g. 127.0.0.1:9464, or none".into(),
                })?),
            };
            daemon::run(daemon::DaemonConfig {
                root: root.clone(),
                socket: cli.socket.clone(),
                net: vzhost::net::NetConfig::new(bridge, subnet)?,
                network: *network,
                subnet6: subnet6
                    .as_deref()
                    .map(|p| vzhost::net::Prefix6::parse("--subnet6", p))
                    .transpose()?,
                nat: *nat,
                metrics,
                policies: policies.clone(),
                pins: (pins != "none").then(|| PathBuf::from(pins)),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => doctor::run(out),
        Command::Create(args) => vps::create(&client, out, args),
        Command::Start { name } => vps::start(&client, out, name),
        Command::Stop { name, all, jobs } => match name {
            Some(name) if !*all => vps::stop(&client, out, name),
            _ => stop_all::run(&client, out, usize::from(*jobs)),
        },
        Command::Restart { name } => vps::restart(&client, out, name),
        Command::Destroy { name, force } => vps::destroy(&client, out, name, *force),
        Command::List => vps::list(&client, out),
        Command::Set {
            name,
            limits,
            ssh_key,
        } => vps::set(&client, out, name, limits, ssh_key.as_deref()),
        Command::Passwd { name, user } => vps::passwd(&client, out, name, user),
        Command::Policy { command } => policy::run(&client, out, command),
        Command::Events { name, follow } => events::run(&client, out, name.as_deref(), *follow),
        Command::Stat { name } => stat::run(&client, out, name.clone()),
        Command::Exec { name, cmd } => session::exec(&client, name, cmd),
        Command::Enter { name } => session::enter(&client, name),
        Command::Console { name, log } => console::run(&client, name, *log),
        Command::Template { command } => template::run(&client, out, command),
    }
}

/// Print `v` as JSON, or as `table` renders it.
fn print<T: Serialize>(
    output: Output,
    v: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Table => {
            let t = table(v);
            if !t.is_empty() {
                print!("{}", if t.ends_with('\n') { t } else { t + "\n" });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use vzhost::daemon::api::Failure;

    use super::*;

    #[test]
    fn every_kind_has_its_documented_exit_code() {
        let codes: Vec<(ErrorKind, u8)> = ErrorKind::ALL
            .into_iter()
            .map(|k| (k, exit_code(k)))
            .collect();
        assert_eq!(
            codes,
            [
                (ErrorKind::NotFound, 3),
                (ErrorKind::Conflict, 4),
                (ErrorKind::Invalid, 5),
                (ErrorKind::Kernel, 6),
                (ErrorKind::Internal, 1),
            ]
        );
        let readme = include_str!("../../../README.md");
        for (kind, code) in codes {
            assert!(
                readme.contains(&format!("| {code} | `{kind}`")),
                "the README's exit code table lacks {code} {kind}"
            );
        }
    }

    #[test]
    fn failures_exit_by_the_kind_they_carry() {
        let from_daemon = anyhow::Error::from(ClientError::Daemon(Failure {
            kind: ErrorKind::NotFound,
            message: "VPS zz does not exist".into(),
        }));
        assert_eq!(failure_code(&from_daemon), 3);
        let local = anyhow::Error::from(vzhost::model::parse_size("memory", "12QB").unwrap_err())
            .context("create m");
        assert_eq!(failure_code(&local), 5);
        assert_eq!(failure_code(&anyhow::anyhow!("something else")), 1);
    }
}
