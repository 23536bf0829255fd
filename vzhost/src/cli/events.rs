//! `vzhost events [--follow] [NAME]`.
use std::process::ExitCode;

use vzhost::daemon::api::Events;

use super::{args::Output, client::Client, tables};

/// How long one request waits for an event while following.
const FOLLOW_WAIT_MS: u64 = 10_000;

/// Print events (one line each, or JSON lines), following if asked.
pub fn run(
    client: &Client,
    out: Output,
    name: Option<&str>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let batch = client.call(Events {
            name: name.map(str::to_owned),
            after,
            wait_ms: if follow { FOLLOW_WAIT_MS } else { 0 },
        })?;
        if let Some(last) = batch.last() {
            after = last.logged.seq;
        }
        for e in batch {
            match (out, follow) {
                (Output::Json, true) => println!("{}", serde_json::to_string(&e)?),
                (Output::Json, false) => all.push(e),
                (Output::Table, _) => println!("{}", tables::event(&e)),
            }
        }
        if !follow {
            break;
        }
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(ExitCode::SUCCESS)
}
