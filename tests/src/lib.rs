//! Helpers for vzhost's integration tests: RAII guards for what the tests
//! create, running a process inside a cgroup, and feature gates that skip
//! on a host without a feature but never inside the test VM.
use std::{
    fs,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// Whether this process runs inside the `cargo xtask vm` guest.
pub fn in_vm() -> bool {
    std::env::var_os("VZHOST_IN_VM").is_some()
}

/// Whether BPF LSM programs can be loaded here. Inside the VM a missing
/// BPF LSM is a failure, never a skip.
pub fn lsm_available(test: &str) -> bool {
    match vzhost::ksal::probe_lsm() {
        Ok(()) => true,
        Err(e) if in_vm() => panic!("{test}: BPF LSM must work in the test VM: {e}"),
        Err(e) => {
            eprintln!("{test}: skipped on this host, runs in the VM: {e}");
            false
        }
    }
}

/// A cgroup v2 directory created under this process's own cgroup, removed
/// (with every process in it killed) on drop.
pub struct CgroupGuard {
    pub path: PathBuf,
    /// Its cgroup v2 id.
    pub id: u64,
    /// Its depth in the v2 hierarchy.
    pub level: u32,
}

impl CgroupGuard {
    /// A new child of the test process's own v2 cgroup.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let layout = vzhost::cgroup::Layout::detect()?;
        let own = vzhost::cgroup::v2_path_of(None)?;
        let parent = layout.unified_root()?.join(own.trim_start_matches('/'));
        let path = parent.join(format!("{name}-{}", std::process::id()));
        Self::create(path, vzhost::cgroup::depth(&own) + 1)
    }

    fn create(path: PathBuf, level: u32) -> anyhow::Result<Self> {
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let id = vzhost::cgroup::id_of(&path)?;
        Ok(Self { path, id, level })
    }

    /// A child cgroup inside this one (removed with it).
    pub fn child(&self, name: &str) -> anyhow::Result<Self> {
        Self::create(self.path.join(name), self.level + 1)
    }

    /// Run `argv` with the child process placed in this cgroup before exec.
    pub fn run(&self, argv: &[&str]) -> anyhow::Result<Output> {
        run_in_cgroup(&self.path, argv)
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(path).is_err() && Instant::now() < deadline && path.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `argv`, moving the child into the cgroup at `dir` before it execs.
pub fn run_in_cgroup(dir: &Path, argv: &[&str]) -> anyhow::Result<Output> {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .with_context(|| format!("open {}/cgroup.procs", dir.display()))?;
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only write(2) runs between fork and exec: async-signal-safe,
    // on an fd that stays open (owned by `procs`) until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writing process itself.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().with_context(|| format!("run {argv:?}"))?;
    drop(procs);
    Ok(out)
}

/// A scratch directory with a few files, removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn file(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        let mut f = fs::File::create(&path)?;
        f.write_all(contents.as_bytes())?;
        Ok(path)
    }
}

/// stderr of `out` as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
