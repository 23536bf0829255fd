//! Writing a policy file the way configuration management does, and waiting
//! until the daemon holds it.
use std::{fs, time::Duration};

use vzhost::policy::Policy;

use crate::{Daemon, in_vm, wait_for};

impl Daemon {
    /// Write policy `file` whole and rename it into place, then wait until
    /// the daemon holds this text: the parsed policy in force, or the file's
    /// error. The daemon reloads on its own time, and a test that went on
    /// at once could create or start a VPS before it (seen in CI).
    pub fn put_policy(&self, file: &str, text: &str) {
        fs::create_dir_all(self.policies()).unwrap();
        let tmp = self.policies().join(format!(".{file}.tmp"));
        fs::write(&tmp, text).unwrap();
        let path = self.policies().join(file);
        fs::rename(&tmp, &path).unwrap();
        let expected = Policy::parse(file, text);
        let limit = Duration::from_secs(if in_vm() { 50 } else { 10 });
        let held = wait_for(limit, || match &expected {
            Ok(p) => self
                .vz(&["policy", "show", &p.name, "-o", "json"])
                .is_ok_and(|o| {
                    serde_json::from_slice::<serde_json::Value>(&o.stdout).ok()
                        == serde_json::to_value(p).ok()
                }),
            Err(_) => {
                let listed: serde_json::Value =
                    serde_json::from_str(&self.ok(&["policy", "list", "-o", "json"])).unwrap();
                listed.as_array().is_some_and(|files| {
                    files
                        .iter()
                        .any(|f| f["file"] == path.to_str().unwrap() && !f["error"].is_null())
                })
            }
        });
        assert!(
            held,
            "the daemon never took {file}: {}",
            self.ok(&["policy", "list"])
        );
    }
}
