//! The policies directory: load every `*.yaml` in it, and watch it with
//! inotify so a new, changed or removed file takes effect at once. A file
//! that fails to parse keeps its last good version in force.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::{BUILTIN_DEFAULT, DEFAULT_NAME, Policy, PolicyError, PolicySet};

/// One file's state as `vzhost policy list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileStatus {
    pub file: String,
    /// The policy it defines (its last good version, if the file is bad now).
    pub policy: Option<String>,
    pub error: Option<PolicyError>,
}

/// The policies directory and what was last loaded from it.
pub struct PolicyDir {
    dir: PathBuf,
    /// Last good policy per file name.
    good: BTreeMap<String, Policy>,
    errors: BTreeMap<String, PolicyError>,
    /// Files rejected since the daemon started.
    pub reload_errors: u64,
    /// The policies in force, made again on every reload.
    in_force: PolicySet,
}

impl PolicyDir {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            good: BTreeMap::new(),
            errors: BTreeMap::new(),
            reload_errors: 0,
            in_force: Self::resolve(&BTreeMap::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Read the directory again; returns whether the policies in force
    /// changed. Errors are kept and logged, never fatal.
    pub fn reload(&mut self) -> bool {
        let mut seen = BTreeMap::new();
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) || name.starts_with('.') {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            seen.insert(name, (path, text));
        }
        let before = self.good.clone();
        self.good.retain(|f, _| seen.contains_key(f));
        self.errors.retain(|f, _| seen.contains_key(f));
        for (file, (path, text)) in seen {
            match Policy::parse(&path.display().to_string(), &text) {
                Ok(p) => {
                    self.errors.remove(&file);
                    self.good.insert(file, p);
                }
                Err(e) => {
                    if self.errors.get(&file) != Some(&e) {
                        self.reload_errors += 1;
                        tracing::error!(
                            "policy rejected, {}: {e}",
                            if self.good.contains_key(&file) {
                                "its last good version stays in force"
                            } else {
                                "it is not in force"
                            }
                        );
                    }
                    self.errors.insert(file, e);
                }
            }
        }
        let changed = before != self.good;
        self.in_force = Self::resolve(&self.good);
        if changed {
            tracing::info!(
                policies = ?self.good.values().map(|p| p.name.as_str()).collect::<Vec<_>>(),
                "policies loaded"
            );
        }
        changed
    }

    /// The policies in force.
    pub fn set(&self) -> &PolicySet {
        &self.in_force
    }

    /// The built-in default unless a file defines `default`; a name
    /// defined twice goes to the first file by name.
    fn resolve(good: &BTreeMap<String, Policy>) -> PolicySet {
        let mut set = PolicySet::default();
        for p in good.values() {
            set.policies
                .entry(p.name.clone())
                .or_insert_with(|| p.clone());
        }
        if !set.policies.contains_key(DEFAULT_NAME) {
            let p = Policy::parse("default.yaml", BUILTIN_DEFAULT)
                .expect("the built-in default policy parses");
            set.policies.insert(DEFAULT_NAME.into(), p);
        }
        set
    }

    pub fn status(&self) -> Vec<FileStatus> {
        let mut files: Vec<&String> = self.good.keys().chain(self.errors.keys()).collect();
        files.sort();
        files.dedup();
        files
            .into_iter()
            .map(|f| FileStatus {
                file: self.dir.join(f).display().to_string(),
                policy: self.good.get(f).map(|p| p.name.clone()),
                error: self.errors.get(f).cloned(),
            })
            .collect()
    }
}

/// Call `changed` whenever a file in `dir` is written, moved or removed,
/// after a short quiet period so an editor's burst of writes counts once.
/// Runs until the process ends.
pub fn watch(dir: &Path, mut changed: impl FnMut()) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?;
    inotify
        .add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MODIFY,
        )
        .map_err(std::io::Error::from)?;
    let fd = std::os::fd::AsFd::as_fd(&inotify);
    loop {
        inotify.read_events().map_err(std::io::Error::from)?;
        // Drain what else arrives within the quiet period.
        loop {
            let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let quiet =
                nix::poll::PollTimeout::try_from(QUIET).unwrap_or(nix::poll::PollTimeout::ZERO);
            match nix::poll::poll(&mut pfd, quiet) {
                Ok(n) if n > 0 => {
                    inotify.read_events().map_err(std::io::Error::from)?;
                }
                _ => break,
            }
        }
        changed();
    }
}

/// How long the directory must be quiet before a reload.
const QUIET: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_keeps_its_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("web.yaml");
        fs::write(&f, "selector: {names: [a]}\nmode: audit\n").unwrap();
        let mut pd = PolicyDir::new(dir.path());
        assert!(pd.reload());
        assert_eq!(pd.set().policies["web"].mode, super::super::Mode::Audit);
        fs::write(&f, "selector: {names: [a]}\nmode: sometimes\n").unwrap();
        assert!(!pd.reload(), "a bad file changes nothing in force");
        assert_eq!(pd.set().policies["web"].mode, super::super::Mode::Audit);
        assert_eq!(pd.reload_errors, 1);
        let st = pd.status();
        assert_eq!(st[0].policy.as_deref(), Some("web"));
        assert_eq!(st[0].error.as_ref().unwrap().line, 2);
        fs::remove_file(&f).unwrap();
        assert!(pd.reload());
        assert!(!pd.set().policies.contains_key("web"));
        assert!(
            pd.set().policies.contains_key("default"),
            "built-in default"
        );
    }
}
