//! Benchmarks that need the VM (BPF LSM), run by `cargo xtask bench` with
//! `--ignored bench::`; ignored in test runs. Each prints its report
//! section between BENCH-MD-BEGIN and BENCH-MD-END.
use std::{
    fs,
    io::Read as _,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    time::{Duration, Instant},
};

use ksal_common::{VpsEntry, access, guard, mode};
use vzhost::ksal::Ksal;
use vzhost_tests::{CgroupGuard, Daemon, Scratch};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `ops` iterations of `op` in a child process placed in `cgroup`,
/// as an unprivileged uid (as VPS tasks are on the host); ns per op.
fn ns_per_op(cgroup: &CgroupGuard, ops: u64, op: fn() -> std::io::Result<()>) -> f64 {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(cgroup.path.join("cgroup.procs"))
        .unwrap();
    let (mut rx, tx) = std::io::pipe().unwrap();
    let (procs_fd, tx_fd) = (procs.as_raw_fd(), tx.as_raw_fd());
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: raw syscalls and the measured loop between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1
                || libc::setresuid(1_000_000, 1_000_000, 1_000_000) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Warm up first: the first cgroup measured would otherwise
            // pay for the cold caches of all.
            for _ in 0..ops / 10 {
                op()?;
            }
            let start = Instant::now();
            for _ in 0..ops {
                op()?;
            }
            let ns = (start.elapsed().as_nanos() as u64 / ops).to_ne_bytes();
            libc::write(tx_fd, ns.as_ptr().cast(), 8);
            Ok(())
        });
    }
    let status = cmd.status().expect("the measuring child");
    assert!(status.success());
    drop((tx, procs));
    let mut buf = [0u8; 8];
    rx.read_exact(&mut buf).unwrap();
    u64::from_ne_bytes(buf) as f64
}

const FILE: &str = "/tmp/vzhost-bench-file";

fn open_close() -> std::io::Result<()> {
    fs::File::open(FILE).map(drop)
}

fn connect_close() -> std::io::Result<()> {
    std::net::TcpStream::connect(("127.0.0.1", PORT)).map(drop)
}

const PORT: u16 = 47_611;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a benchmark: cargo xtask bench"]
fn ksal_overhead() -> anyhow::Result<()> {
    let ops = env_or("VZHOST_BENCH_OPS", 2_000);
    fs::write(FILE, "x")?;
    let scratch = Scratch::new()?;
    let other = scratch.file("ruled", "secret")?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", PORT))?;
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let (mut open_base, mut open_ksal, mut open_no_files, mut conn_base, mut conn_ksal) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let guards = guard::MOUNT_TYPES
        | guard::MODULE_AUTOLOAD
        | guard::BPF
        | guard::PERF_EVENTS
        | guard::RAW_SOCKETS
        | guard::PACKET_SOCKETS;
    for round in 0..5 {
        // Without: no KSAL program loaded anywhere.
        let bare = CgroupGuard::new(&format!("bench-bare-{round}"))?;
        open_base.push(ns_per_op(&bare, ops, open_close));
        conn_base.push(ns_per_op(&bare, ops / 10, connect_close));
        // With: every program, a VPS registered with all guards, rules
        // in the maps (none of them matching what the loop does).
        let vps = CgroupGuard::new(&format!("bench-vps-{round}"))?;
        let mut ksal = Ksal::load(vps.level, None)?;
        let entry = VpsEntry {
            vps_id: 9,
            mode: mode::ENFORCE,
            guards: guards | guard::FILE_RULES,
            _pad: 0,
            caps_denied: 1 << 16,
            families_allowed: 0,
        };
        ksal.register_entry(vps.id, entry)?;
        ksal.deny_file(9, &other, access::ANY, 100)?;
        ksal.attach_guards(&vps.path, vps.id, 9, (None, None))?;
        ksal.deny_egress(9, std::net::Ipv4Addr::new(192, 0, 2, 0), 24, 0, 101)?;
        open_ksal.push(ns_per_op(&vps, ops, open_close));
        conn_ksal.push(ns_per_op(&vps, ops / 10, connect_close));
        // The same VPS under a policy with no file rules: its file hooks
        // end at the VPS lookup.
        let no_files = VpsEntry { guards, ..entry };
        ksal.register_entry(vps.id, no_files)?;
        open_no_files.push(ns_per_op(&vps, ops, open_close));
        drop(ksal);
    }
    let (ob, ok, on, cb, ck) = (
        median(open_base),
        median(open_ksal),
        median(open_no_files),
        median(conn_base),
        median(conn_ksal),
    );
    println!("BENCH-MD-BEGIN");
    println!(
        "| open + close, ns per op ({ops} per round, 5 rounds, medians) | {ob:.0} | {ok:.0} | {:.3} |",
        ok / ob
    );
    println!(
        "| open + close, the VPS's policy without file rules | {ob:.0} | {on:.0} | {:.3} |",
        on / ob
    );
    println!(
        "| TCP connect + close on loopback, ns per op ({} per round) | {cb:.0} | {ck:.0} | {:.3} |",
        ops / 10,
        ck / cb
    );
    println!();
    let met = |ratio: f64, target: f64| {
        if ratio <= target {
            "**met**"
        } else {
            "**missed**"
        }
    };
    println!(
        "open/close ratio with a file rule {:.3}, without file rules {:.3}; target at most 1.05: {}",
        ok / ob,
        on / ob,
        met(ok / ob, 1.05)
    );
    println!(
        "TCP connect ratio {:.3}; target at most 1.10: {}",
        ck / cb,
        met(ck / cb, 1.10)
    );
    println!("BENCH-MD-END");
    Ok(())
}

#[test]
#[ignore = "a benchmark: cargo xtask bench"]
fn density_under_the_default_policy() -> anyhow::Result<()> {
    let n = env_or("VZHOST_BENCH_N", 5) as usize;
    let d = Daemon::start("bench-density")?;
    let mut per = Vec::new();
    for i in 0..n {
        let name = format!("v{i}");
        let t = Instant::now();
        d.ok(&["create", &name, "--stop-timeout", "0"]);
        d.ok(&["start", &name]);
        per.push(t.elapsed().as_secs_f64());
    }
    let degraded = d.list().iter().filter(|v| v["degraded"] == true).count();
    assert_eq!(degraded, 0, "the full default policy, LSM hooks and all");
    let mut exec = Vec::new();
    for i in 0..n.min(10) {
        let t = Instant::now();
        d.ok(&["exec", &format!("v{i}"), "--", "true"]);
        exec.push(t.elapsed().as_secs_f64());
    }
    let first = per.iter().take(10).sum::<f64>() / per.len().min(10) as f64;
    let last = per.iter().rev().take(10).sum::<f64>() / per.len().min(10) as f64;
    println!("BENCH-MD-BEGIN");
    println!();
    println!(
        "{n} VPSs under the full default policy (LSM hooks, guards, pinned), one after another in the VM: \
         create + start {:.0} ms per VPS for the first 10, {:.0} ms for the last 10; `exec true` {:.0} ms (median).",
        first * 1e3,
        last * 1e3,
        median(exec) * 1e3
    );
    println!("BENCH-MD-END");
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
