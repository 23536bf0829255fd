//! The helpers' entry points: what `vzhost __launch` and `vzhost __attach`
//! run, in place of the command line interface.
use std::{
    ffi::OsStr,
    io,
    os::fd::{AsFd, AsRawFd as _, FromRawFd as _, OwnedFd},
    process::ExitCode,
};

use super::{
    ATTACH, LAUNCH, SOCKET_FD,
    report::{Report, send_report},
};
use crate::{model::ErrorKind, ns::attach::AttachPlan};

/// If this process was started as one of the helpers, run it and return
/// its exit code; `None` for every other command line.
pub fn main_if_helper() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let which = args.next()?;
    if which == OsStr::new(LAUNCH) {
        let plan = args.next().unwrap_or_default();
        Some(launch_main(&plan.to_string_lossy()))
    } else if which == OsStr::new(ATTACH) {
        let plan = args.next().unwrap_or_default();
        Some(attach_main(&plan.to_string_lossy()))
    } else {
        None
    }
}

fn launch_main(plan: &str) -> ExitCode {
    let result = take_socket_from_stdin()
        .and_then(|()| {
            serde_json::from_str(plan).map_err(|e| format!("malformed launch plan: {e}"))
        })
        .and_then(|plan| {
            // Stdout is line-buffered: the daemon has the pid at once.
            crate::ns::launch::launch(&plan, |pid| println!("{pid}")).map_err(|e| e.to_string())
        });
    match result {
        Ok(phases) => {
            println!("{phases}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vzhost: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The launcher is spawned without a pre_exec (so without a fork of the
/// daemon): it makes its own session, and takes the daemon's socket from
/// its stdin to [`SOCKET_FD`], leaving /dev/null as stdin.
fn take_socket_from_stdin() -> Result<(), String> {
    let is_socket = nix::sys::stat::fstat(io::stdin())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        return Err(format!("{LAUNCH} is started by the daemon only"));
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let taken = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    // SAFETY: dup2 onto SOCKET_FD, which nothing in this fresh process
    // holds (the lowest free descriptor until now: /dev/null opens after).
    if unsafe { libc::dup2(libc::STDIN_FILENO, SOCKET_FD) } < 0 {
        return Err(taken("take the socket"));
    }
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    // SAFETY: dup2 onto stdin, whose socket is now at SOCKET_FD.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO) } < 0 {
        return Err(taken("make /dev/null stdin"));
    }
    Ok(())
}

fn attach_main(plan: &str) -> ExitCode {
    // SAFETY: fd 3 is the control socket by this protocol; nothing else in
    // this fresh process owns it.
    let control = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    let is_socket =
        nix::sys::stat::fstat(&control).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        // Started by hand, not by a daemon: fd 3 is someone else's.
        std::mem::forget(control);
        eprintln!("vzhost: {ATTACH} is started by the daemon only");
        return ExitCode::from(2);
    }
    let joined = serde_json::from_str::<AttachPlan>(plan)
        .map_err(|e| (ErrorKind::Internal, format!("malformed attach plan: {e}")))
        .and_then(|plan| crate::ns::attach::join(&plan).map_err(|e| (e.kind(), e.to_string())));
    let mut joined = match joined {
        Ok(j) => j,
        Err((kind, message)) => {
            send_report(control.as_fd(), &Report::Failed { kind, message }, None);
            return ExitCode::FAILURE;
        }
    };
    // Only the caller keeps the master: the helper's copy goes once sent.
    let master = joined.master.take();
    send_report(
        control.as_fd(),
        &Report::Ready,
        master.as_ref().map(AsFd::as_fd),
    );
    drop((master, control));
    match joined.run() {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("vzhost: {e}");
            ExitCode::FAILURE
        }
    }
}
