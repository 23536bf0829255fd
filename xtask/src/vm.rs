//! `cargo xtask vm run`: boot a Debian cloud kernel under qemu (TCG) from an
//! initramfs holding busybox, the freshly built vzhost, the test binaries,
//! their shared libraries and the modules they need; run one command as
//! root; power off; exit with the command's status.
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::{cpio::Archive, kernels, shell};

const BEGIN: &str = "@@VZHOST-VM-BEGIN@@";
const EXIT_PREFIX: &str = "@@VZHOST-VM-EXIT=";

#[derive(Subcommand)]
pub enum VmCommand {
    /// Boot the VM, run CMD as root, print its output, exit with its status.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Kernel series to boot.
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// Files or directories to place under /mnt/include in the guest.
    #[arg(long)]
    pub include: Vec<PathBuf>,
    /// Kill the guest if CMD has not finished after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Also print the guest kernel's boot messages.
    #[arg(long)]
    pub verbose: bool,
    /// The command to run in the guest.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

pub fn run(command: VmCommand) -> anyhow::Result<ExitCode> {
    match command {
        VmCommand::Run(args) => {
            let artifacts = Artifacts::build()?;
            let outcome = boot(&args, &artifacts, &mut |line| println!("{line}"))?;
            Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8))
        }
    }
}

/// Binaries to carry into the guest.
pub struct Artifacts {
    pub vzhost: PathBuf,
    /// Integration test binaries, by target name.
    pub tests: Vec<(String, PathBuf)>,
}

impl Artifacts {
    /// Build vzhost and the integration tests (incremental: quick when fresh).
    pub fn build() -> anyhow::Result<Self> {
        let root = shell::workspace_root();
        shell::run(
            Command::new("cargo")
                .args(["build", "--quiet", "--package", "vzhost", "--bin", "vzhost"])
                .current_dir(&root),
        )?;
        let json = shell::output(
            Command::new("cargo")
                .args([
                    "test",
                    "--quiet",
                    "--package",
                    "vzhost-tests",
                    "--no-run",
                    "--message-format=json",
                ])
                .current_dir(&root),
        )?;
        let mut tests = Vec::new();
        for line in json.lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
                continue;
            }
            if let (Some(name), Some(exe)) =
                (msg["target"]["name"].as_str(), msg["executable"].as_str())
            {
                tests.push((name.to_owned(), PathBuf::from(exe)));
            }
        }
        Ok(Self {
            vzhost: root.join("target/debug/vzhost"),
            tests,
        })
    }
}

impl RunArgs {
    /// Run `script` with sh on `kernel`, killed after `timeout` seconds.
    pub fn shell(kernel: &str, timeout: u64, script: String) -> Self {
        Self {
            kernel: kernel.to_owned(),
            include: Vec::new(),
            timeout,
            verbose: false,
            cmd: vec!["sh".into(), "-c".into(), script],
        }
    }
}

pub struct Outcome {
    pub exit_code: i32,
}

/// Boot the guest, run `args.cmd`, hand each line of its output to `sink`.
pub fn boot(
    args: &RunArgs,
    artifacts: &Artifacts,
    sink: &mut dyn FnMut(&str),
) -> anyhow::Result<Outcome> {
    let kernel = kernels::ensure(&args.kernel)?;
    let started = Instant::now();
    let initrd = initramfs(&kernel, artifacts, &args.include, &args.cmd)?;
    let dir = shell::workspace_root().join("target/vm");
    std::fs::create_dir_all(&dir)?;
    // Per process and kernel: the test matrix boots its kernels side by side.
    let tag = format!("{}-{}", std::process::id(), args.kernel);
    let initrd_path = dir.join(format!("initramfs-{tag}.cpio"));
    std::fs::write(&initrd_path, initrd)
        .with_context(|| format!("write {}", initrd_path.display()))?;
    let disk = dir.join(format!("scratch-{tag}.img"));
    let result =
        make_scratch_disk(&disk).and_then(|()| run_qemu(args, &kernel, &initrd_path, &disk, sink));
    let _ = std::fs::remove_file(&initrd_path);
    let _ = std::fs::remove_file(&disk);
    let outcome = result?;
    eprintln!(
        "xtask: vm {} ({}) finished in {:.1}s with exit status {}",
        args.kernel,
        kernel.package,
        started.elapsed().as_secs_f64(),
        outcome.exit_code
    );
    Ok(outcome)
}

