//! The escape-attempt suite: from inside a running VPS, as its root, every
//! way out we know of. Each one the KSAL guards is denied in enforce mode
//! with an event naming VPS, hook and rule, allowed and recorded in audit
//! mode, and still works from the host. What the kernel already refuses a
//! VPS before any LSM hook runs (it lacks the capability in the host's
//! user namespace, or cannot even name the target) is checked to stay
//! refused. Runs where BPF LSM works (the VM).
use std::{io, time::Duration};

use vzhost_tests::{Daemon, lsm_available};

const POLICY: &str = "mode: enforce
allow_degraded: false
files:
  deny:
    - path: /etc/secret
mounts:
  allow_types: [tmpfs]
  remount_read_only: true
kernel:
  module_autoload: deny
  bpf: deny
  perf_events: deny
network:
  raw_sockets: deny
  packet_sockets: deny
capabilities:
  deny: [CAP_NET_ADMIN]
";

fn errno(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// socket(family, type, protocol), closed again.
fn socket(family: i32, kind: i32, protocol: i32) -> io::Result<()> {
    // SAFETY: plain syscalls.
    let fd = unsafe { libc::socket(family, kind, protocol) };
    errno(fd.into())?;
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    Ok(())
}

/// bpf(BPF_PROG_GET_NEXT_ID): harmless, and reaches the LSM hook.
fn bpf_call() -> io::Result<()> {
    let attr = [0u8; 128];
    // SAFETY: the kernel reads `size` bytes of attr.
    match errno(unsafe { libc::syscall(libc::SYS_bpf, 11, attr.as_ptr(), attr.len()) }) {
        // No (more) programs is an answer too: the call was allowed.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// A software perf event on this task, user space only.
fn perf_call() -> io::Result<()> {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&9u64.to_ne_bytes()); // PERF_COUNT_SW_DUMMY
    attr[40..48].copy_from_slice(&((1u64 << 0) | (1 << 5) | (1 << 6)).to_ne_bytes()); // disabled, exclude_kernel, exclude_hv
    // SAFETY: a valid attr for the given size.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
    errno(fd)?;
    // SAFETY: our own fd.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// socket(AF_APPLETALK): a family no test kernel has loaded, so the
/// kernel asks for its module (then fails with EAFNOSUPPORT).
fn module_autoload() -> io::Result<()> {
    socket(5, libc::SOCK_DGRAM, 0)
}

fn finit_module() -> io::Result<()> {
    // SAFETY: fd -1 is never dereferenced by user space.
    errno(unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) })
}

fn kexec_reboot() -> io::Result<()> {
    // SAFETY: LINUX_REBOOT_CMD_KEXEC with the magic numbers; refused here.
    errno(unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_KEXEC,
            0,
        )
    })
}

/// Set the clock to what it says now.
fn settime() -> io::Result<()> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointers.
    errno(unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) }.into())?;
    // SAFETY: as above.
    errno(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }.into())
}

fn raw_socket() -> io::Result<()> {
    socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
}

fn packet_socket() -> io::Result<()> {
    socket(libc::AF_PACKET, libc::SOCK_RAW, 0)
}

/// The newest event of VPS `vps` from `hook`.
fn event(d: &Daemon, vps: &str, hook: &str) -> Option<serde_json::Value> {
    d.events(vps).into_iter().rev().find(|e| e["hook"] == hook)
}

fn expect_event(d: &Daemon, vps: &str, hook: &str, verdict: &str, rule: &str) {
    let e = event(d, vps, hook).unwrap_or_else(|| panic!("no {hook} event: {:?}", d.events(vps)));
    println!(
        "  event: vps={} hook={} rule={} verdict={} comm={}",
        e["vps"], e["hook"], e["rule"], e["verdict"], e["comm"]
    );
    assert_eq!(e["vps"], vps, "{e}");
    assert_eq!(e["verdict"], verdict, "{e}");
    assert_eq!(e["rule"], rule, "{e}");
}

