//! Attacks on [`SafeDir`] the way a VPS's root would plant them in its own
//! layer; each checks that the attack failed and that nothing outside the
//! layer changed. Temp dirs only, no root needed.
use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
    path::PathBuf,
    sync::mpsc,
    time::Duration,
};

use super::*;

/// A layer (`root`) with a host file beside it (`outside`), which no
/// attack may change.
struct Layer {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

const HOST: &str = "host secret\n";

impl Layer {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("upper");
        fs::create_dir_all(root.join("etc")).unwrap();
        let outside = tmp.path().join("host-file");
        fs::write(&outside, HOST).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn dir(&self) -> SafeDir {
        SafeDir::open(&self.root, None).unwrap().with_seed(0)
    }

    /// The host file has its content and mode, and one link.
    fn outside_untouched(&self) {
        assert_eq!(fs::read_to_string(&self.outside).unwrap(), HOST);
        let meta = fs::metadata(&self.outside).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.nlink(), 1);
        let beside: Vec<_> = fs::read_dir(self.outside.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside.len(), 2, "nothing new beside the layer: {beside:?}");
    }

    /// No temp file is left in `dir`.
    fn no_temps(&self, dir: &str) {
        for e in fs::read_dir(self.root.join(dir)).unwrap() {
            let name = e.unwrap().file_name();
            assert!(
                !name.to_string_lossy().contains(".vzhost-"),
                "temp left behind: {name:?}"
            );
        }
    }
}

fn me() -> Owner {
    Owner {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mode: 0o640,
    }
}

/// `f` must finish within a few seconds (a blocking open would hang it).
fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the call blocked")
}

