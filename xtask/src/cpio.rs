//! A minimal writer for the `newc` cpio format the kernel unpacks as an
//! initramfs. Parent directories are created on demand, once each.
use std::collections::BTreeSet;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

#[derive(Default)]
pub struct Archive {
    data: Vec<u8>,
    dirs: BTreeSet<String>,
    next_ino: u32,
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl Archive {
    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.next_ino += 1;
        let fields = [
            self.next_ino,
            mode,
            0,
            0,
            1,
            0,
            body.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        pad4(&mut self.data);
        self.data.extend_from_slice(body);
        pad4(&mut self.data);
    }

    /// Create `path` and its parents (no leading slash).
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | 0o755, &[]);
    }

    fn parent_of(&mut self, path: &str) -> String {
        let path = path.trim_start_matches('/').to_owned();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        path
    }

    pub fn file(&mut self, path: &str, mode: u32, body: &[u8]) {
        let path = self.parent_of(path);
        self.entry(&path, S_IFREG | mode, body);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = self.parent_of(path);
        self.entry(&path, S_IFLNK | 0o777, target.as_bytes());
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_parents_once_and_aligns() {
        let mut a = Archive::default();
        a.file("/a/b/c", 0o644, b"hello");
        a.file("a/b/d", 0o755, b"x");
        a.symlink("a/l", "b/c");
        let out = a.finish();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("a/b\0").count(), 1);
        assert!(text.contains("TRAILER!!!"));
        // 2 dirs + 2 files + 1 link + trailer
        assert_eq!(text.matches("070701").count(), 6);
    }
}
