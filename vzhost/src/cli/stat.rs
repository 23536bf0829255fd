//! `vzhost stat [NAME]`: beancounters.
use std::process::ExitCode;

use vzhost::daemon::api::Stat;

use super::{args::Output, client::Client, print, tables};

pub fn run(client: &Client, out: Output, name: Option<String>) -> anyhow::Result<ExitCode> {
    let rows = client.call(Stat { name })?;
    print(out, &rows, |r| tables::stat(r))
}
