//! Disk limits: a VPS that fills its disk gets ENOSPC while the host and
//! its neighbours keep their space; a project quota where the filesystem
//! has one, an image of its own otherwise.
use std::{fs, path::Path, process::Command};

use vzhost_tests::{Daemon, in_vm, stderr};

fn backend(d: &Daemon, vps: &str) -> serde_json::Value {
    let cfg: serde_json::Value = serde_json::from_slice(
        &fs::read(d.root().join("vps").join(vps).join("config.json")).unwrap(),
    )
    .unwrap();
    cfg["disk"].clone()
}

/// Fill `vps`'s disk; returns the failing dd's stderr.
fn fill(d: &Daemon, vps: &str, mib: u32) -> String {
    let out = d.sh(
        vps,
        &format!("dd if=/dev/zero of=/root/fill bs=1M count={mib} 2>&1; sync"),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert!(
        text.contains("No space left"),
        "{vps} should run out of space: {text}"
    );
    text
}

fn neighbours_keep_their_space(d: &Daemon, host_dir: &Path) {
    d.sh_ok(
        "b",
        "dd if=/dev/zero of=/root/ok bs=1M count=8 2>/dev/null && echo done",
    );
    fs::write(host_dir.join("host-still-writes"), vec![0u8; 1 << 20])
        .expect("the host can still write");
}

#[test]
fn disk_limit_gives_enospc_while_neighbours_keep_space() -> anyhow::Result<()> {
    let d = Daemon::start("disk")?;
    d.ok(&["create", "a", "--disk", "32M"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    let kind = backend(&d, "a");
    assert!(
        kind == "image" || kind.get("project_quota").is_some(),
        "{kind}"
    );
    fill(&d, "a", 64);
    neighbours_keep_their_space(&d, d.state.path());
    d.sh_ok("a", "rm /root/fill");
    if kind == "image" {
        let err = d.fails(&["set", "a", "--disk", "96M"]);
        assert!(err.contains("keeps the size"), "{err}");
        // Space freed inside the VPS is usable again.
        d.sh_ok(
            "a",
            "dd if=/dev/zero of=/root/again bs=1M count=8 2>/dev/null && echo ok",
        );
    }
    d.ok(&["destroy", "--force", "a"]);
    assert!(!d.root().join("vps/a").exists());
    Ok(())
}

/// An XFS filesystem with project quotas, loop-mounted for the test.
pub(crate) struct XfsMount {
    dir: tempfile::TempDir,
    image: std::path::PathBuf,
}

impl XfsMount {
    /// None (the skip recorded for `test`) where the kernel cannot.
    pub(crate) fn new(test: &str) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let image = dir.path().join("xfs.img");
        fs::File::create(&image)?.set_len(512 << 20)?;
        let mkfs = Command::new("mkfs.xfs")
            .args(["-q", "-f"])
            .arg(&image)
            .output()?;
        anyhow::ensure!(mkfs.status.success(), "mkfs.xfs: {}", stderr(&mkfs));
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt)?;
        let mount = Command::new("mount")
            .args(["-t", "xfs", "-o", "loop,prjquota"])
            .arg(&image)
            .arg(&mnt)
            .output()?;
        if !mount.status.success() {
            if in_vm() {
                anyhow::bail!(
                    "XFS with project quotas must mount in the VM: {}",
                    stderr(&mount)
                );
            }
            vzhost_tests::skip(
                test,
                &format!(
                    "this kernel cannot mount XFS with project quotas (runs in the VM): {}",
                    stderr(&mount).trim()
                ),
            );
            return Ok(None);
        }
        Ok(Some(Self { dir, image }))
    }

    pub(crate) fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path(), nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_file(&self.image);
    }
}

#[test]
fn disk_project_quota_on_xfs_gives_enospc() -> anyhow::Result<()> {
    let Some(xfs) = XfsMount::new("disk_project_quota_on_xfs_gives_enospc")? else {
        return Ok(());
    };
    {
        let d = Daemon::start_in("xfsq", &xfs.path())?;
        d.ok(&["create", "a", "--disk", "32M"]);
        d.ok(&["create", "b"]);
        assert!(
            backend(&d, "a").get("project_quota").is_some(),
            "{}",
            backend(&d, "a")
        );
        d.ok(&["start", "a"]);
        d.ok(&["start", "b"]);
        fill(&d, "a", 64);
        neighbours_keep_their_space(&d, &xfs.path());
        // A live change of the quota takes effect at once.
        d.sh_ok("a", "rm -f /root/fill");
        d.ok(&["set", "a", "--disk", "80M"]);
        d.sh_ok(
            "a",
            "dd if=/dev/zero of=/root/more bs=1M count=48 2>/dev/null && echo ok",
        );
    }
    Ok(())
}
