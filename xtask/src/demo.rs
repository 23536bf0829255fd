//! `cargo xtask demo`: a daemon with two VPSs on the built-in busybox
//! template on this machine (private state, its own cgroup, cleaned up
//! afterwards), then the KSAL's LSM enforcement, natively where the kernel
//! allows BPF LSM programs and otherwise in the VM.
use std::{
    fs,
    io::Write as _,
    path::Path,
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::Context as _;

use crate::{host::Host, setup, vm};

fn partitions(vzhost: &Path, degraded: bool) -> anyhow::Result<()> {
    println!("\n==== Two VPSs from the busybox template, side by side ====");
    let host = Host::start(vzhost, "demo", degraded)?;
    host.show(&[
        "create",
        "web",
        "--hostname",
        "web.example",
        "--memory",
        "128M",
        "--pids",
        "30",
    ])?;
    host.show(&["create", "db", "--hostname", "db.example", "--cpus", "0.5"])?;
    host.show(&["start", "web"])?;
    host.show(&["start", "db"])?;
    host.show(&["list"])?;
    host.sh(
        "web",
        "echo \"I am $(hostname), PID 1 is $(cat /proc/1/comm)\"; ps",
    )?;
    host.sh("db", "echo secret > /root/data; ls -l /root/data")?;
    let seen = host.show(&["exec", "web", "--", "ls", "/root/data"])?;
    println!("(web cannot see db's file: exit {seen})");
    println!("\n-- each has its own address on the bridge; the KSAL keeps it to that address --");
    host.sh("db", "httpd -p 0.0.0.0:80 -h /root && echo db serves /root")?;
    let list: serde_json::Value = serde_json::from_str(&host.quiet(&["list", "-o", "json"])?)?;
    let db_ip = list
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "db"))
        .and_then(|v| v["ip"].as_str())
        .and_then(|ip| ip.split('/').next())
        .context("db has no address")?
        .to_owned();
    host.sh(
        "web",
        &format!("echo \"web fetched: $(wget -q -O - http://{db_ip}/data)\""),
    )?;
    host.sh("web", "ip -4 addr show eth0 | grep inet; nc -w 2 169.254.169.254 80 </dev/null; echo \"metadata address: exit $?\"")?;
    println!(
        "\n-- a policy dropped into the policies directory applies to the running web at once --"
    );
    let policy = format!(
        "# web may not reach db's web server\nselector:\n  names: [web]\nmode: enforce\nnetwork:\n  deny_egress:\n    - cidr: {db_ip}/32\n      port: 80\n"
    );
    println!("$ cat > policies.d/lockdown.yaml\n{policy}");
    fs::create_dir_all(host.policies())?;
    fs::write(host.policies().join("lockdown.yaml"), policy)?;
    std::thread::sleep(Duration::from_millis(300));
    host.show(&["policy", "list"])?;
    host.sh(
        "web",
        &format!("wget -q -O /dev/null http://{db_ip}/data; echo \"fetch from db: exit $?\""),
    )?;
    host.show(&["events", "web"])?;
    println!("\n-- a fork bomb in web stops at its pids limit of 30; db is unaffected --");
    host.sh(
        "web",
        "i=0; while [ $i -lt 100 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null",
    )?;
    host.sh("db", "echo db still starts processes: $(echo ok)")?;
    host.show(&["list"])?;
    host.show(&["stat", "web"])?;
    host.show(&["restart", "web"])?;
    host.show(&["list"])?;
    Ok(())
}

