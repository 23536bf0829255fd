//! `vzhost doctor`: runs here, without a daemon.
use std::process::ExitCode;

use super::{args::Output, print, tables};

pub fn run(out: Output) -> anyhow::Result<ExitCode> {
    let checks = vzhost::doctor::run();
    print(out, &checks, |c| tables::doctor(c))?;
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
