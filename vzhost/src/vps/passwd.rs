//! Login credentials in a VPS's own files, without ever following a VPS's
//! path as host root: `vzhost passwd` sets a user's password hash in its
//! /etc/shadow (keeping the file's owner, group and mode, refusing a user
//! its /etc/passwd lacks), `--ssh-key` adds keys to root's
//! /root/.ssh/authorized_keys (0700 directory, 0600 file, the VPS root's).
//!
//! - A stopped VPS is changed in its layer, from the host, through
//!   [`SafeDir`]: files are read from its upper layer where it has them (a
//!   whiteout there means the VPS deleted them), else from its template;
//!   what is written goes into the upper layer, directories made there as
//!   the template has them.
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
    ssh_keys::{merged_keys, parse_keys},
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

/// A change to a VPS's login credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// `user`'s password hash in /etc/shadow (`user` must be in
    /// /etc/passwd).
    Password { user: String, hash: String },
    /// Public keys (checked by [`super::ssh_keys::parse_keys`]) added to
    /// root's /root/.ssh/authorized_keys.
    AuthorizedKeys { keys: Vec<String> },
}

/// What the passwd helper is handed on its stdin (never on its command
/// line, which every host user can read).
#[derive(Debug, Serialize, Deserialize)]
pub struct PasswdPlan {
    pub vps: AttachPlan,
    pub change: Credential,
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
        let hash = sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default())
            .map_err(|e| LifecycleError::Io {
                name: name.into(),
                what: "hash the password".into(),
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        let user = user.to_owned();
        self.change_credential(name, Credential::Password { user, hash })?;
        tracing::info!(vps = name, "password set");
        Ok(())
    }

    /// Add the OpenSSH public keys in `text` (each line checked) to the
    /// VPS root's authorized keys.
    pub fn add_ssh_keys(&self, name: &str, text: &str) -> Result<()> {
        let keys = parse_keys(text).map_err(|source| LifecycleError::SshKey {
            name: name.to_owned(),
            source,
        })?;
        let count = keys.len();
        self.change_credential(name, Credential::AuthorizedKeys { keys })?;
        tracing::info!(vps = name, count, "ssh keys added");
        Ok(())
    }

    fn change_credential(&self, name: &str, change: Credential) -> Result<()> {
        let vps = Name::new(name)?;
        let vps_lock = self.vps_lock(&vps);
        let _serial = lock(&vps_lock);
        let spec = self.store.load(&vps)?;
        match self.live_runtime(&vps) {
            Some(_) => self.change_inside(&vps, change),
            None => self.change_in_layer(&spec, &change),
        }
    }

    fn change_in_layer(&self, spec: &Spec, change: &Credential) -> Result<()> {
        let files = |source| LifecycleError::Files {
            name: spec.name.to_string(),
            source,
        };
        let ids = spec.idmap;
        let view = View::Layers {
            template: SafeDir::open(&self.templates.resolve(&spec.template)?, None)
                .map_err(files)?,
            upper: SafeDir::open(&self.store.dir(&spec.name).upper(), Some(ids)).map_err(files)?,
            ids,
        };
        match view.apply(change) {
            Ok(()) => Ok(()),
            Err(Failed::Files(e)) => Err(files(e)),
            Err(Failed::Shadow(e)) => Err(shadow_error(&spec.name, e)),
        }
    }

    fn change_inside(&self, vps: &Name, change: Credential) -> Result<()> {
        let io_err = |what: &str| {
            let (name, what) = (vps.to_string(), what.to_owned());
            move |source| LifecycleError::Io { name, what, source }
        };
        let user = match &change {
            Credential::Password { user, .. } => Some(user.clone()),
            Credential::AuthorizedKeys { .. } => None,
        };
        let plan = PasswdPlan {
            vps: self.attach_plan(vps.as_str(), Vec::new(), false)?,
            change,
        };
        let mut child = crate::ns::helper::command(&self.exe, PASSWD_HELPER)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("run the credentials helper"))?;
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
            return Err(io_err("change credentials inside the VPS")(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the helper did not finish within {HELPER_TIMEOUT:?}; it was killed"),
                ),
            ));
        }
        let status = child
            .wait()
            .map_err(io_err("wait for the credentials helper"))?;
        let mut why = String::new();
        if let Some(err) = child.stderr.take() {
            let _ = err.take(4096).read_to_string(&mut why);
        }
        match (status.code(), user) {
            (Some(0), _) => sent.map_err(io_err("hand the plan to the credentials helper")),
            (Some(EXIT_NO_USER), Some(user)) => Err(shadow_error(vps, ShadowError::NoUser(user))),
            _ => Err(io_err("change credentials inside the VPS")(
                std::io::Error::other(why.trim().to_owned()),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Files(#[from] SafeError),
    #[error("the VPS {0}")]
    Shadow(#[from] ShadowError),
}

/// A VPS's files as its root sees them, to change.
enum View {
    /// `/` of a running VPS, from inside (ids as the VPS has them).
    Inside(SafeDir),
    /// A stopped VPS's upper layer over its template, from the host.
    Layers {
        upper: SafeDir,
        template: SafeDir,
        ids: IdMap,
    },
}

impl View {
    /// The VPS's root user as an owner, with `mode`.
    fn root(&self, mode: u32) -> Owner {
        let id = match self {
            Self::Inside(_) => 0,
            Self::Layers { ids, .. } => ids.base,
        };
        Owner {
            uid: id,
            gid: id,
            mode,
        }
    }

    /// File `rel` and its owner; None if the VPS has none.
    fn read(&self, rel: &str) -> std::result::Result<Option<(Vec<u8>, Owner)>, SafeError> {
        match self {
            Self::Inside(root) => match root.lstat(rel)? {
                Some(st) => Ok(root.read(rel, CAP)?.map(|b| (b, Owner::of(&st)))),
                None => Ok(None),
            },
            Self::Layers {
                upper,
                template,
                ids,
            } => read_layered(upper, template, rel, *ids),
        }
    }

    /// Directory `rel` to write in, each missing part made as the
    /// template has it, else as root's with `mode`.
    fn dir(&self, rel: &str, mode: u32) -> std::result::Result<SafeDir, SafeError> {
        match self {
            Self::Inside(root) => root.make_dir(rel, self.root(mode)),
            Self::Layers {
                upper,
                template,
                ids,
            } => {
                let mut dir = upper.dir(".")?;
                let mut path = String::new();
                for part in rel.split('/') {
                    path = if path.is_empty() {
                        part.to_owned()
                    } else {
                        format!("{path}/{part}")
                    };
                    let owner = match template.lstat(&path)? {
                        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                            to_host(*ids, Owner::of(&st))
                        }
                        _ => self.root(mode),
                    };
                    dir = dir.make_dir(part, owner)?;
                }
                Ok(dir)
            }
        }
    }

    fn apply(&self, change: &Credential) -> std::result::Result<(), Failed> {
        match change {
            Credential::Password { user, hash } => {
                let passwd = self.read("etc/passwd")?.map(|(bytes, _)| bytes);
                let shadow = self.read("etc/shadow")?;
                let (text, owner) =
                    updated_shadow(passwd.as_deref(), shadow, self.root(0o600), user, hash)?;
                self.dir("etc", 0o755)?
                    .write("shadow", text.as_bytes(), owner)?;
            }
            Credential::AuthorizedKeys { keys } => {
                let old = self.read("root/.ssh/authorized_keys")?;
                let old = old.map(|(b, _)| String::from_utf8_lossy(&b).into_owned());
                let text = merged_keys(old.as_deref().unwrap_or(""), keys);
                self.dir("root/.ssh", 0o700)?.write(
                    "authorized_keys",
                    text.as_bytes(),
                    self.root(0o600),
                )?;
            }
        }
        Ok(())
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
/// VPS as its root, and make the change in its files. Returns the exit
/// status (0, [`EXIT_NO_USER`], or 1 with the reason on stderr).
pub fn passwd_helper(input: impl Read) -> i32 {
    #[derive(Debug, thiserror::Error)]
    enum HelperFailed {
        #[error("credentials plan: {0}")]
        Plan(#[from] serde_json::Error),
        #[error(transparent)]
        Attach(#[from] attach::AttachError),
        #[error(transparent)]
        Change(#[from] Failed),
    }
    let run = || -> std::result::Result<(), HelperFailed> {
        let plan: PasswdPlan = serde_json::from_reader(input.take(1 << 20))?;
        attach::join(&plan.vps)?;
        let root = SafeDir::open(Path::new("/"), None).map_err(Failed::from)?;
        View::Inside(root).apply(&plan.change)?;
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(HelperFailed::Change(Failed::Shadow(ShadowError::NoUser(_)))) => EXIT_NO_USER,
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
