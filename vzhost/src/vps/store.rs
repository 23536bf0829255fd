//! The state store: one directory per VPS under `<root>/vps/`, made
//! complete in a staging directory and renamed into place, so a crash
//! mid-create leaves either a whole VPS or none.
//!
//! The daemon holds its state root alone, so this store is the only writer
//! of every spec and runtime in it, and keeps what it wrote or read in
//! memory: `list`, `stat` and `/metrics` read every VPS's on each request,
//! and at thousands of VPSs re-reading the files was a large part of that.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
};

use serde::{Deserialize, Serialize};

use crate::model::{Name, Runtime, Spec, VpsDir};
use crate::rootfs::{disk::VpsDisk, private_dir, walk::remove_tree};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("VPS {0} does not exist")]
    NotFound(String),
    #[error("VPS {0} already exists")]
    Exists(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Files(#[from] crate::rootfs::safe::SafeError),
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
}

impl StoreError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Exists(_) => ErrorKind::Conflict,
            Self::Io { .. } | Self::Corrupt { .. } => ErrorKind::Internal,
            Self::Files(e) => e.kind(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

pub struct Store {
    root: PathBuf,
    known: Mutex<Known>,
}

/// Specs and runtimes as last written or read.
#[derive(Default)]
struct Known {
    specs: BTreeMap<Name, Spec>,
    /// None: the VPS has no runtime file (it is not running).
    runtimes: HashMap<Name, Option<Runtime>>,
}

/// Write `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read(path).map_err(io("read", path))?;
    serde_json::from_slice(&text).map_err(|source| StoreError::Corrupt {
        path: path.display().to_string(),
        source,
    })
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("state types serialize")
}

impl Store {
    /// Open the state root. It, `vps/`, `templates/` and every VPS's
    /// directory are root's alone (0700), existing ones included: what a
    /// VPS's layer or a template holds (setuid binaries, device nodes, the
    /// VPS's data) is reachable by no other host user.
    pub fn open(root: &Path) -> Result<Self> {
        let vps = root.join("vps");
        for dir in [
            root.to_owned(),
            vps.clone(),
            crate::rootfs::Templates::new(root).dir(),
        ] {
            private_dir(&dir).map_err(io("make private", &dir))?;
        }
        let store = Self {
            root: root.to_owned(),
            known: Mutex::default(),
        };
        store.sweep_staging();
        crate::rootfs::Templates::new(root).sweep_staging();
        let mut known = Known::default();
        for e in fs::read_dir(&vps).map_err(io("read", &vps))?.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            private_dir(&e.path()).map_err(io("make private", &e.path()))?;
            let Ok(name) = Name::new(&e.file_name().to_string_lossy()) else {
                continue;
            };
            match read_json(&store.dir(&name).config()) {
                Ok(spec) => {
                    known.specs.insert(name, spec);
                }
                Err(err) => tracing::warn!(vps = %name, %err, "skipping unreadable VPS"),
            }
        }
        *store.known() = known;
        Ok(store)
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remove staging directories a crash left behind.
    fn sweep_staging(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("vps")) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".new-") {
                tracing::warn!(path = %e.path().display(), "removing an incomplete VPS left by a crash");
                // Its disk image may still be mounted: never delete into it.
                if VpsDisk::of(&VpsDir(e.path())).unmount().is_ok() {
                    let _ = remove_tree(&e.path());
                }
            }
        }
    }

    pub fn dir(&self, name: &Name) -> VpsDir {
        VpsDir(self.root.join("vps").join(name.as_str()))
    }

    pub fn exists(&self, name: &Name) -> bool {
        self.known().specs.contains_key(name)
    }

    /// Create a VPS directory with its spec; `fill` may add files to the
    /// staging directory before it is renamed into place.
    pub fn create(&self, spec: &Spec, fill: impl FnOnce(&VpsDir) -> Result<()>) -> Result<VpsDir> {
        let dest = self.dir(&spec.name);
        if dest.0.exists() {
            return Err(StoreError::Exists(spec.name.to_string()));
        }
        let staging = VpsDir(self.root.join("vps").join(format!(
            ".new-{}-{}",
            spec.name,
            std::process::id()
        )));
        let build = || -> Result<()> {
            fs::create_dir(&staging.0).map_err(io("create", &staging.0))?;
            private_dir(&staging.0).map_err(io("make private", &staging.0))?;
            for d in [staging.lower(), staging.rootfs()] {
                fs::create_dir(&d).map_err(io("create", &d))?;
            }
            fill(&staging)?;
            write_atomic(&staging.config(), &to_json(spec))?;
            fs::rename(&staging.0, &dest.0).map_err(io("rename", &dest.0))
        };
        if let Err(e) = build() {
            let _ = remove_tree(&staging.0);
            return Err(e);
        }
        self.known().specs.insert(spec.name.clone(), spec.clone());
        Ok(dest)
    }

    pub fn load(&self, name: &Name) -> Result<Spec> {
        self.known()
            .specs
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    pub fn save(&self, spec: &Spec) -> Result<()> {
        write_atomic(&self.dir(&spec.name).config(), &to_json(spec))?;
        self.known().specs.insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    /// Every VPS's spec, by name.
    pub fn list(&self) -> Result<Vec<Spec>> {
        Ok(self.known().specs.values().cloned().collect())
    }

    pub fn runtime(&self, name: &Name) -> Option<Runtime> {
        if let Some(known) = self.known().runtimes.get(name) {
            return known.clone();
        }
        let read = read_json(&self.dir(name).runtime()).ok();
        self.known().runtimes.insert(name.clone(), read.clone());
        read
    }

    pub fn set_runtime(&self, name: &Name, runtime: Option<&Runtime>) -> Result<()> {
        let path = self.dir(name).runtime();
        match runtime {
            Some(r) => write_atomic(&path, &to_json(r))?,
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", &path)(e));
                }
                _ => {}
            },
        }
        self.known().runtimes.insert(name.clone(), runtime.cloned());
        Ok(())
    }

    pub fn remove(&self, name: &Name) -> Result<()> {
        let dir = self.dir(name);
        // Rename first so a crash mid-delete never leaves a half VPS listed.
        let doomed =
            self.root
                .join("vps")
                .join(format!(".new-gone-{}-{}", name, std::process::id()));
        fs::rename(&dir.0, &doomed).map_err(io("rename", &dir.0))?;
        let mut known = self.known();
        known.specs.remove(name);
        known.runtimes.remove(name);
        drop(known);
        VpsDisk::of(&dir).forget_usage();
        remove_tree(&doomed).map_err(io("remove", &doomed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdMap, Limits};

    fn spec(name: &str) -> Spec {
        Spec {
            name: Name::new(name).unwrap(),
            template: crate::model::TemplateName::new("busybox").unwrap(),
            hostname: name.into(),
            limits: Limits::default(),
            idmap: IdMap {
                base: 1_000_000,
                count: 65536,
            },
            labels: Default::default(),
            stop_timeout: 10,
            id: 1,
            disk: None,
            ip: None,
            ip6: None,
            policy: None,
        }
    }

    #[test]
    fn create_load_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let s = spec("web");
        let dir = store.create(&s, |_| Ok(())).unwrap();
        assert!(dir.lower().is_dir() && dir.rootfs().is_dir());
        assert_eq!(store.load(&s.name).unwrap(), s);
        assert!(matches!(
            store.create(&s, |_| Ok(())),
            Err(StoreError::Exists(_))
        ));
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove(&s.name).unwrap();
        assert!(matches!(store.load(&s.name), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn failed_create_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let s = spec("broken");
        let err = store.create(&s, |_| Err(StoreError::NotFound("boom".into())));
        assert!(err.is_err());
        assert_eq!(fs::read_dir(tmp.path().join("vps")).unwrap().count(), 0);
    }

    #[test]
    fn staging_left_by_a_crash_is_swept() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("vps/.new-x-1/upper")).unwrap();
        let store = Store::open(tmp.path()).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!tmp.path().join("vps/.new-x-1").exists());
    }

    #[test]
    fn state_directories_are_made_private_and_kept_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("vps/old")).unwrap();
        for d in ["", "vps", "vps/old"] {
            fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let store = Store::open(&root).unwrap();
        store.create(&spec("new"), |_| Ok(())).unwrap();
        for d in ["", "vps", "templates", "vps/old", "vps/new"] {
            let mode = fs::metadata(root.join(d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{d:?}");
        }
    }

    #[test]
    fn runtime_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let s = spec("a");
        store.create(&s, |_| Ok(())).unwrap();
        let r = Runtime {
            init_pid: 5,
            init_start: 6,
            started_at: 7,
            init: crate::model::InitKind::Systemd,
        };
        store.set_runtime(&s.name, Some(&r)).unwrap();
        assert_eq!(store.runtime(&s.name), Some(r));
        store.set_runtime(&s.name, None).unwrap();
        store.set_runtime(&s.name, None).unwrap();
        assert_eq!(store.runtime(&s.name), None);
    }
}
