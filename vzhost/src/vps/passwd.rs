//! `vzhost passwd`: set a user's password hash in the VPS's own
//! /etc/shadow, without ever following a VPS's path as host root.
//!
//! - A stopped VPS is changed in its layer, from the host, through
//!   [`SafeDir`]: /etc/passwd and /etc/shadow are read from its upper layer
//!   where it has them (a whiteout there means the VPS deleted them), else
//!   from its template; the new /etc/shadow is written into the upper layer
//!   with the owner and mode the old one had.
//! - A running VPS is changed from inside: the `vzhost __passwd` helper
//!   joins its namespaces as its root and does the same read-modify-write
//!   on its `/`, with the same [`SafeDir`]. It is vzhost's own code (no
//!   binary of the VPS runs), the kernel applies the VPS's own permissions,
//!   and the daemon waits for it at most [`HELPER_TIMEOUT`].
use std::{
    io::{Read, Write as _},
    os::fd::AsFd as _,
    path::Path,
    process::Stdio,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    error::{LifecycleError, Result},
    host::{Host, lock, now},
};
use crate::{
    model::{IdMap, Name, Spec},
    ns::attach::{self, AttachPlan},
    rootfs::safe::{Owner, SafeDir, SafeError, is_whiteout},
};

/// The most of /etc/passwd or /etc/shadow read.
const CAP: u64 = 4 << 20;
/// How long the daemon waits for the helper inside a running VPS.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// The helper's exit status when the user does not exist.
const EXIT_NO_USER: i32 = 3;
/// The helper subcommand.
pub const PASSWD_HELPER: &str = "__passwd";

/// What the passwd helper is handed on its stdin (never on its command
/// line, which every host user can read).
#[derive(Debug, Serialize, Deserialize)]
pub struct PasswdPlan {
    pub vps: AttachPlan,
    pub user: String,
    pub hash: String,
}

/// Why a shadow file cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("it has no /etc/passwd")]
    NoPasswd,
    #[error("has no user {0} in its /etc/passwd")]
    NoUser(String),
    #[error("its /etc/shadow is not text; fix or remove it first")]
    NotText,
}

impl ShadowError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::NoPasswd | Self::NoUser(_) => ErrorKind::NotFound,
            Self::NotText => ErrorKind::Conflict,
        }
    }
}

impl Host {
    /// Set `user`'s password in the VPS's own /etc/shadow (SHA-512 crypt).
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
        match self.live_runtime(&vps) {
            Some(_) => self.passwd_inside(&vps, user, &hash)?,
            None => self.passwd_in_layer(&spec, user, &hash)?,
        }
        tracing::info!(vps = name, user, "password set");
        Ok(())
    }

    fn passwd_in_layer(&self, spec: &Spec, user: &str, hash: &str) -> Result<()> {
        let files = |source| LifecycleError::Files {
            name: spec.name.to_string(),
            source,
        };
        let ids = spec.idmap;
        let template =
            SafeDir::open(&self.templates.resolve(&spec.template)?, None).map_err(files)?;
        let upper = SafeDir::open(&self.store.dir(&spec.name).upper(), Some(ids)).map_err(files)?;
        let layered = |rel| read_layered(&upper, &template, rel, ids).map_err(files);
        let passwd = layered("etc/passwd")?.map(|(bytes, _)| bytes);
        let shadow = layered("etc/shadow")?;
        let root = Owner {
            uid: ids.base,
            gid: ids.base,
            mode: 0o600,
        };
        let (text, owner) = updated_shadow(passwd.as_deref(), shadow, root, user, hash)
            .map_err(|e| shadow_error(&spec.name, e))?;
        let etc_owner = match template.lstat("etc").map_err(files)? {
            Some(st) => to_host(ids, Owner::of(&st)),
            None => Owner {
                mode: 0o755,
                ..root
            },
        };
        upper
            .make_dir("etc", etc_owner)
            .and_then(|etc| etc.write("shadow", text.as_bytes(), owner))
            .map_err(files)
    }

    fn passwd_inside(&self, vps: &Name, user: &str, hash: &str) -> Result<()> {
        let io_err = |what: &str| {
            let (name, what) = (vps.to_string(), what.to_owned());
            move |source| LifecycleError::Io { name, what, source }
        };
        let plan = PasswdPlan {
            vps: self.attach_plan(vps.as_str(), Vec::new(), false)?,
            user: user.to_owned(),
            hash: hash.to_owned(),
        };
        let mut child = crate::ns::helper::command(&self.exe, PASSWD_HELPER)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("run the passwd helper"))?;
        let sent = child
            .stdin
            .take()
            .expect("piped")
            .write_all(&serde_json::to_vec(&plan).expect("plan serializes"));
        let exited = crate::sys::pidfd_open(child.id()).is_ok_and(|fd| {
            crate::sys::pidfd_wait_exit(fd.as_fd(), HELPER_TIMEOUT.as_millis() as i32)
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io_err("set the password inside the VPS")(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the helper did not finish within {HELPER_TIMEOUT:?}; it was killed"),
                ),
            ));
        }
        let status = child.wait().map_err(io_err("wait for the passwd helper"))?;
        let mut why = String::new();
        if let Some(err) = child.stderr.take() {
            let _ = err.take(4096).read_to_string(&mut why);
        }
        match status.code() {
            Some(0) => sent.map_err(io_err("hand the plan to the passwd helper")),
            Some(EXIT_NO_USER) => Err(shadow_error(vps, ShadowError::NoUser(user.to_owned()))),
            _ => Err(io_err("set the password inside the VPS")(
                std::io::Error::other(why.trim().to_owned()),
            )),
        }
    }
}

