//! A daemon's identity: a short tag, stable across restarts, that every
//! name a daemon makes in a host-wide namespace carries (its cgroups), so
//! two daemons on one host never take each other's objects for their own.
use std::{fmt, path::Path};

use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DaemonId(String);

impl DaemonId {
    /// Hex digits kept of the hash: 32 bits, short enough for cgroup and
    /// interface names, and two roots collide once in about 4e9.
    pub const LEN: usize = 8;

    /// The identity of the daemon whose state root is `canonical_root`.
    /// The caller resolves the path first (`fs::canonicalize`), so that two
    /// spellings of one root give one identity.
    pub fn of_root(canonical_root: &Path) -> Self {
        let digest = Sha256::digest(canonical_root.as_os_str().as_encoded_bytes());
        Self(
            digest
                .iter()
                .take(Self::LEN / 2)
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DaemonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_root_gives_the_same_identity_across_releases() {
        // A restarted (or upgraded) daemon must find the cgroups it made:
        // the value is pinned, not just compared with itself.
        assert_eq!(
            DaemonId::of_root(Path::new("/var/lib/vzhost")).as_str(),
            "5cf4ba34"
        );
    }

    #[test]
    fn different_roots_give_short_distinct_names() {
        let a = DaemonId::of_root(Path::new("/tmp/a"));
        let b = DaemonId::of_root(Path::new("/tmp/b"));
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), DaemonId::LEN);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
        }
    }
}