/// A sparse, freshly made ext4 image for the guest's /scratch.
fn make_scratch_disk(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.set_len(SCRATCH_BYTES)?;
    drop(f);
    shell::run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(path))
        .context("making the VM's scratch disk (install e2fsprogs)")
}

const SCRATCH_BYTES: u64 = 4 << 30;

fn run_qemu(
    args: &RunArgs,
    kernel: &kernels::Kernel,
    initrd: &Path,
    disk: &Path,
    sink: &mut dyn FnMut(&str),
) -> anyhow::Result<Outcome> {
    let mut qemu = Command::new("qemu-system-x86_64");
    // Single-threaded TCG: with one host thread per vCPU the guest's live text
    // patching (jump labels, BPF trampolines) races and can Oops the guest.
    qemu.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
    ])
    .args([
        "-nodefaults",
        "-nic",
        "none",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-serial", "stdio"])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .arg("-drive")
    .arg(format!("file={},if=virtio,format=raw", disk.display()));
    // The cached Debian test image, read-only, when it is built (`cargo
    // xtask test` builds it): on a disk, not in the guest's RAM.
    if let Some(image) = crate::images::Paths::built_ext4() {
        qemu.arg("-drive").arg(format!(
            "file={},if=virtio,format=raw,readonly=on",
            image.display()
        ));
    }
    qemu.arg("-append")
        .arg("console=ttyS0 rdinit=/init panic=-1 quiet loglevel=1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = qemu
        .spawn()
        .context("cannot start qemu-system-x86_64; run `cargo xtask setup`")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx_err.send(format!("qemu: {line}"));
        }
    });

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut in_cmd = false;
    let mut exit_code = None;
    let mut boot_log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                if let Some(code) = line
                    .strip_prefix(EXIT_PREFIX)
                    .and_then(|r| r.strip_suffix("@@"))
                {
                    exit_code = code.trim().parse().ok();
                    in_cmd = false;
                } else if line.contains(BEGIN) {
                    in_cmd = true;
                } else if in_cmd || args.verbose || line.starts_with("qemu: ") {
                    sink(&line);
                } else {
                    boot_log.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the VM did not finish within {}s; killed it (raise --timeout, or run with --verbose to see the guest)",
                    args.timeout
                );
            }
        }
    }
    let _ = child.wait();
    match exit_code {
        Some(exit_code) => Ok(Outcome { exit_code }),
        None => {
            let tail: Vec<_> = boot_log.iter().rev().take(30).rev().cloned().collect();
            bail!(
                "the VM stopped without reporting the command's exit status (guest crash or panic?); last guest output:\n{}",
                tail.join("\n")
            )
        }
    }
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root VZHOST_IN_VM=1
# pivot_root cannot leave the initramfs (rootfs has no parent mount), so
# re-root onto a bind mount of it first, as a real host's root would be.
if [ ! -e /.vm-rebased ]; then
  mkdir -p /vmroot && mount --rbind / /vmroot && touch /.vm-rebased
  cd /vmroot && mount --move . / && exec chroot . /init
fi
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /var/lib /var/tmp
while read -r m; do insmod "/vm/modules/$m.ko" || echo "vm-init: insmod $m failed"; done < /vm/modules.order
ip link set lo up
hostname vzhost-vm
# A real ext4 disk for state: tmpfs cannot be idmapped before Linux 6.3.
if [ -b /dev/vda ]; then
  mkdir -p /scratch && mount -t ext4 /dev/vda /scratch && export TMPDIR=/scratch
fi
# The Debian test image, when attached (xtask/src/images.rs).
if [ -b /dev/vdb ]; then
  mkdir -p /images/debian-bookworm
  mount -t ext4 -o ro,noload /dev/vdb /images/debian-bookworm || echo "vm-init: mount of the image failed"
fi
echo "@@VZHOST-VM-BEGIN@@"
cd /
sh /vm/cmd < /dev/null
echo "@@VZHOST-VM-EXIT=$?@@"
sync
poweroff -f
"#;

