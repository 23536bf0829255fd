//! The keeper's loop on a real pty (from the host's /dev/ptmx, as a
//! normal user may), with a child process standing in for PID 1.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread::JoinHandle,
};

use super::*;
use crate::{ns::attach::open_pty, sys};

struct Keeper {
    dir: tempfile::TempDir,
    /// The console as the VPS has it.
    peer: Option<OwnedFd>,
    /// A copy of the master, to open the console again after a hangup.
    master: OwnedFd,
    pid1: Child,
    relay: JoinHandle<i32>,
}

fn start(cap: u64) -> Keeper {
    let dir = tempfile::tempdir().unwrap();
    let ring = super::super::console::test_ring(dir.path(), cap);
    let pty = open_pty(Path::new("/dev/ptmx")).unwrap();
    let master = pty.master.try_clone().unwrap();
    let pid1 = Command::new("sleep").arg("60").spawn().unwrap();
    let pidfd = sys::pidfd_open(pid1.id()).unwrap();
    let listener = UnixListener::bind(dir.path().join("console.sock")).unwrap();
    let relay = std::thread::spawn(move || Relay::new(pty.master, pidfd, listener, ring).run());
    Keeper {
        dir,
        peer: Some(pty.peer),
        master,
        pid1,
        relay,
    }
}

impl Keeper {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("console.sock")
    }

    fn connect(&self) -> (UnixStream, u8) {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        (s, b[0])
    }

    fn say(&self, text: &str) {
        let peer = self.peer.as_ref().unwrap();
        let mut bytes = text.as_bytes();
        while !bytes.is_empty() {
            bytes = &bytes[nix::unistd::write(peer, bytes).unwrap()..];
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("console.log")).unwrap()
    }

    /// Wait (at most 5 s) for the log to hold `text`.
    fn logged(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "never logged {text:?}: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// PID 1 exits: the keeper ends, with status 0. The log, and the
    /// size of the one before it.
    fn stop(mut self) -> (String, u64) {
        self.pid1.kill().unwrap();
        self.pid1.wait().unwrap();
        assert_eq!(self.relay.join().unwrap(), 0);
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap();
        (read("console.log"), read("console.log.1").len() as u64)
    }
}

/// Read from `client` until it has sent `text` (5 s at most).
fn read_until(client: &mut UnixStream, text: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(text) {
        let n = client.read(&mut buf).expect("the client hears the console");
        assert!(
            n > 0,
            "closed before {text:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn output_is_logged_and_relayed_to_one_client_whose_keys_reach_the_vps() {
    let k = start(1 << 20);
    k.say("booting\n");
    k.logged("booting\n");
    let (mut client, greeting) = k.connect();
    assert_eq!(greeting, ATTACHED);
    let (mut second, greeting) = k.connect();
    assert_eq!(greeting, BUSY, "a second client is turned away");
    assert_eq!(second.read(&mut [0u8; 8]).unwrap(), 0);
    k.say("login: ");
    read_until(&mut client, "login: ");
    client.write_all(b"root\n").unwrap();
    let mut typed = [0u8; 64];
    let n = nix::unistd::read(k.peer.as_ref().unwrap(), &mut typed).unwrap();
    assert_eq!(&typed[..n], b"root\n", "the VPS reads what was typed");
    // Detach: the next client is welcome.
    drop(client);
    std::thread::sleep(Duration::from_millis(100));
    let (_third, greeting) = k.connect();
    assert_eq!(greeting, ATTACHED);
    let (log, _) = k.stop();
    assert!(log.starts_with("booting\nlogin: root\n"), "{log:?}");
}

#[test]
fn a_console_closed_by_the_vps_is_kept_until_it_is_opened_again() {
    let mut k = start(1 << 20);
    k.say("before\n");
    k.logged("before\n");
    // Every console of the VPS closed: the master hangs up.
    k.peer = None;
    std::thread::sleep(Duration::from_millis(350));
    assert!(!k.relay.is_finished(), "the keeper outlives a hangup");
    k.peer = Some(sys::pty_peer(k.master.as_fd()).unwrap());
    k.say("after\n");
    k.logged("after\n");
    let (mut client, _) = k.connect();
    k.say("attached\n");
    read_until(&mut client, "attached");
    k.stop();
}

#[test]
fn a_flood_past_a_client_that_never_reads_stays_within_the_log_cap() {
    const CAP: u64 = 64 << 10;
    let k = start(CAP);
    // Attached and never reading, and typing more than the VPS reads.
    let (mut client, _) = k.connect();
    client
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(&[b'y'; 1 << 20])
        .expect("typing is never held up by a VPS that does not read");
    let line = "x".repeat(1023) + "\n";
    for _ in 0..4096 {
        k.say(&line);
    }
    k.say("the-end\n");
    k.logged("the-end\n");
    let (log, old) = k.stop();
    assert!(log.len() as u64 <= CAP, "{}", log.len());
    assert!(log.ends_with("the-end\n"));
    assert_eq!(old, CAP);
}
