//! `vzhost template list|import|create|build`.
use std::{os::unix::fs::PermissionsExt as _, process::ExitCode};

use anyhow::Context as _;
use vzhost::{
    daemon::api::{TemplateCreate, TemplateImport, TemplateList},
    rootfs::{TemplateError, TemplateInfo, build_tree, discard_build},
};

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
        TemplateCommand::Create { build, name } => {
            let build = build.build();
            // Refused here before the daemon is asked, with the same words.
            build.check().map_err(TemplateError::from)?;
            let name = name.clone().unwrap_or_else(|| build.default_name());
            let made = client.follow(TemplateCreate { name, build }, |line| eprintln!("{line}"))?;
            print(out, &made, created)
        }
        TemplateCommand::Build { build, dir: output } => {
            let build = build.build();
            build.check().map_err(TemplateError::from)?;
            match std::fs::read_dir(output).map(|mut d| d.next().is_none()) {
                Ok(true) => {}
                Ok(false) => anyhow::bail!(
                    "--dir {} is not empty; name a new directory",
                    output.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(output)
                        .with_context(|| format!("create --dir {}", output.display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("--dir {}", output.display()));
                }
            }
            std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", output.display()))?;
            if let Err(e) = build_tree(&build, output, &mut |line| eprintln!("{line}")) {
                let _ = discard_build(output);
                return Err(e.into());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The line `template create` ends with.
fn created(t: &TemplateInfo) -> String {
    match &t.meta {
        Some(m) => format!(
            "template {} created: {} {} ({}), {}",
            t.name,
            m.distribution,
            m.release,
            m.init.as_str(),
            tables::size(m.size)
        ),
        None => format!("template {} created", t.name),
    }
}