fn shadow_error(name: &Name, e: ShadowError) -> LifecycleError {
    match e {
        ShadowError::NoUser(user) => LifecycleError::NoUser {
            name: name.to_string(),
            user,
        },
        source => LifecycleError::Shadow {
            name: name.to_string(),
            source,
        },
    }
}

/// Host ids for an owner as the template's files have it (VPS ids); an id
/// the VPS does not map is its nobody.
fn to_host(ids: IdMap, owner: Owner) -> Owner {
    let map = |id: u32| ids.base + if id < ids.count { id } else { 65_534 };
    Owner {
        uid: map(owner.uid),
        gid: map(owner.gid),
        mode: owner.mode,
    }
}

/// File `rel` as the stopped VPS sees it, with its owner in host ids: from
/// its upper layer, else its template; None if it has none.
fn read_layered(
    upper: &SafeDir,
    template: &SafeDir,
    rel: &str,
    ids: IdMap,
) -> std::result::Result<Option<(Vec<u8>, Owner)>, SafeError> {
    let (dir, owner) = match upper.lstat(rel)? {
        Some(st) if is_whiteout(&st) => return Ok(None),
        Some(st) => (upper, Owner::of(&st)),
        None => match template.lstat(rel)? {
            Some(st) => (template, to_host(ids, Owner::of(&st))),
            None => return Ok(None),
        },
    };
    Ok(dir.read(rel, CAP)?.map(|bytes| (bytes, owner)))
}

/// The new /etc/shadow and its owner: the old one's (else `default`),
/// with `user`'s hash set; `user` must be in /etc/passwd.
fn updated_shadow(
    passwd: Option<&[u8]>,
    shadow: Option<(Vec<u8>, Owner)>,
    default: Owner,
    user: &str,
    hash: &str,
) -> std::result::Result<(String, Owner), ShadowError> {
    let passwd = String::from_utf8_lossy(passwd.ok_or(ShadowError::NoPasswd)?);
    if !passwd.lines().any(|l| l.split(':').next() == Some(user)) {
        return Err(ShadowError::NoUser(user.to_owned()));
    }
    let (old, owner) = match shadow {
        Some((bytes, owner)) => (
            String::from_utf8(bytes).map_err(|_| ShadowError::NotText)?,
            owner,
        ),
        None => (String::new(), default),
    };
    Ok((set_shadow_hash(&old, user, hash), owner))
}

/// The `vzhost __passwd` helper: read a [`PasswdPlan`] on `input`, join the
/// VPS as its root, and set the hash in its /etc/shadow. Returns the exit
/// status (0, [`EXIT_NO_USER`], or 1 with the reason on stderr).
pub fn passwd_helper(input: impl Read) -> i32 {
    #[derive(Debug, thiserror::Error)]
    enum Failed {
        #[error("passwd plan: {0}")]
        Plan(#[from] serde_json::Error),
        #[error(transparent)]
        Attach(#[from] attach::AttachError),
        #[error(transparent)]
        Files(#[from] SafeError),
        #[error("the VPS {0}")]
        Shadow(#[from] ShadowError),
    }
    let run = || -> std::result::Result<(), Failed> {
        let plan: PasswdPlan = serde_json::from_reader(input.take(1 << 16))?;
        attach::join(&plan.vps)?;
        let root = SafeDir::open(Path::new("/"), None)?;
        let passwd = root.read("etc/passwd", CAP)?;
        let shadow = match root.lstat("etc/shadow")? {
            Some(st) => root.read("etc/shadow", CAP)?.map(|b| (b, Owner::of(&st))),
            None => None,
        };
        let default = Owner {
            uid: 0,
            gid: 0,
            mode: 0o600,
        };
        let (text, owner) =
            updated_shadow(passwd.as_deref(), shadow, default, &plan.user, &plan.hash)?;
        root.write("etc/shadow", text.as_bytes(), owner)?;
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(Failed::Shadow(ShadowError::NoUser(_))) => EXIT_NO_USER,
        Err(e) => {
            eprintln!("vzhost: {e}");
            1
        }
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
#[path = "passwd_tests.rs"]
mod tests;