#[test]
fn reads_and_replaces_a_file_beneath_with_owner_and_mode() {
    let l = Layer::new();
    fs::write(l.root.join("etc/shadow"), "old\n").unwrap();
    let d = l.dir();
    assert_eq!(d.read("etc/shadow", 100).unwrap().unwrap(), b"old\n");
    assert!(d.read("etc/missing", 100).unwrap().is_none());
    d.write("etc/shadow", b"new\n", me()).unwrap();
    assert_eq!(
        fs::read_to_string(l.root.join("etc/shadow")).unwrap(),
        "new\n"
    );
    let meta = fs::metadata(l.root.join("etc/shadow")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    l.no_temps("etc");
}

#[test]
fn a_symlink_at_the_target_is_not_read_and_is_replaced_not_followed() {
    let l = Layer::new();
    symlink(&l.outside, l.root.join("etc/shadow")).unwrap();
    let d = l.dir();
    let err = d.read("etc/shadow", 100).unwrap_err();
    assert!(matches!(err, SafeError::Symlink { .. }), "{err}");
    d.write("etc/shadow", b"vps\n", me()).unwrap();
    assert_eq!(
        fs::read_to_string(l.root.join("etc/shadow")).unwrap(),
        "vps\n"
    );
    assert!(!l.root.join("etc/shadow").is_symlink());
    l.outside_untouched();
}

#[test]
fn a_symlink_at_the_temp_name_is_never_opened() {
    let l = Layer::new();
    // Every name the write will try first, and the old fixed one.
    for n in 0..3 {
        symlink(&l.outside, l.root.join(format!("etc/.shadow.vzhost-0-{n}"))).unwrap();
    }
    symlink(&l.outside, l.root.join("etc/shadow.vzhost-tmp")).unwrap();
    l.dir().write("etc/shadow", b"vps\n", me()).unwrap();
    assert_eq!(
        fs::read_to_string(l.root.join("etc/shadow")).unwrap(),
        "vps\n"
    );
    l.outside_untouched();
}

#[test]
fn a_write_gives_up_when_every_temp_name_is_taken() {
    let l = Layer::new();
    for n in 0..TEMP_TRIES {
        symlink(&l.outside, l.root.join(format!("etc/.shadow.vzhost-0-{n}"))).unwrap();
    }
    let err = l.dir().write("etc/shadow", b"vps\n", me()).unwrap_err();
    assert!(err.to_string().contains("temp file"), "{err}");
    assert!(!l.root.join("etc/shadow").exists());
    l.outside_untouched();
}

#[test]
fn a_symlinked_directory_leads_nowhere_absolute_or_relative() {
    let l = Layer::new();
    let host_dir = l.outside.parent().unwrap().to_owned();
    fs::remove_dir(l.root.join("etc")).unwrap();
    for target in [host_dir.clone(), PathBuf::from("../")] {
        let _ = fs::remove_file(l.root.join("etc"));
        symlink(&target, l.root.join("etc")).unwrap();
        let d = l.dir();
        let err = d.read("etc/host-file", 100).unwrap_err();
        assert!(
            matches!(err, SafeError::Symlink { .. }),
            "{target:?}: {err}"
        );
        let err = d.write("etc/host-file", b"vps\n", me()).unwrap_err();
        assert!(
            matches!(err, SafeError::Symlink { .. }),
            "{target:?}: {err}"
        );
        let err = d.make_dir("etc/sub", me()).unwrap_err();
        assert!(
            matches!(err, SafeError::Symlink { .. }),
            "{target:?}: {err}"
        );
        l.outside_untouched();
    }
}

#[test]
fn dot_dot_stays_inside_the_layer() {
    let l = Layer::new();
    let d = l.dir();
    // `..` at the top is the layer itself (RESOLVE_IN_ROOT).
    assert!(d.read("../host-file", 100).unwrap().is_none());
    assert!(d.read("etc/../../../host-file", 100).unwrap().is_none());
    d.write("../../escaped", b"vps\n", me()).unwrap();
    assert!(l.root.join("escaped").exists(), "written inside the layer");
    l.outside_untouched();
}

#[test]
fn a_fifo_neither_blocks_nor_is_read_and_is_replaced() {
    let l = Layer::new();
    let fifo = l.root.join("etc/passwd");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
    let root = l.root.clone();
    let err = promptly(move || {
        SafeDir::open(&root, None)
            .unwrap()
            .read("etc/passwd", 100)
            .unwrap_err()
    });
    assert!(
        matches!(
            err,
            SafeError::Kind {
                found: "a FIFO",
                ..
            }
        ),
        "{err}"
    );
    let root = l.root.clone();
    promptly(move || {
        SafeDir::open(&root, None)
            .unwrap()
            .write("etc/passwd", b"root:x:0:0::/:/bin/sh\n", me())
    })
    .unwrap();
    assert!(fs::metadata(&fifo).unwrap().is_file());
}

#[test]
fn a_huge_file_is_refused_at_the_cap() {
    let l = Layer::new();
    let big = fs::File::create(l.root.join("etc/passwd")).unwrap();
    big.set_len(1 << 40).unwrap();
    let err = l.dir().read("etc/passwd", 64 << 10).unwrap_err();
    let SafeError::TooBig { cap, path } = &err else {
        panic!("{err}")
    };
    assert_eq!(*cap, 64 << 10);
    assert!(path.ends_with("etc/passwd"), "{path}");
    assert!(err.to_string().contains("65536"), "{err}");
}

#[test]
fn a_hard_link_to_an_outside_file_is_not_read_and_not_written_through() {
    let l = Layer::new();
    fs::hard_link(&l.outside, l.root.join("etc/shadow")).unwrap();
    let d = l.dir();
    let err = d.read("etc/shadow", 100).unwrap_err();
    assert!(matches!(err, SafeError::Links { links: 2, .. }), "{err}");
    d.write("etc/shadow", b"vps\n", me()).unwrap();
    assert_eq!(
        fs::read_to_string(l.root.join("etc/shadow")).unwrap(),
        "vps\n"
    );
    l.outside_untouched();
}

#[test]
fn a_directory_where_a_file_is_expected_is_left_alone() {
    let l = Layer::new();
    fs::create_dir(l.root.join("etc/shadow")).unwrap();
    fs::write(l.root.join("etc/shadow/keep"), "x").unwrap();
    let d = l.dir();
    let err = d.read("etc/shadow", 100).unwrap_err();
    assert!(
        matches!(
            err,
            SafeError::Kind {
                found: "a directory",
                ..
            }
        ),
        "{err}"
    );
    assert!(d.write("etc/shadow", b"vps\n", me()).is_err());
    assert_eq!(
        fs::read_to_string(l.root.join("etc/shadow/keep")).unwrap(),
        "x"
    );
    l.no_temps("etc");
}

#[test]
fn a_file_where_a_directory_is_expected_is_refused() {
    let l = Layer::new();
    fs::write(l.root.join("etc/sub"), "x").unwrap();
    let err = l.dir().make_dir("etc/sub", me()).unwrap_err();
    assert!(
        matches!(
            err,
            SafeError::Kind {
                found: "a regular file",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_directories_are_made_with_owner_and_mode() {
    let l = Layer::new();
    let owner = Owner {
        mode: 0o751,
        ..me()
    };
    let made = l.dir().make_dir("a/b/c", owner).unwrap();
    made.write("f", b"x", me()).unwrap();
    for d in ["a", "a/b", "a/b/c"] {
        let meta = fs::symlink_metadata(l.root.join(d)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o751, "{d}");
    }
    assert_eq!(fs::read(l.root.join("a/b/c/f")).unwrap(), b"x");
    // Existing directories are taken as they are.
    l.dir().make_dir("a/b", me()).unwrap();
}

#[test]
fn files_owned_outside_the_vps_range_are_refused() {
    let l = Layer::new();
    fs::write(l.root.join("etc/passwd"), "x").unwrap();
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let others = IdMap {
        base: uid.max(gid) + 1,
        count: 10,
    };
    let err = SafeDir::open(&l.root, Some(others)).expect_err("refused");
    assert!(matches!(err, SafeError::Owner { .. }), "{err}");
    let mine = IdMap {
        base: uid.min(gid),
        count: uid.abs_diff(gid) + 1,
    };
    let d = SafeDir::open(&l.root, Some(mine)).unwrap();
    assert_eq!(d.read("etc/passwd", 10).unwrap().unwrap(), b"x");
}

#[test]
fn the_top_directory_is_not_opened_through_a_symlink() {
    let l = Layer::new();
    let link = l.root.parent().unwrap().join("link");
    symlink(&l.root, &link).unwrap();
    let err = SafeDir::open(&link, None).expect_err("refused");
    assert!(matches!(err, SafeError::Symlink { .. }), "{err}");
}

#[test]
fn lstat_reports_without_opening() {
    let l = Layer::new();
    let fifo = l.root.join("etc/fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let root = l.root.clone();
    let st = promptly(move || SafeDir::open(&root, None).unwrap().lstat("etc/fifo"))
        .unwrap()
        .unwrap();
    assert_eq!(kind(&st), SFlag::S_IFIFO);
    assert!(!is_whiteout(&st));
    assert!(l.dir().lstat("etc/none").unwrap().is_none());
}
