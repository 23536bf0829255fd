//! Login credentials: `vzhost passwd` keeps /etc/shadow's mode, owner and
//! group on a running and a stopped VPS and refuses users the VPS lacks;
//! `--ssh-key` installs root's authorized keys, never through what the
//! VPS planted.
use std::{
    fs,
    io::Write as _,
    process::{Command, Output, Stdio},
};

use vzhost_tests::{Daemon, stderr, vzhost_bin};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIECspNHQDtZHOX/Us4I2IaWF/kqxpUneA3a/tu/G1tv5 admin@host";
const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIABiqT831gRekHiUnaVpSg6HjfsrvyB+u0wT3IasnTtY ops@host";

fn passwd(d: &Daemon, vps: &str, user: &str, pw: &str) -> Output {
    let mut c = Command::new(vzhost_bin())
        .args(["passwd", vps, user])
        .env("VZHOST_SOCKET", d.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    c.wait_with_output().unwrap()
}

/// The hash of `user` in the running VPS's /etc/shadow checks against `pw`.
fn hash_is(d: &Daemon, vps: &str, user: &str, pw: &str) -> bool {
    let line = d.sh_ok(vps, &format!("busybox grep ^{user}: /etc/shadow"));
    sha_crypt::sha512_check(pw, line.split(':').nth(1).unwrap_or("")).is_ok()
}

fn shadow_stat(d: &Daemon) -> String {
    d.sh_ok("a", "stat -c %a:%u:%g /etc/shadow")
}

#[test]
fn passwd_keeps_a_debian_shadow_running_and_stopped_and_refuses_unknown_users() -> anyhow::Result<()>
{
    let d = Daemon::start("cred-shadow")?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    // As Debian has it: root:shadow (42), 0640.
    d.sh_ok("a", "chown 0:42 /etc/shadow && chmod 0640 /etc/shadow");
    let out = passwd(&d, "a", "root", "running-pw");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(shadow_stat(&d), "640:0:42");
    assert!(hash_is(&d, "a", "root", "running-pw"));
    let out = passwd(&d, "a", "mallory", "x");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no user mallory"), "{}", stderr(&out));

    d.ok(&["stop", "a"]);
    let out = passwd(&d, "a", "root", "stopped-pw");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = passwd(&d, "a", "mallory", "x");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no user mallory"), "{}", stderr(&out));
    d.ok(&["start", "a"]);
    assert_eq!(shadow_stat(&d), "640:0:42");
    assert!(hash_is(&d, "a", "root", "stopped-pw"));
    assert!(
        !d.sh_ok("a", "cat /etc/shadow").contains("mallory"),
        "no line for a user the VPS lacks"
    );
    Ok(())
}

fn key_file(d: &Daemon, name: &str, text: &str) -> String {
    let path = d.state.path().join(name);
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn ssh_keys_are_installed_for_vps_root_on_create_and_added_by_set() -> anyhow::Result<()> {
    let d = Daemon::start("cred-keys")?;
    let key = key_file(&d, "id.pub", &format!("{KEY}\n"));
    d.ok(&["create", "a", "--ssh-key", &key]);
    d.ok(&["start", "a"]);
    assert_eq!(
        d.sh_ok(
            "a",
            "stat -c '%a %u %g' /root/.ssh /root/.ssh/authorized_keys"
        ),
        "700 0 0\n600 0 0"
    );
    assert_eq!(d.sh_ok("a", "cat /root/.ssh/authorized_keys"), KEY);
    // Added while it runs, the first kept, none twice.
    let both = key_file(&d, "both.pub", &format!("{KEY}\n{OTHER_KEY}\n"));
    d.ok(&["set", "a", "--ssh-key", &both]);
    assert_eq!(
        d.sh_ok("a", "cat /root/.ssh/authorized_keys"),
        format!("{KEY}\n{OTHER_KEY}")
    );
    assert_eq!(
        d.sh_ok("a", "stat -c '%a %u %g' /root/.ssh/authorized_keys"),
        "600 0 0"
    );

    // What is not a public key is refused, naming the file, and no VPS
    // is made.
    for (name, text, why) in [
        ("junk", "hello world\n", "line 1"),
        (
            "id",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n",
            "private key",
        ),
    ] {
        let file = key_file(&d, name, text);
        let err = d.fails(&["create", "b", "--ssh-key", &file]);
        assert!(err.contains(&file) && err.contains(why), "{err}");
        assert!(d.status("b").is_none(), "no VPS b after {err}");
    }
    Ok(())
}

/// VPS root makes /root/.ssh a symlink to a host path; with the VPS
/// stopped, `set --ssh-key` works on its layer as host root, and must
/// write nothing there.
#[test]
fn a_symlinked_ssh_directory_leads_set_ssh_key_nowhere() -> anyhow::Result<()> {
    let d = Daemon::start("cred-keys-link")?;
    let host_dir = d.state.path().join("host-ssh");
    fs::create_dir(&host_dir)?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    d.sh_ok(
        "a",
        &format!(
            "rm -rf /root/.ssh && ln -s {} /root/.ssh",
            host_dir.display()
        ),
    );
    d.ok(&["stop", "a"]);
    let key = key_file(&d, "id.pub", KEY);
    let err = d.fails(&["set", "a", "--ssh-key", &key]);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(
        fs::read_dir(&host_dir)?.count(),
        0,
        "nothing written outside"
    );
    let upper = d.root().join("vps/a/disk/upper/root/.ssh");
    assert!(
        fs::symlink_metadata(&upper)?.is_symlink(),
        "left as planted"
    );
    // Running, the change is made inside, by the same rules.
    d.ok(&["start", "a"]);
    let err = d.fails(&["set", "a", "--ssh-key", &key]);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(
        fs::read_dir(&host_dir)?.count(),
        0,
        "nothing written outside"
    );
    Ok(())
}
