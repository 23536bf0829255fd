//! The VPS verbs: create, start, stop, restart, destroy, list, set, passwd.
use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Read as _},
    os::fd::AsFd as _,
    path::Path,
    process::ExitCode,
};

use anyhow::bail;
use nix::sys::termios;
use vzhost::{
    daemon::api::{Destroy, List, Passwd, Restart, Set, Start, Stop},
    model::{IdMap, SpecError},
    vps::{CreateRequest, ssh_keys},
};

use super::{
    args::{CreateArgs, LimitArgs, Output},
    client::Client,
    print, tables,
};

pub fn create(client: &Client, out: Output, a: &CreateArgs) -> anyhow::Result<ExitCode> {
    let labels = a
        .labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| SpecError::Field {
                    field: "--label",
                    value: l.clone(),
                    why: "use key=value".into(),
                })
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let spec = client.call(CreateRequest {
        name: a.name.clone(),
        template: a.template.clone(),
        hostname: a.hostname.clone(),
        limits: a.limits.parse()?,
        labels,
        stop_timeout: a.stop_timeout,
        ip: a.ip.clone(),
        ip6: a.ip6.clone(),
        policy: a.policy.clone(),
        idmap: a.uid_base.map(|base| IdMap {
            base,
            count: a.uid_count,
        }),
        ssh_keys: ssh_keys(a.ssh_key.as_deref())?,
    })?;
    print(out, &spec, |s| format!("created {}", s.name))
}

pub fn start(client: &Client, out: Output, name: &str) -> anyhow::Result<ExitCode> {
    let runtime = client.call(Start { name: name.into() })?;
    print(out, &runtime, |_| String::new())
}

pub fn stop(client: &Client, out: Output, name: &str) -> anyhow::Result<ExitCode> {
    client.call(Stop { name: name.into() })?;
    print(out, &(), |()| String::new())
}

pub fn restart(client: &Client, out: Output, name: &str) -> anyhow::Result<ExitCode> {
    let runtime = client.call(Restart { name: name.into() })?;
    print(out, &runtime, |_| String::new())
}

pub fn destroy(client: &Client, out: Output, name: &str, force: bool) -> anyhow::Result<ExitCode> {
    client.call(Destroy {
        name: name.into(),
        force,
    })?;
    print(out, &(), |()| String::new())
}

pub fn list(client: &Client, out: Output) -> anyhow::Result<ExitCode> {
    let rows = client.call(List {})?;
    print(out, &rows, |r| tables::vps(r))
}

pub fn set(
    client: &Client,
    out: Output,
    name: &str,
    limits: &LimitArgs,
    ssh_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let spec = client.call(Set {
        name: name.into(),
        limits: limits.parse()?,
        ssh_keys: ssh_keys(ssh_key)?,
    })?;
    print(out, &spec, |_| String::new())
}

pub fn passwd(client: &Client, out: Output, name: &str, user: &str) -> anyhow::Result<ExitCode> {
    let password = read_password(user)?;
    client.call(Passwd {
        name: name.into(),
        user: user.into(),
        password,
    })?;
    print(out, &(), |()| String::new())
}

/// The text of key file `path`, checked here so errors name the file (the
/// daemon checks it again).
fn ssh_keys(path: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let refuse = |why: String| SpecError::Field {
        field: "--ssh-key",
        value: path.display().to_string(),
        why,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(ssh_keys::MAX_KEY_FILE as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| refuse(e.to_string()))?;
    ssh_keys::parse_keys(&text).map_err(|e| refuse(e.to_string()))?;
    Ok(Some(text))
}

/// The new password: from stdin when it is not a terminal, else prompted twice.
fn read_password(user: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(pw);
    }
    let prompt = |what: &str| -> anyhow::Result<String> {
        eprint!("{what}");
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(termios::LocalFlags::ECHO);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &quiet)?;
        let mut line = String::new();
        let r = stdin.read_line(&mut line);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &saved)?;
        eprintln!();
        r?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    let first = prompt(&format!("New password for {user}: "))?;
    if first != prompt("Again: ")? {
        bail!("the passwords do not match");
    }
    Ok(first)
}
