//! Where the KSAL keeps what must outlive the daemon. With a pin directory
//! on bpffs, maps and links are pinned there, so `kill -9` of the daemon
//! leaves every VPS confined and a new daemon takes over the same maps;
//! without one (tests, probes) links live only as long as this process.
//!
//! Layout: `maps/STAMP/NAME` (STAMP: a hash of the eBPF object, since maps
//! of another build may differ in layout; bpffs holds no plain files to
//! record it in) and `lsm/HOOK`. The cgroup programs need no pin: they
//! are attached to each VPS cgroup, which holds them (`cgroup_attach`).
use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};

pub const DEFAULT_DIR: &str = "/sys/fs/bpf/vzhost";

/// Links held by relative pin path (`lsm/file_open`).
pub struct Links {
    pins: Option<PathBuf>,
    held: HashMap<String, FdLink>,
}

impl Links {
    pub fn new(pins: Option<&Path>) -> Self {
        Self {
            pins: pins.map(Path::to_owned),
            held: HashMap::new(),
        }
    }

    /// Keep `link` under `rel`, replacing what was there only once the new
    /// one is in place, so the hook is never left without a program.
    pub fn keep(&mut self, rel: &str, link: FdLink) -> io::Result<()> {
        let Some(dir) = &self.pins else {
            self.held.insert(rel.to_owned(), link);
            return Ok(());
        };
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        // bpffs refuses names with a dot.
        let fresh = dir.join(format!("{rel}-new"));
        let _ = fs::remove_file(&fresh);
        let pinned: PinnedLink = link
            .pin(&fresh)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        // The rename drops the old pin, and with it the old link.
        fs::rename(&fresh, &path)?;
        drop(pinned);
        Ok(())
    }
}

/// A short hash of the eBPF object, so pins of another build are not
/// taken for this one's.
pub fn object_stamp(object: &[u8]) -> String {
    let h = object.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Prepare `dir` for `object`: maps pinned by another build are unpinned
/// (the programs still attached keep theirs until their links are
/// replaced, and the new daemon puts its rules in the new maps). Returns
/// the path of each map's pin.
pub fn prepare(
    dir: &Path,
    object: &[u8],
    maps: &[&'static str],
) -> io::Result<Vec<(&'static str, PathBuf)>> {
    let stamp = object_stamp(object);
    let maps_dir = dir.join("maps");
    fs::create_dir_all(maps_dir.join(&stamp))?;
    for e in fs::read_dir(&maps_dir)?.flatten() {
        if e.file_name() != stamp.as_str() {
            tracing::info!(pins = %e.path().display(), "unpinning the maps of another build");
            fs::remove_dir_all(e.path())?;
        }
    }
    Ok(maps
        .iter()
        .map(|m| (*m, maps_dir.join(&stamp).join(m)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_tell_objects_apart() {
        assert_eq!(object_stamp(b"abc"), object_stamp(b"abc"));
        assert_ne!(object_stamp(b"abc"), object_stamp(b"abd"));
    }
}
