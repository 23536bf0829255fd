//! Host-wide reservations of user-id ranges, so that two daemons on one
//! host never give their VPSs overlapping ranges (a VPS root of one would
//! own the other's files). Every daemon reserves a range by creating a file
//! named after its first id, with O_EXCL, in one directory they all share
//! (`/run/vzhost/idmaps` by default); the file names the daemon's state
//! root and the VPS. A reservation whose VPS no longer exists there is
//! stale and is taken over. /run is emptied at boot: each daemon reserves
//! its VPSs' ranges again when it starts.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::{IDMAP_FIRST, IDMAP_SIZE, IdMap, Name};

pub const DEFAULT_REGISTRY: &str = "/run/vzhost/idmaps";

#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error(
        "ids {base}..{end} are held by VPS {vps} of the daemon at {root}; pick a free range",
        end = u64::from(.range.base) + u64::from(.range.count),
        base = .range.base
    )]
    Taken {
        range: IdMap,
        vps: String,
        root: String,
    },
    #[error("no free user-id range is left on this host")]
    Exhausted,
    #[error("id range registry {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl RangeError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::Taken { .. } | Self::Exhausted => ErrorKind::Conflict,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Who holds a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    root: PathBuf,
    vps: String,
    base: u32,
    count: u32,
}

impl Holder {
    fn range(&self) -> IdMap {
        IdMap {
            base: self.base,
            count: self.count,
        }
    }

    /// Whether the VPS holding it still exists.
    fn vps_exists(&self) -> bool {
        self.root
            .join("vps")
            .join(&self.vps)
            .join("config.json")
            .exists()
    }
}

/// A reservation younger than this is a create in progress, live even
/// though its VPS does not exist yet.
const CREATING: std::time::Duration = std::time::Duration::from_secs(300);

/// The holder recorded in reservation file `path`, if it is still live.
fn live_holder(path: &Path) -> Option<Holder> {
    let holder: Holder = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let young = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < CREATING);
    (young || holder.vps_exists()).then_some(holder)
}

/// The shared directory of reservations, as one daemon (its state root)
/// sees it.
pub struct RangeRegistry {
    dir: PathBuf,
    root: PathBuf,
}