/// VPS a running under POLICY (in `mode`), with /etc/secret in it, and
/// its neighbour b.
fn setup(name: &str, mode: &str) -> anyhow::Result<Daemon> {
    let d = Daemon::start(name)?;
    d.ok(&["create", "a"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    d.sh_ok("a", "echo s3cret >/etc/secret && mkdir -p /mnt/t");
    std::fs::create_dir_all(d.policies())?;
    std::fs::write(
        d.policies().join("default.yaml"),
        POLICY.replace("mode: enforce", &format!("mode: {mode}")),
    )?;
    // Applied to the running VPS by the watcher: a raw socket is then
    // recorded (denied or audited).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let _ = d.as_vps_root("a", raw_socket);
        if event(&d, "a", "socket_create").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the policy was never applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(d)
}

/// Attempts the KSAL guards, each with its hook and the rule that holds it.
type Attempt = (
    &'static str,
    fn() -> io::Result<()>,
    &'static str,
    &'static str,
);
const GUARDED: [Attempt; 4] = [
    ("bpf()", bpf_call, "bpf", "default:kernel.bpf"),
    (
        "perf_event_open()",
        perf_call,
        "perf_event_open",
        "default:kernel.perf_events",
    ),
    (
        "raw socket",
        raw_socket,
        "socket_create",
        "default:network.raw_sockets",
    ),
    (
        "packet socket",
        packet_socket,
        "socket_create",
        "default:network.packet_sockets",
    ),
];

/// Debian kernels refuse perf events to anyone without CAP_SYS_ADMIN at
/// paranoid level 3, before any LSM hook; at 2 (the upstream default) a
/// task may watch itself, so the hook decides. Restored on drop.
struct PerfParanoid(String);

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

impl PerfParanoid {
    fn upstream() -> Self {
        let was = std::fs::read_to_string(PARANOID).unwrap();
        std::fs::write(PARANOID, "2").unwrap();
        Self(was)
    }
}

impl Drop for PerfParanoid {
    fn drop(&mut self) {
        let _ = std::fs::write(PARANOID, self.0.trim());
    }
}

fn denied(r: io::Result<()>, what: &str) {
    let e = r.expect_err(&format!("{what}: succeeded inside the VPS"));
    println!("inside a, as root: {what}: {e}");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{what}: {e}");
}

#[test]
fn escape_attempts_are_denied_with_events_and_work_from_the_host() -> anyhow::Result<()> {
    if !lsm_available("escape_attempts_are_denied_with_events_and_work_from_the_host") {
        return Ok(());
    }
    let _paranoid = PerfParanoid::upstream();
    let d = setup("escape", "enforce")?;

    // Mounting a new proc or sysfs, or remounting something read-write.
    for fs in ["proc", "sysfs"] {
        let out = d.sh("a", &format!("mount -t {fs} {fs} /mnt/t"));
        assert!(!out.status.success(), "mount -t {fs} inside a");
        println!(
            "inside a: mount -t {fs}: {}",
            vzhost_tests::stderr(&out).trim()
        );
        expect_event(&d, "a", "sb_mount", "denied", "default:mounts.allow_types");
    }
    d.sh_ok("a", "mount -t tmpfs none /mnt/t && umount /mnt/t");
    assert!(!d.sh("a", "mount -o remount,rw /proc").status.success());
    expect_event(
        &d,
        "a",
        "sb_mount",
        "denied",
        "default:mounts.remount_read_only",
    );

    // A kernel module loaded on the VPS's behalf.
    assert!(d.as_vps_root("a", module_autoload).is_err());
    expect_event(
        &d,
        "a",
        "kernel_module_request",
        "denied",
        "default:kernel.module_autoload",
    );

    // bpf(), perf events, raw and packet sockets: denied inside, fine outside.
    for (what, call, hook, rule) in GUARDED {
        denied(d.as_vps_root("a", call), what);
        expect_event(&d, "a", hook, "denied", rule);
        call().unwrap_or_else(|e| panic!("{what} from the host: {e}"));
    }

    // A denied capability, though the VPS's own namespace grants it.
    let out = d.sh("a", "ip link set lo mtu 1300");
    assert!(!out.status.success(), "CAP_NET_ADMIN inside a");
    let e = event(&d, "a", "capable").expect("a capable event");
    assert_eq!(
        (e["rule"].as_str(), e["object"].as_u64()),
        (Some("default:capabilities.deny"), Some(12))
    );
    let host = d.host_run(&["ip", "link", "set", "lo", "mtu", "1300"])?;
    assert!(host.status.success(), "the same from the host");

    // A denied file by every other name.
    for (what, script) in [
        ("its path", "cat /etc/secret"),
        ("a symlink", "ln -s /etc/secret /tmp/s && cat /tmp/s"),
        ("a hard link", "ln /etc/secret /tmp/h && cat /tmp/h"),
        (
            "a bind mount",
            "touch /tmp/b && mount --bind /etc/secret /tmp/b && cat /tmp/b",
        ),
        ("/proc/self/root", "cat /proc/self/root/etc/secret"),
        ("a path relative to a directory", "cd /etc && cat ./secret"),
        ("a write", "echo x >>/etc/secret"),
    ] {
        let out = d.sh("a", script);
        assert!(!out.status.success(), "{what}: read inside a");
        println!(
            "inside a: /etc/secret by {what}: {}",
            vzhost_tests::stderr(&out).trim()
        );
        assert!(
            vzhost_tests::stderr(&out).contains("not permitted"),
            "{what}: {}",
            vzhost_tests::stderr(&out)
        );
        expect_event(&d, "a", "file_open", "denied", "default:files.deny[0]");
    }
    let pid = d.status("a").unwrap()["init_pid"].as_u64().unwrap();
    let from_host = std::fs::read_to_string(format!("/proc/{pid}/root/etc/secret"))?;
    assert_eq!(from_host, "s3cret\n", "the host reads it");

    // Refused by the kernel before any hook: no capability in the host's
    // user namespace, or nothing to name.
    for (what, call) in [
        ("finit_module()", finit_module as fn() -> io::Result<()>),
        ("kexec reboot", kexec_reboot),
        ("setting the clock", settime),
    ] {
        denied(d.as_vps_root("a", call), what);
    }
    let b_init = d.status("b").unwrap()["init_pid"].as_u64().unwrap();
    let daemon = d.pid().unwrap();
    for (what, script) in [
        ("reading the host's kernel log", "dmesg".to_owned()),
        ("mknod of a disk", "mknod /tmp/sda b 8 0".to_owned()),
        (
            "a host-global sysctl",
            "echo 3 >/proc/sys/vm/drop_caches".to_owned(),
        ),
        // Host and neighbour pids do not exist in the VPS's PID namespace.
        ("signalling b's init", format!("kill -9 {b_init}")),
        ("signalling the daemon", format!("kill -9 {daemon}")),
        (
            "ptrace of a host process",
            format!("cat /proc/{daemon}/environ"),
        ),
    ] {
        let out = d.sh("a", &format!("{script} >/dev/null"));
        assert!(!out.status.success(), "{what} succeeded inside a");
    }
    assert!(d.status("b").unwrap()["status"] == "running");

    // b, under the same policy, is its own VPS: nothing of a's is on b.
    assert!(d.events("b").is_empty(), "{:?}", d.events("b"));
    Ok(())
}

#[test]
fn audit_mode_allows_escape_attempts_and_records_them() -> anyhow::Result<()> {
    if !lsm_available("audit_mode_allows_escape_attempts_and_records_them") {
        return Ok(());
    }
    let _paranoid = PerfParanoid::upstream();
    let d = setup("escape-audit", "audit")?;
    // bpf() is left to the end: the kernel refuses it to a VPS anyway.
    for (what, call, hook, rule) in &GUARDED[1..] {
        d.as_vps_root("a", call)
            .unwrap_or_else(|e| panic!("{what} in audit mode: {e}"));
        expect_event(&d, "a", hook, "audited", rule);
    }
    // bpf() is recorded; the kernel itself then refuses a VPS the command.
    let _ = d.as_vps_root("a", bpf_call);
    expect_event(&d, "a", "bpf", "audited", "default:kernel.bpf");
    d.sh_ok("a", "mount -t proc proc /mnt/t && umount /mnt/t");
    expect_event(&d, "a", "sb_mount", "audited", "default:mounts.allow_types");
    d.sh_ok("a", "cat /etc/secret");
    expect_event(&d, "a", "file_open", "audited", "default:files.deny[0]");
    d.sh_ok("a", "ip link set lo mtu 1300");
    expect_event(&d, "a", "capable", "audited", "default:capabilities.deny");
    Ok(())
}
