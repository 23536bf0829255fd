//! The cached test image: a prepared Debian root directory, built once by
//! `vzhost template build` (never by the tests), and an ext4 image of it
//! that the VM gets as a read-only second disk, mounted by its init at
//! /images/debian-bookworm (where `vzhost_tests::debian_template()` looks
//! in the guest). Each is kept with the key
//! it was built for (release, packages, the prep code's version); a
//! matching key is a cache hit and costs two small reads.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::Context as _;

use crate::shell;

/// The Debian release the tests use.
pub const RELEASE: &str = "bookworm";
/// Packages beyond vzhost's own base list that the tests need.
const PACKAGES: &[&str] = &[];
/// The prep code, whose `VERSION` is part of the key.
const PREP_SOURCE: &str = "vzhost/src/rootfs/prep.rs";

/// Where the cached image is.
pub struct Paths {
    /// The prepared root directory (`VZHOST_DEBIAN_TEMPLATE`).
    pub dir: PathBuf,
    /// The same tree as an ext4 image, for the VM.
    pub ext4: PathBuf,
}

impl Paths {
    pub fn new() -> Self {
        // Beside the kernels, so a `cargo clean` or a new checkout keeps it.
        let images = std::env::var_os("VZHOST_IMAGE_CACHE")
            .map_or_else(|| PathBuf::from("/var/cache/vzhost/images"), PathBuf::from);
        Self {
            dir: images.join(format!("debian-{RELEASE}")),
            ext4: images.join(format!("debian-{RELEASE}.ext4")),
        }
    }

    fn key_of(path: &Path) -> PathBuf {
        let mut k = path.as_os_str().to_owned();
        k.push(".key");
        PathBuf::from(k)
    }

    /// Whether `path` was built for `key`.
    fn fresh(path: &Path, key: &str) -> bool {
        path.exists() && std::fs::read_to_string(Self::key_of(path)).is_ok_and(|k| k == key)
    }

    /// The ext4 image, if one is built (the VM attaches it when it is).
    pub fn built_ext4() -> Option<PathBuf> {
        let p = Self::new().ext4;
        Self::key_of(&p).exists().then_some(p)
    }
}

/// The prep code's version, from its source: `pub const VERSION: u32 = N;`.
fn prep_version(source: &str) -> Option<u32> {
    source.lines().find_map(|l| {
        l.trim()
            .strip_prefix("pub const VERSION: u32 = ")?
            .strip_suffix(';')?
            .parse()
            .ok()
    })
}

/// What the image is built for.
fn key(prep: u32) -> String {
    format!(
        "release={RELEASE} packages={} prep={prep}\n",
        PACKAGES.join(",")
    )
}

/// Remove `dir`, never into another filesystem (a failed build may have
/// left /proc mounted in it).
fn remove(dir: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    shell::run(
        Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(dir),
    )
    .with_context(|| format!("remove {} (a mount left inside? umount it)", dir.display()))
}

