//! Exec and enter sessions. The caller's own descriptors never enter a
//! VPS: the command runs on pipes the daemon makes, or on a pty the attach
//! helper allocates inside the VPS, and the caller gets the other ends
//! (over SCM_RIGHTS) to relay its stdio through. A VPS process left behind
//! when the command exits holds only those pipes or that pty, which go
//! dead when the caller is done. A console session hands over a
//! connection to the VPS's console keeper the same way.
use std::{
    io::Read as _,
    os::{
        fd::{AsFd as _, AsRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::Path,
    process::Stdio,
    time::Duration,
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    unistd::pipe2,
};

use super::{
    api::{Reply, Session},
    channel::Channel,
    handlers::{HandlerError, Result},
};
use crate::ns::{
    attach::AttachPlan,
    console::{ATTACHED, BUSY},
    helper::{self, Attached, HelperError},
};

/// How long a console keeper may take to greet.
const KEEPER_TIMEOUT: Duration = Duration::from_secs(5);

fn pipe(what: &'static str) -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| HandlerError::Session {
        what,
        source: e.into(),
    })
}

/// The command's stdio (for the helper) and the caller's ends of it.
fn pipes() -> Result<([Stdio; 3], Vec<OwnedFd>)> {
    let (stdin_r, stdin_w) = pipe("stdin pipe")?;
    let (stdout_r, stdout_w) = pipe("stdout pipe")?;
    let (stderr_r, stderr_w) = pipe("stderr pipe")?;
    Ok((
        [stdin_r.into(), stdout_w.into(), stderr_w.into()],
        vec![stdin_w, stdout_r, stderr_r],
    ))
}

/// Run `plan` in its VPS for the caller on `chan`: it is sent `Started`
/// with its ends of the command's stdio; the returned `Exited` follows.
pub fn run(chan: &mut Channel, exe: &Path, plan: &AttachPlan) -> Result<Session> {
    let (attached, theirs): (Attached, Vec<OwnedFd>) = if plan.tty {
        // The helper reports its own failures over its control socket; its
        // stderr is the daemon's log.
        let mut attached =
            helper::attach(exe, plan, [Stdio::null(), Stdio::null(), Stdio::inherit()])?;
        let master = attached.master.take().ok_or(HelperError::Silent)?;
        (attached, vec![master])
    } else {
        let (stdio, theirs) = pipes()?;
        (helper::attach(exe, plan, stdio)?, theirs)
    };
    hand_over(chan, theirs, || {
        attached.wait().map_err(|source| HandlerError::Session {
            what: "wait for the command",
            source,
        })
    })
}

/// Attach the caller on `chan` to a VPS's console: it is sent `Started`
/// with a connection to the console keeper listening at `socket`, and the
/// session lasts until the caller goes (it sends nothing more).
pub fn console(chan: &mut Channel, name: &str, socket: &Path) -> Result<Session> {
    let unreachable = |source| HandlerError::Console {
        name: name.to_owned(),
        source,
    };
    let mut keeper = UnixStream::connect(socket).map_err(unreachable)?;
    keeper
        .set_read_timeout(Some(KEEPER_TIMEOUT))
        .map_err(unreachable)?;
    let mut greeting = [0u8; 1];
    keeper.read_exact(&mut greeting).map_err(unreachable)?;
    match greeting[0] {
        ATTACHED => {}
        BUSY => return Err(HandlerError::ConsoleBusy(name.to_owned())),
        _ => return Err(unreachable(std::io::ErrorKind::InvalidData.into())),
    }
    keeper.set_read_timeout(None).map_err(unreachable)?;
    let caller = chan
        .socket()
        .try_clone()
        .map_err(|source| HandlerError::Session {
            what: "caller's socket",
            source,
        })?;
    hand_over(chan, vec![keeper.into()], move || {
        let mut gone = [PollFd::new(caller.as_fd(), PollFlags::POLLIN)];
        while poll(&mut gone, PollTimeout::NONE) == Err(Errno::EINTR) {}
        Ok(0)
    })
}

/// Send the caller `Started` with `theirs`, keep no copy of them (so they
/// go dead when the caller does), and answer `Exited` with what `wait`
/// returns (waited for even if the caller went, so nothing is left behind).
fn hand_over(
    chan: &mut Channel,
    theirs: Vec<OwnedFd>,
    wait: impl FnOnce() -> Result<i32>,
) -> Result<Session> {
    let raw: Vec<RawFd> = theirs.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = chan.send(&Reply::Ok(Session::Started), &raw);
    drop(theirs);
    let exit_code = wait()?;
    sent?;
    tracing::debug!(exit_code, "session ended");
    Ok(Session::Exited { exit_code })
}
