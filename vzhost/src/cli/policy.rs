//! `vzhost policy list|show|check`.
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;
use vzhost::{
    daemon::api::{PolicyList, PolicyShow},
    model::ErrorKind,
    policy::Policy,
};

use super::{
    args::{Output, PolicyCommand},
    client::Client,
    exit_code, print, tables,
};

pub fn run(client: &Client, out: Output, command: &PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::List => {
            let files = client.call(PolicyList {})?;
            print(out, &files, |f| tables::policies(f))
        }
        PolicyCommand::Show { name } => {
            let policy = client.call(PolicyShow { name: name.clone() })?;
            print(out, &policy, |p| {
                serde_yaml::to_string(p).unwrap_or_else(|e| e.to_string())
            })
        }
        PolicyCommand::Check { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match Policy::parse(&file.display().to_string(), &text) {
                Ok(p) => print(
                    out,
                    &json!({"file": file, "policy": p.name, "ok": true}),
                    |_| format!("{}: policy {} is valid", file.display(), p.name),
                ),
                Err(e) => {
                    if out == Output::Json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&json!({"ok": false, "error": e}))?
                        );
                    } else {
                        eprintln!("{e}");
                    }
                    Ok(ExitCode::from(exit_code(ErrorKind::Invalid)))
                }
            }
        }
    }
}
