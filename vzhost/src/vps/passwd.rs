//! `vzhost passwd`: set a user's password hash in the VPS's own
//! /etc/shadow.
use std::{fs, path::PathBuf, time::Duration};

use super::{
    create::{ensure_owned_dir, write_owned},
    error::{LifecycleError, Result},
    host::{Host, lock, now},
};
use crate::{model::Name, ns::helper};

/// How long the VPS's own shell may take to write its /etc/shadow.
const PASSWD_TIMEOUT: Duration = Duration::from_secs(10);

fn io_err(name: &Name, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LifecycleError {
    let name = name.to_string();
    let what = what.into();
    move |source| LifecycleError::Io { name, what, source }
}

impl Host {
    /// Set `user`'s password in the VPS's own /etc/shadow (SHA-512 crypt).
    /// A running VPS is changed from inside; a stopped one in its layer.
    pub fn passwd(&self, name: &str, user: &str, password: &str) -> Result<()> {
        let vps = Name::new(name)?;
        let vps_lock = self.vps_lock(&vps);
        let _serial = lock(&vps_lock);
        let spec = self.store.load(&vps)?;
        let hash = sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default())
            .map_err(|e| LifecycleError::Io {
                name: name.into(),
                what: "hash the password".into(),
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        let dir = self.store.dir(&vps);
        let template = self.templates.resolve(&spec.template)?;
        let read_layered = |rel: &str| -> Result<String> {
            let upper = dir.upper().join(rel);
            let path = if upper.exists() {
                upper
            } else {
                template.join(rel)
            };
            fs::read_to_string(&path).map_err(io_err(&vps, format!("read {}", path.display())))
        };
        // The running VPS's own view is the truth while it runs.
        let running = self.live_runtime(&vps);
        let (passwd, shadow) = match &running {
            Some(r) => {
                let root = PathBuf::from(format!("/proc/{}/root", r.init_pid));
                let read = |rel: &str| {
                    fs::read_to_string(root.join(rel)).map_err(io_err(&vps, format!("read /{rel}")))
                };
                (read("etc/passwd")?, read("etc/shadow").unwrap_or_default())
            }
            None => (
                read_layered("etc/passwd")?,
                read_layered("etc/shadow").unwrap_or_default(),
            ),
        };
        if !passwd.lines().any(|l| l.split(':').next() == Some(user)) {
            return Err(LifecycleError::NoUser {
                name: name.into(),
                user: user.into(),
            });
        }
        let updated = set_shadow_hash(&shadow, user, &hash);
        match running {
            Some(_) => {
                let plan = self.attach_plan(
                    name,
                    vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "umask 077 && cat > /etc/shadow.vzhost && mv /etc/shadow.vzhost /etc/shadow"
                            .into(),
                    ],
                    false,
                )?;
                let write_err = io_err(&vps, "write /etc/shadow");
                let ran = helper::run_in_vps(&self.exe, &plan, updated.as_bytes(), PASSWD_TIMEOUT)
                    .map_err(|e| io_err(&vps, "write /etc/shadow")(std::io::Error::other(e)))?;
                if ran.code != 0 {
                    return Err(write_err(std::io::Error::other(ran.stderr)));
                }
            }
            None => {
                let etc = dir.upper().join("etc");
                ensure_owned_dir(&etc, spec.idmap.base).map_err(io_err(&vps, "create etc"))?;
                write_owned(
                    &etc.join("shadow"),
                    updated.as_bytes(),
                    0o600,
                    spec.idmap.base,
                )
                .map_err(io_err(&vps, "write /etc/shadow"))?;
            }
        }
        tracing::info!(vps = name, user, "password set");
        Ok(())
    }
}

/// `shadow` with `user`'s hash set (the line added if missing).
fn set_shadow_hash(shadow: &str, user: &str, hash: &str) -> String {
    let days = now() / 86_400;
    let mut found = false;
    let mut out: Vec<String> = shadow
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.first() == Some(&user) && fields.len() >= 3 {
                found = true;
                fields[1] = hash;
                let d = days.to_string();
                let mut owned: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
                owned[2] = d;
                owned.join(":")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(format!("{user}:{hash}:{days}:0:99999:7:::"));
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_lines_are_replaced_or_added() {
        let s = "root:*:1:0:99999:7:::\nbob:!:1:0:99999:7:::\n";
        let out = set_shadow_hash(s, "root", "$6$x$y");
        let root = out.lines().next().unwrap();
        assert!(root.starts_with("root:$6$x$y:"), "{root}");
        assert!(root.ends_with(":0:99999:7:::"), "{root}");
        assert!(out.contains("bob:!:1:"));
        let added = set_shadow_hash("", "alice", "$6$a$b");
        assert!(added.starts_with("alice:$6$a$b:"));
    }

    #[test]
    fn sha512_hashes_verify() {
        let h = sha_crypt::sha512_simple("s3cret", &sha_crypt::Sha512Params::default()).unwrap();
        assert!(h.starts_with("$6$"));
        assert!(sha_crypt::sha512_check("s3cret", &h).is_ok());
        assert!(sha_crypt::sha512_check("wrong", &h).is_err());
    }
}