/// Host programs the tests use in the guest (disk limits need filesystems).
const HOST_TOOLS: &[&str] = &[
    "/usr/sbin/mke2fs",
    "/usr/sbin/resize2fs",
    "/usr/sbin/mkfs.xfs",
    "/usr/sbin/nft",
    "/usr/bin/ip",
    // Template import keeps xattrs and reports what it cannot keep: GNU
    // cp and tar do, busybox's do not (they come first on the PATH).
    "/usr/bin/cp",
    "/usr/bin/tar",
    // The real OpenSSH client that logs in to Debian VPSs.
    "/usr/bin/ssh",
];

fn initramfs(
    kernel: &kernels::Kernel,
    artifacts: &Artifacts,
    includes: &[PathBuf],
    cmd: &[String],
) -> anyhow::Result<Vec<u8>> {
    let mut a = Archive::default();
    for d in [
        "proc", "sys", "dev", "tmp", "run", "root", "mnt", "etc", "var",
    ] {
        a.dir(d);
    }
    a.file("init", 0o755, INIT.as_bytes());
    a.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    a.file("etc/group", 0o644, b"root:x:0:\n");
    let quoted: Vec<_> = cmd.iter().map(|c| shell_quote(c)).collect();
    a.file(
        "vm/cmd",
        0o755,
        format!("{}\n", quoted.join(" ")).as_bytes(),
    );

    let busybox = Path::new("/bin/busybox");
    let bb = std::fs::read(busybox)
        .context("read /bin/busybox; run `cargo xtask setup` (busybox-static)")?;
    a.file("bin/busybox", 0o755, &bb);
    let applets = shell::output(Command::new(busybox).arg("--list-full"))?;
    for applet in applets
        .lines()
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
    {
        a.symlink(applet, "/bin/busybox");
    }

    let mut binaries = vec![("usr/local/bin/vzhost".to_owned(), artifacts.vzhost.clone())];
    for tool in HOST_TOOLS {
        binaries.push((tool.trim_start_matches('/').to_owned(), PathBuf::from(tool)));
    }
    a.symlink("usr/sbin/mkfs.ext4", "mke2fs");
    if let Ok(conf) = std::fs::read("/etc/mke2fs.conf") {
        a.file("etc/mke2fs.conf", 0o644, &conf);
    }
    for (name, path) in &artifacts.tests {
        binaries.push((format!("vm/tests/{name}"), path.clone()));
    }
    let mut libs = BTreeSet::new();
    for (dest, path) in &binaries {
        let body = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        a.file(dest, 0o755, &body);
        libs.extend(shared_libraries(path)?);
    }
    for lib in libs {
        let body = std::fs::read(&lib).with_context(|| format!("read {lib}"))?;
        a.file(&lib, 0o755, &body);
    }

    let mut order = String::new();
    for (name, body) in kernel.modules(kernels::VM_MODULES)? {
        a.file(&format!("vm/modules/{name}.ko"), 0o644, &body);
        order.push_str(&name);
        order.push('\n');
    }
    a.file("vm/modules.order", 0o644, order.as_bytes());

    a.dir("mnt/include");
    for inc in includes {
        let name = inc
            .file_name()
            .with_context(|| format!("--include {} has no file name", inc.display()))?;
        add_tree(
            &mut a,
            inc,
            &format!("mnt/include/{}", name.to_string_lossy()),
        )?;
    }
    Ok(a.finish())
}

fn add_tree(a: &mut Archive, src: &Path, dest: &str) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(src)
        .with_context(|| format!("--include {}: cannot read it", src.display()))?;
    if meta.is_dir() {
        a.dir(dest);
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let name = entry.file_name();
            add_tree(
                a,
                &entry.path(),
                &format!("{dest}/{}", name.to_string_lossy()),
            )?;
        }
    } else if meta.is_symlink() {
        let target = std::fs::read_link(src)?;
        a.symlink(dest, &target.to_string_lossy());
    } else {
        use std::os::unix::fs::PermissionsExt as _;
        a.file(
            dest,
            meta.permissions().mode() & 0o7777,
            &std::fs::read(src)?,
        );
    }
    Ok(())
}

/// Absolute paths of the shared libraries (and loader) `binary` needs.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_guest_shell() {
        assert_eq!(shell_quote("exit 3"), "'exit 3'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