/// `cargo xtask images`: build vzhost, then the image if needed.
pub fn run() -> anyhow::Result<std::process::ExitCode> {
    let artifacts = crate::vm::Artifacts::build()?;
    let started = Instant::now();
    let paths = ensure_debian(&artifacts.vzhost)?;
    println!(
        "{}\n{}\n({:.3}s)",
        paths.dir.display(),
        paths.ext4.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Build what is missing or stale; a hit costs nothing.
pub fn ensure_debian(vzhost: &Path) -> anyhow::Result<Paths> {
    let paths = Paths::new();
    let source = shell::workspace_root().join(PREP_SOURCE);
    let prep = std::fs::read_to_string(&source)
        .ok()
        .as_deref()
        .and_then(prep_version)
        .with_context(|| format!("no `pub const VERSION: u32` in {}", source.display()))?;
    let key = key(prep);
    if !Paths::fresh(&paths.dir, &key) {
        build_dir(vzhost, &paths.dir, &key)?;
    }
    if !Paths::fresh(&paths.ext4, &key) {
        build_ext4(&paths.dir, &paths.ext4, &key)?;
    }
    Ok(paths)
}

/// Build into a temp directory and rename it into place when complete, so
/// an interrupted build is done again.
fn build_dir(vzhost: &Path, dir: &Path, key: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let parent = dir.parent().context("images directory")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".build-{}", std::process::id()));
    remove(&tmp)?;
    let mut cmd = Command::new(vzhost);
    cmd.args(["template", "build", "debian", "--release", RELEASE, "--dir"])
        .arg(&tmp);
    if !PACKAGES.is_empty() {
        cmd.arg("--packages").arg(PACKAGES.join(","));
    }
    eprintln!("xtask: building the Debian {RELEASE} test image (once; cached)");
    shell::run(&mut cmd)
        .context("building the Debian test image (needs debootstrap: `cargo xtask setup`)")?;
    let _ = std::fs::remove_file(Paths::key_of(dir));
    remove(dir)?;
    std::fs::rename(&tmp, dir)?;
    std::fs::write(Paths::key_of(dir), key)?;
    eprintln!(
        "xtask: Debian test image built in {:.0}s at {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// Bytes and inodes of the tree at `dir` (nothing followed).
fn tree_usage(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0, 0);
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let e = e?;
            let m = e.metadata()?;
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// An ext4 image whose root is the tree (`mke2fs -d` keeps owners, modes,
/// device nodes and xattrs), without the `lost+found` mke2fs adds.
fn build_ext4(dir: &Path, ext4: &Path, key: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let (bytes, inodes) = tree_usage(dir)?;
    let tmp = ext4.with_extension("ext4.tmp");
    let _ = std::fs::remove_file(&tmp);
    let f = std::fs::File::create(&tmp)?;
    f.set_len(bytes + bytes / 4 + (64 << 20))?;
    drop(f);
    shell::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "vzhost-image", "-N"])
            .arg((inodes + inodes / 4 + 1024).to_string())
            .arg("-d")
            .arg(dir)
            .arg(&tmp),
    )
    .context("making the test image's ext4 disk (install e2fsprogs)")?;
    shell::run(
        Command::new("debugfs")
            .args(["-w", "-R", "rmdir lost+found"])
            .arg(&tmp),
    )?;
    let _ = std::fs::remove_file(Paths::key_of(ext4));
    std::fs::rename(&tmp, ext4)?;
    std::fs::write(Paths::key_of(ext4), key)?;
    eprintln!(
        "xtask: ext4 image of it made in {:.1}s at {}",
        started.elapsed().as_secs_f64(),
        ext4.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_carries_release_packages_and_the_prep_version() {
        let src = "//! prep\n/// Bump when...\npub const VERSION: u32 = 7;\n";
        assert_eq!(prep_version(src), Some(7));
        assert_eq!(prep_version("const X: u32 = 1;"), None);
        assert_eq!(key(7), "release=bookworm packages= prep=7\n");
        assert_ne!(key(7), key(8));
        let real = std::fs::read_to_string(shell::workspace_root().join(PREP_SOURCE)).unwrap();
        assert!(
            prep_version(&real).is_some(),
            "{PREP_SOURCE} keeps its VERSION"
        );
    }

    #[test]
    fn a_stale_or_missing_key_is_a_miss() {
        let tmp = tempfile_dir();
        let img = tmp.join("img");
        assert!(!Paths::fresh(&img, "k"));
        std::fs::write(&img, "").unwrap();
        assert!(!Paths::fresh(&img, "k"), "no key: an interrupted build");
        std::fs::write(Paths::key_of(&img), "old").unwrap();
        assert!(!Paths::fresh(&img, "k"));
        std::fs::write(Paths::key_of(&img), "k").unwrap();
        assert!(Paths::fresh(&img, "k"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-images-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
