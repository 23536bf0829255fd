//! `cargo xtask setup`: install what the build and the tests need. Each step
//! checks first and does nothing when already done, so a second run on a
//! ready machine takes seconds. As non-root it prints the commands instead.
use std::process::{Command, ExitCode};

use anyhow::Context as _;

use crate::{kernels, shell};

/// Debian packages the build, the VM and the tests use.
pub const PACKAGES: &[&str] = &[
    // bpf-linker against LLVM 22
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // the VM
    "qemu-system-x86",
    "busybox-static",
    "xz-utils",
    // tests: filesystems, networking, modules
    "e2fsprogs",
    "xfsprogs",
    "iproute2",
    "kmod",
    // the static probe the tests run inside busybox VPSs
    "libc6-dev",
    // optional NAT for VPSs
    "nftables",
    // The real Prometheus server (and promtool) the metrics tests scrape with.
    "prometheus",
    // The peer the benchmarks measure vzhost against.
    "lxc",
    // Debian templates (`vzhost template create debian`) and the test image.
    "debootstrap",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

struct Step {
    what: &'static str,
    done: fn() -> bool,
    commands: fn() -> Vec<Vec<String>>,
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| (*s).to_owned()).collect()
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn has_rust_src() -> bool {
    Command::new("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
}

fn has_bpf_linker() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

fn steps() -> Vec<Step> {
    vec![
        Step {
            what: "Debian packages",
            done: || missing_packages().is_empty(),
            commands: || {
                let mut install = strings(&["apt-get", "install", "-y", "--no-install-recommends"]);
                install.extend(missing_packages().iter().map(|p| (*p).to_owned()));
                vec![strings(&["apt-get", "update"]), install]
            },
        },
        Step {
            what: "nightly rust-src (for -Z build-std=core)",
            done: has_rust_src,
            commands: || {
                // Adds the component to the nightly already installed, without
                // moving it to a newer date.
                vec![strings(&[
                    "rustup",
                    "component",
                    "add",
                    "--toolchain",
                    "nightly",
                    "rust-src",
                ])]
            },
        },
        Step {
            what: "bpf-linker built against LLVM 22",
            done: has_bpf_linker,
            commands: || {
                vec![strings(&[
                    "env",
                    "LLVM_PREFIX=/usr/lib/llvm-22",
                    "cargo",
                    "install",
                    "--force",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])]
            },
        },
        Step {
            what: "VM kernels (Debian cloud 6.1 and 6.12)",
            done: || kernels::SERIES.iter().all(|(s, _)| kernels::is_cached(s)),
            // Downloaded by kernels::ensure below, not by a shell command.
            commands: Vec::new,
        },
    ]
}

pub fn run() -> anyhow::Result<ExitCode> {
    ensure()?;
    Ok(ExitCode::SUCCESS)
}

/// Bring the machine up to what the project needs.
pub fn ensure() -> anyhow::Result<()> {
    let root = shell::is_root();
    for step in steps() {
        if (step.done)() {
            eprintln!("xtask setup: {}: ready", step.what);
            continue;
        }
        let commands = (step.commands)();
        if !root {
            eprintln!("xtask setup: {}: missing; as root, run:", step.what);
            for c in &commands {
                eprintln!("    {}", c.join(" "));
            }
            if commands.is_empty() {
                eprintln!("    cargo xtask setup");
            }
            continue;
        }
        eprintln!("xtask setup: {}: installing", step.what);
        for c in &commands {
            let mut cmd = Command::new(&c[0]);
            cmd.args(&c[1..]).env("DEBIAN_FRONTEND", "noninteractive");
            shell::run(&mut cmd).with_context(|| {
                format!(
                    "setup step '{}' failed; fix the error above and run `cargo xtask setup` again",
                    step.what
                )
            })?;
        }
        if commands.is_empty() {
            for (series, _) in kernels::SERIES {
                kernels::ensure(series)
                    .with_context(|| format!("setup step '{}' failed for {series}", step.what))?;
            }
        }
        anyhow::ensure!(
            (step.done)(),
            "setup step '{}' ran but is still not complete",
            step.what
        );
    }
    Ok(())
}
