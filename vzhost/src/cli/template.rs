//! `vzhost template list|import`.
use std::process::ExitCode;

use anyhow::Context as _;
use vzhost::daemon::api::{TemplateImport, TemplateList};

use super::{
    args::{Output, TemplateCommand},
    client::Client,
    print, tables,
};

pub fn run(client: &Client, out: Output, command: &TemplateCommand) -> anyhow::Result<ExitCode> {
    match command {
        TemplateCommand::List => {
            let rows = client.call(TemplateList {})?;
            print(out, &rows, |r| tables::templates(r))
        }
        TemplateCommand::Import { name, path } => {
            // The daemon reads it: a path that means the same there.
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("template source {}", path.display()))?;
            let imported = client.call(TemplateImport {
                name: name.clone(),
                path: path.display().to_string(),
            })?;
            print(out, &imported, |_| String::new())
        }
    }
}
