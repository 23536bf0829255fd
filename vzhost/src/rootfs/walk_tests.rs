//! The walk on trees a VPS could make: deeper than any descriptor limit,
//! with FIFOs, sockets, hard links and symlinks out of the tree.
use std::{
    fs,
    os::unix::{fs::symlink, net::UnixListener},
    path::Path,
    sync::mpsc,
    time::Duration,
};

use super::*;

const DATA: usize = 64 << 10;

/// A chain of `depth` directories under `top`, with a 64 KiB file at the
/// bottom; made through descriptors, as no path can name the bottom.
fn deep_tree(top: &Path, depth: usize) {
    let mut dir = nix::fcntl::open(top, OPEN_DIR, Mode::empty()).unwrap();
    for _ in 0..depth {
        nix::sys::stat::mkdirat(&dir, "d", Mode::from_bits_truncate(0o755)).unwrap();
        dir = openat(&dir, "d", OPEN_DIR, Mode::empty()).unwrap();
    }
    let file = openat(
        &dir,
        "bottom",
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::unistd::write(&file, &vec![7u8; DATA]).unwrap();
}

fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the walk blocked")
}

fn bytes_of(dir: &Path) -> u64 {
    let fd = nix::fcntl::open(dir, OPEN_DIR, Mode::empty()).unwrap();
    tree_bytes(fd.as_fd()).unwrap()
}

#[test]
fn a_tree_deeper_than_the_descriptor_limit_is_counted_and_removed_with_few_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("upper");
    fs::create_dir(&top).unwrap();
    // Deeper than the usual limit of 1024 descriptors per process.
    deep_tree(&top, 1200);
    struct Count(usize);
    impl Visit for Count {
        fn entry(&mut self, _: BorrowedFd<'_>, _: &CStr, _: &FileStat) -> io::Result<bool> {
            self.0 += 1;
            Ok(true)
        }
    }
    let fd = nix::fcntl::open(&top, OPEN_DIR, Mode::empty()).unwrap();
    let mut count = Count(0);
    let walked = walk(fd.as_fd(), &mut count).unwrap();
    assert_eq!(count.0, 1201, "every directory and the file at the bottom");
    assert!(walked.max_open <= MAX_OPEN, "{walked:?}");
    assert!(bytes_of(&top) >= DATA as u64);
    remove_tree(&top).unwrap();
    assert!(!top.exists());
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn fifos_and_sockets_are_looked_at_not_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("upper");
    fs::create_dir_all(top.join("run")).unwrap();
    nix::unistd::mkfifo(&top.join("run/fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    let _socket = UnixListener::bind(top.join("run/sock")).unwrap();
    fs::write(top.join("run/file"), vec![1u8; DATA]).unwrap();
    let at = top.clone();
    let bytes = promptly(move || bytes_of(&at));
    assert!(bytes >= DATA as u64);
    let at = top.clone();
    promptly(move || remove_tree(&at)).unwrap();
    assert!(!top.exists());
}

#[test]
fn symlinks_out_of_the_tree_are_neither_counted_nor_followed_when_removing() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("big"), vec![1u8; 4 * DATA]).unwrap();
    let top = tmp.path().join("upper");
    fs::create_dir(&top).unwrap();
    symlink(&host, top.join("abs")).unwrap();
    symlink("../host", top.join("rel")).unwrap();
    symlink(host.join("big"), top.join("file")).unwrap();
    assert!(bytes_of(&top) < 4 * DATA as u64);
    remove_tree(&top).unwrap();
    assert!(!top.exists());
    assert_eq!(fs::read(host.join("big")).unwrap().len(), 4 * DATA);
}

#[test]
fn a_hard_linked_file_is_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("upper");
    fs::create_dir(&top).unwrap();
    fs::write(top.join("a"), vec![1u8; DATA]).unwrap();
    let once = bytes_of(&top);
    fs::hard_link(top.join("a"), top.join("b")).unwrap();
    assert_eq!(bytes_of(&top), once);
}

#[test]
fn removing_goes_through_no_symlink_at_the_top_and_nothing_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("keep"), "x").unwrap();
    let link = tmp.path().join("doomed");
    symlink(&host, &link).unwrap();
    assert!(remove_tree(&link).is_err());
    assert_eq!(fs::read_to_string(host.join("keep")).unwrap(), "x");
    remove_tree(&tmp.path().join("none")).unwrap();
}
