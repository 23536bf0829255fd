//! How VPSs are wired to the host: routed (OpenVZ's venet, done with
//! today's kernel: a veth per VPS on no bridge, a /32 host route and proxy
//! ARP on its host end) or bridged (every veth a port of one bridge). The
//! mode a daemon ran with is kept in its state directory, so a daemon
//! restarted with another one does not rewire VPSs that still run.
use std::{fmt, path::Path, str::FromStr};

use serde::{Deserialize, Serialize};

/// The VPS network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// The default: no port limit (a bridge takes at most 1023), one hop
    /// less, and no shared broadcast domain between VPSs.
    #[default]
    Routed,
    /// Every VPS on one layer-2 segment, as before routed mode existed.
    Bridged,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::Bridged => "bridged",
        }
    }
}

impl fmt::Display for NetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown network mode {0:?}: use routed or bridged")]
pub struct UnknownMode(String);

impl FromStr for NetMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "routed" => Ok(Self::Routed),
            "bridged" => Ok(Self::Bridged),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error(
        "the running VPSs ({running}) were wired in {stored} network mode; stop them first \
         (vzhost stop NAME) or start the daemon with --network {stored}"
    )]
    Change { stored: NetMode, running: String },
    #[error("network mode file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("network mode file {path}: {source}; remove it or write routed or bridged into it")]
    Parse { path: String, source: UnknownMode },
}

/// Where a state directory keeps its daemon's network mode.
pub fn mode_file(root: &Path) -> std::path::PathBuf {
    root.join("network-mode")
}

/// The mode stored under `root`, if any.
pub fn stored_mode(root: &Path) -> Result<Option<NetMode>, ModeError> {
    let path = mode_file(root);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.parse().map(Some).map_err(|source| ModeError::Parse {
            path: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModeError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The mode a daemon runs with: the one asked for (else the one stored,
/// else the default), refused when VPSs still run wired the other way.
/// State from before modes existed has none stored: its VPSs are bridged.
pub fn resolve(
    requested: Option<NetMode>,
    stored: Option<NetMode>,
    running: &[String],
) -> Result<NetMode, ModeError> {
    let wired = stored.or((!running.is_empty()).then_some(NetMode::Bridged));
    let mode = requested.or(wired).unwrap_or_default();
    match wired {
        Some(stored) if stored != mode && !running.is_empty() => Err(ModeError::Change {
            stored,
            running: running.join(", "),
        }),
        _ => Ok(mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NetMode::{Bridged, Routed};

    fn running(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn routed_is_the_default_and_a_stored_mode_is_kept() {
        assert_eq!(resolve(None, None, &[]).unwrap(), Routed);
        assert_eq!(
            resolve(None, Some(Bridged), &running(&["a"])).unwrap(),
            Bridged
        );
        assert_eq!(resolve(None, Some(Bridged), &[]).unwrap(), Bridged);
        assert_eq!(resolve(Some(Bridged), None, &[]).unwrap(), Bridged);
    }

    #[test]
    fn a_change_is_refused_while_vpss_run_and_allowed_when_none_do() {
        let e = resolve(Some(Routed), Some(Bridged), &running(&["a", "b"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(a, b)") && e.contains("bridged") && e.contains("--network bridged"),
            "{e}"
        );
        assert_eq!(resolve(Some(Routed), Some(Bridged), &[]).unwrap(), Routed);
    }

    #[test]
    fn vpss_from_before_modes_existed_count_as_bridged() {
        assert!(resolve(Some(Routed), None, &running(&["old"])).is_err());
        assert_eq!(resolve(None, None, &running(&["old"])).unwrap(), Bridged);
    }

    #[test]
    fn the_stored_mode_is_read_back_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_mode(dir.path()).unwrap(), None);
        std::fs::write(mode_file(dir.path()), "bridged\n").unwrap();
        assert_eq!(stored_mode(dir.path()).unwrap(), Some(Bridged));
        std::fs::write(mode_file(dir.path()), "venet\n").unwrap();
        let e = stored_mode(dir.path()).unwrap_err().to_string();
        assert!(e.contains("network-mode") && e.contains("\"venet\""), "{e}");
    }
}
