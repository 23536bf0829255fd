//! Exec and enter sessions. The caller's own descriptors never enter a
//! VPS: the command runs on pipes the daemon makes, or on a pty the attach
//! helper allocates inside the VPS, and the caller gets the other ends
//! (over SCM_RIGHTS) to relay its stdio through. A VPS process left behind
//! when the command exits holds only those pipes or that pty, which go
//! dead when the caller is done.
use std::{
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::Path,
    process::Stdio,
};

use nix::{fcntl::OFlag, unistd::pipe2};

use super::{
    api::{Reply, Session},
    channel::Channel,
    handlers::{HandlerError, Result},
};
use crate::ns::{
    attach::AttachPlan,
    helper::{self, Attached, HelperError},
};

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
    let raw: Vec<RawFd> = theirs.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = chan.send(&Reply::Ok(Session::Started), &raw);
    // The caller holds the only copies now: when it is gone, so are they.
    drop(theirs);
    // Wait even for a caller that went away, so the helper is reaped.
    let exit_code = attached.wait().map_err(|source| HandlerError::Session {
        what: "wait for the command",
        source,
    })?;
    sent?;
    tracing::debug!(exit_code, "session ended");
    Ok(Session::Exited { exit_code })
}