/// A Debian VPS booting its own systemd, and a real OpenSSH client
/// logging in to it with the password `vzhost passwd` set.
fn debian(vzhost: &Path, degraded: bool) -> anyhow::Result<()> {
    println!("\n==== A Debian VPS: systemd, sshd, a login over ssh ====");
    let image = crate::images::ensure_debian(vzhost)?;
    let host = Host::start(vzhost, "demo-debian", degraded)?;
    let template = image.dir.to_str().context("UTF-8 path")?;
    host.show(&["template", "import", "debian", template])?;
    host.show(&["template", "list"])?;
    let ip = "10.213.0.30";
    host.show(&[
        "create",
        "shop",
        "--template",
        "debian",
        "--ip",
        ip,
        "--hostname",
        "shop.example",
    ])?;
    println!("$ echo '********' | vzhost passwd shop root");
    let mut passwd = host
        .cmd(&["passwd", "shop", "root"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    passwd
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"demo-password\n")?;
    anyhow::ensure!(passwd.wait()?.success(), "vzhost passwd failed");
    let started = std::time::Instant::now();
    host.show(&["start", "shop"])?;
    host.await_sshd(ip, Duration::from_secs(120))?;
    println!(
        "(sshd answered {:.2} s after `vzhost start`)",
        started.elapsed().as_secs_f64()
    );
    let askpass = host.state.join("askpass");
    fs::write(&askpass, "#!/bin/sh\necho demo-password\n")?;
    fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let login = format!("root@{ip}");
    let remote = "echo \"logged in to $(hostname) as $(id -un); PID 1 is $(cat /proc/1/comm)\"; \
                  . /etc/os-release; echo \"$PRETTY_NAME\"; \
                  echo \"systemd says: $(systemctl is-system-running --wait)\"; \
                  systemctl list-units --type=service --state=running --no-legend --plain | cut -d' ' -f1";
    println!("$ ssh {login} '...'   (password authentication, from the host)");
    let pid = host.daemon_pid().context("the daemon runs")?.to_string();
    let status = Command::new("nsenter")
        .args(["-t", &pid, "-n", "ssh", "-F", "/dev/null"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "LogLevel=ERROR",
        ])
        .args([&login, remote])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .stdin(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "the ssh login failed");
    println!("$ vzhost console shop --log | tail -n 12");
    let log = host.quiet(&["console", "shop", "--log"])?;
    let tail: Vec<&str> = log.lines().rev().take(12).collect();
    for line in tail.into_iter().rev() {
        println!("{line}");
    }
    let stopped = std::time::Instant::now();
    host.show(&["stop", "shop"])?;
    println!(
        "(systemd halted cleanly in {:.2} s)",
        stopped.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn run() -> anyhow::Result<ExitCode> {
    setup::ensure()?;
    let artifacts = vm::Artifacts::build()?;
    println!("==== vzhost doctor on this host ====");
    // doctor exits non-zero when a feature is missing; the demo goes on.
    let doctor = Command::new(&artifacts.vzhost)
        .args(["doctor", "-o", "json"])
        .output()?;
    let _ = Command::new(&artifacts.vzhost).arg("doctor").status();
    let lsm_here = serde_json::from_slice::<serde_json::Value>(&doctor.stdout)
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|c| c["name"] == "bpf-lsm-load")
                .map(|c| c["ok"] == true)
        })
        .unwrap_or(false);

    partitions(&artifacts.vzhost, !lsm_here)?;
    debian(&artifacts.vzhost, !lsm_here)?;

    let demo = "/vm/tests/integration --test-threads=1 --nocapture lsm::escape::escape_attempts";
    if lsm_here {
        println!("\n==== KSAL escape attempts from a VPS (this host runs BPF LSM programs) ====");
        let test = artifacts
            .tests
            .iter()
            .find(|(n, _)| n == "integration")
            .context("integration test binary")?;
        let status = Command::new(&test.1)
            .args([
                "--test-threads=1",
                "--nocapture",
                "lsm::escape::escape_attempts",
            ])
            .status()?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!(
        "\n==== KSAL escape attempts from a VPS, in the VM: this host refuses BPF LSM programs ===="
    );
    let args = vm::RunArgs::shell(
        "6.12",
        600,
        format!("echo '$ vzhost doctor'; vzhost doctor; echo; {demo}"),
    );
    let outcome = vm::boot(&args, &artifacts, &mut |l| println!("[vm] {l}"))?;
    Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8))
}