impl RangeRegistry {
    pub fn new(dir: &Path, daemon_root: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            root: daemon_root.to_owned(),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> RangeError {
        let path = self.dir.display().to_string();
        move |source| RangeError::Io { path, source }
    }

    fn file(&self, base: u32) -> PathBuf {
        self.dir.join(base.to_string())
    }

    /// Every live reservation of every daemon.
    fn holders(&self) -> Vec<Holder> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| live_holder(&e.path()))
            .collect()
    }

    /// Reserve `range` for VPS `vps` of this daemon; refused when a live
    /// VPS (of any daemon) holds an overlapping range.
    pub fn reserve(&self, range: IdMap, vps: &Name) -> Result<(), RangeError> {
        fs::create_dir_all(&self.dir).map_err(self.io())?;
        let me = Holder {
            root: self.root.clone(),
            vps: vps.to_string(),
            base: range.base,
            count: range.count,
        };
        if let Some(other) = self
            .holders()
            .into_iter()
            .find(|h| h.range().overlaps(&range) && (h.root != me.root || h.vps != me.vps))
        {
            return Err(RangeError::Taken {
                range: other.range(),
                vps: other.vps,
                root: other.root.display().to_string(),
            });
        }
        let path = self.file(range.base);
        // A leftover of a VPS that no longer exists is taken over.
        if path.exists() && live_holder(&path).is_none_or(|h| h == me) {
            let _ = fs::remove_file(&path);
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                // Another daemon won the race for this very range.
                std::io::ErrorKind::AlreadyExists => RangeError::Taken {
                    range,
                    vps: "(being created)".into(),
                    root: "another daemon".into(),
                },
                _ => RangeError::Io {
                    path: path.display().to_string(),
                    source: e,
                },
            })?;
        f.write_all(&serde_json::to_vec(&me).expect("holder serializes"))
            .map_err(self.io())
    }

    /// The first default-sized range after `IDMAP_FIRST` that neither this
    /// daemon (`used`) nor any other holds, reserved for `vps`.
    pub fn allocate(&self, used: &[IdMap], vps: &Name) -> Result<IdMap, RangeError> {
        let candidates = (0..u32::MAX / IDMAP_SIZE)
            .map(|slot| IdMap {
                base: IDMAP_FIRST + slot * IDMAP_SIZE,
                count: IDMAP_SIZE,
            })
            .take_while(|m| m.base.checked_add(m.count).is_some());
        // Every reservation read once: trying slot after slot through
        // `reserve` alone would read them all again for each slot held by
        // another daemon (seconds per create beside a daemon of 1000 VPSs).
        let held: Vec<IdMap> = self.holders().iter().map(Holder::range).collect();
        for m in candidates {
            if used.iter().chain(&held).any(|u| u.overlaps(&m)) {
                continue;
            }
            match self.reserve(m, vps) {
                Ok(()) => return Ok(m),
                Err(RangeError::Taken { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RangeError::Exhausted)
    }

    /// Give up `range` if this daemon holds it.
    pub fn release(&self, range: IdMap) {
        let path = self.file(range.base);
        if let Ok(text) = fs::read(&path)
            && serde_json::from_slice::<Holder>(&text).is_ok_and(|h| h.root == self.root)
        {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon root with VPS `name` existing in it.
    fn daemon_with(root: &Path, name: &str) {
        let dir = root.join("vps").join(name);
        fs::create_dir_all(&dir).expect("vps dir");
        fs::write(dir.join("config.json"), "{}").expect("config");
    }

    #[test]
    fn two_daemons_never_get_the_same_range() {
        let t = tempfile::tempdir().expect("tempdir");
        let (reg, a, b) = (t.path().join("reg"), t.path().join("a"), t.path().join("b"));
        let name = Name::new("web").expect("valid");
        daemon_with(&a, "web");
        daemon_with(&b, "web");
        let first = RangeRegistry::new(&reg, &a)
            .allocate(&[], &name)
            .expect("free");
        let second = RangeRegistry::new(&reg, &b)
            .allocate(&[], &name)
            .expect("free");
        assert!(!first.overlaps(&second), "{first:?} {second:?}");
    }

    #[test]
    fn an_overlapping_explicit_range_is_refused_naming_its_holder() {
        let t = tempfile::tempdir().expect("tempdir");
        let (reg, a, b) = (t.path().join("reg"), t.path().join("a"), t.path().join("b"));
        daemon_with(&a, "web");
        let name = Name::new("web").expect("valid");
        let held = RangeRegistry::new(&reg, &a)
            .allocate(&[], &name)
            .expect("free");
        let err = RangeRegistry::new(&reg, &b)
            .reserve(
                IdMap {
                    base: held.base + 100,
                    count: 65_536,
                },
                &Name::new("db").expect("valid"),
            )
            .unwrap_err();
        assert!(
            matches!(&err, RangeError::Taken { vps, .. } if vps == "web"),
            "{err}"
        );
        assert!(err.to_string().contains(&a.display().to_string()), "{err}");
    }

    #[test]
    fn a_range_whose_vps_is_gone_is_taken_over() {
        let t = tempfile::tempdir().expect("tempdir");
        let (reg, a, b) = (t.path().join("reg"), t.path().join("a"), t.path().join("b"));
        daemon_with(&a, "old");
        let old = RangeRegistry::new(&reg, &a)
            .allocate(&[], &Name::new("old").expect("valid"))
            .expect("free");
        fs::remove_dir_all(a.join("vps/old")).expect("destroyed without a release");
        let stale = std::time::SystemTime::now() - 2 * CREATING;
        fs::File::options()
            .write(true)
            .open(reg.join(old.base.to_string()))
            .and_then(|f| f.set_modified(stale))
            .expect("age the reservation");
        daemon_with(&b, "new");
        let new = RangeRegistry::new(&reg, &b)
            .allocate(&[], &Name::new("new").expect("valid"))
            .expect("free");
        assert_eq!(new, old);
    }

    #[test]
    fn a_create_in_progress_keeps_its_range() {
        let t = tempfile::tempdir().expect("tempdir");
        let (reg, a, b) = (t.path().join("reg"), t.path().join("a"), t.path().join("b"));
        let creating = RangeRegistry::new(&reg, &a)
            .allocate(&[], &Name::new("new").expect("valid"))
            .expect("free");
        daemon_with(&b, "other");
        let other = RangeRegistry::new(&reg, &b)
            .allocate(&[], &Name::new("other").expect("valid"))
            .expect("free");
        assert!(!other.overlaps(&creating));
    }

    #[test]
    fn release_frees_only_the_daemons_own_range() {
        let t = tempfile::tempdir().expect("tempdir");
        let (reg, a, b) = (t.path().join("reg"), t.path().join("a"), t.path().join("b"));
        daemon_with(&a, "web");
        let name = Name::new("web").expect("valid");
        let held = RangeRegistry::new(&reg, &a)
            .allocate(&[], &name)
            .expect("free");
        RangeRegistry::new(&reg, &b).release(held);
        assert!(
            reg.join(held.base.to_string()).exists(),
            "not b's to release"
        );
        RangeRegistry::new(&reg, &a).release(held);
        assert!(!reg.join(held.base.to_string()).exists());
    }
}
