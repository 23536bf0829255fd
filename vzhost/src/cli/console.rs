//! `vzhost console NAME`: this terminal, raw, on the VPS's console, as
//! `virsh console` or a serial line would be, until the detach key; the
//! daemon hands over a connection to the VPS's console keeper and this
//! process relays its own stdio to it (see `session`). `--log` prints what
//! the console recorded, its control characters escaped.
use std::{io::IsTerminal as _, os::fd::OwnedFd, process::ExitCode};

use vzhost::{
    daemon::api::{Console, ConsoleLog},
    model::text::escape_control,
};

use super::{
    client::{Client, ClientError},
    session::{Ended, Io, RawMode, std_fd},
};

/// Ctrl-], as telnet and virsh have it.
const DETACH: u8 = 0x1d;

pub fn run(client: &Client, name: &str, log: bool) -> anyhow::Result<ExitCode> {
    if log {
        let text = client.call(ConsoleLog {
            name: name.to_owned(),
        })?;
        for line in text.lines() {
            println!("{}", escape_control(line));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (chan, fds) = client.session(Console {
        name: name.to_owned(),
    })?;
    let keeper: OwnedFd = fds
        .into_iter()
        .next()
        .ok_or(ClientError::Protocol("a console without its connection"))?;
    eprintln!("Connected to the console of {name}; detach with Ctrl-]");
    let ended = {
        let _raw = RawMode::enter();
        Io {
            input: Some((std_fd(0), keeper.try_clone()?)),
            outputs: vec![(keeper, std_fd(1))],
            detach: Some(DETACH),
        }
        .relay(chan)?
    };
    // Raw mode is over: a fresh line for what follows.
    let nl = if std::io::stdout().is_terminal() {
        "\n"
    } else {
        ""
    };
    match ended {
        Ended::Detached => eprintln!("{nl}Detached from the console of {name}."),
        Ended::Closed => eprintln!("{nl}The console of {name} closed: the VPS stopped."),
        Ended::Exited(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}
