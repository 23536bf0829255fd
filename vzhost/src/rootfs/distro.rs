//! Templates from distributions: a Debian root directory made from the
//! Debian archive by debootstrap. What to build is checked here before
//! anything runs (a package, release or mirror that could turn into an
//! option or a path is refused), and debootstrap's stage lines reach the
//! caller as they come. Making the tree fit for VPS use is [`super::prep`].
use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
};

use serde::{Deserialize, Serialize};

/// The Debian release built when none is named.
pub const DEFAULT_RELEASE: &str = "bookworm";
/// Always installed: what makes a VPS a server one can log in to.
pub const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "openssh-server",
    "iproute2",
    "ifupdown",
    "procps",
];
/// Where debootstrap keeps a script per release it knows.
const SCRIPTS: &str = "/usr/share/debootstrap/scripts";
/// Lines of debootstrap's output a failure quotes.
const TAIL: usize = 8;

/// The distributions a template can be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    Debian,
}

impl Distro {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debian => "debian",
        }
    }
}

/// What to build: a release of a distribution, with extra packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistroBuild {
    pub distro: Distro,
    pub release: String,
    /// Installed beside [`BASE_PACKAGES`].
    #[serde(default)]
    pub packages: Vec<String>,
    /// The archive to build from; None: debootstrap's own default.
    #[serde(default)]
    pub mirror: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DistroError {
    #[error("invalid {field} {value:?}: {why}")]
    Field {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("debootstrap is not installed: install debootstrap (cargo xtask setup)")]
    NoDebootstrap,
    #[error(
        "unknown Debian release {0:?}: debootstrap has no script for it in {SCRIPTS}; \
         name a release it knows with --release, e.g. {DEFAULT_RELEASE}"
    )]
    UnknownRelease(String),
    #[error("debootstrap of {release} into {path} failed ({status}):\n{tail}")]
    Failed {
        release: String,
        path: String,
        status: std::process::ExitStatus,
        tail: String,
    },
    #[error("run debootstrap for {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
}

impl DistroError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::Field { .. } | Self::UnknownRelease(_) => ErrorKind::Invalid,
            Self::NoDebootstrap | Self::Failed { .. } | Self::Spawn { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, DistroError>;

/// Debian's package names: lower case, digits, `+ - .`, starting with a
/// letter or digit; so a name can never be read as an option.
fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn is_release_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl DistroBuild {
    /// A build of `release` (or the default) with extra `packages`.
    pub fn debian(release: Option<&str>, packages: &[String], mirror: Option<&str>) -> Self {
        Self {
            distro: Distro::Debian,
            release: release.unwrap_or(DEFAULT_RELEASE).to_owned(),
            packages: packages.to_vec(),
            mirror: mirror.map(str::to_owned),
        }
    }

    /// The template name used when none is given: `debian-bookworm`.
    pub fn default_name(&self) -> String {
        format!("{}-{}", self.distro.as_str(), self.release)
    }

    /// Refuse what could become an option, a path or another URL scheme.
    pub fn check(&self) -> Result<()> {
        let bad = |field, value: &str, why| {
            Err(DistroError::Field {
                field,
                value: value.to_owned(),
                why,
            })
        };
        if !is_release_name(&self.release) {
            return bad(
                "--release",
                &self.release,
                "a Debian release is a name such as bookworm (a-z, 0-9, '-')",
            );
        }
        if let Some(p) = self.packages.iter().find(|p| !is_package_name(p)) {
            return bad(
                "--packages",
                p,
                "list Debian package names separated by commas, e.g. curl,less",
            );
        }
        if let Some(m) = &self.mirror {
            let scheme_ok = ["http://", "https://", "file:///"]
                .iter()
                .any(|s| m.starts_with(s));
            if !scheme_ok || m.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(
                    "--mirror",
                    m,
                    "give the archive's URL, http(s)://HOST/debian or file:///DIR",
                );
            }
        }
        Ok(())
    }

    /// Every package installed: the base ones, then the caller's.
    pub fn all_packages(&self) -> Vec<String> {
        let mut all: Vec<String> = BASE_PACKAGES.iter().map(|&p| p.to_owned()).collect();
        for p in &self.packages {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    }

    /// debootstrap's command line for a build into `target`.
    pub fn debootstrap_args(&self, target: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--variant=minbase".into(),
            format!("--include={}", self.all_packages().join(",")).into(),
            self.release.clone().into(),
            target.into(),
        ];
        args.extend(self.mirror.iter().map(OsString::from));
        args
    }

    /// Build the root directory `target` (which must exist, empty); each
    /// stage debootstrap reaches goes to `progress`.
    pub fn build(&self, target: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
        self.check()?;
        let scripts = Path::new(SCRIPTS);
        if !scripts.is_dir() {
            return Err(DistroError::NoDebootstrap);
        }
        if !scripts.join(&self.release).exists() {
            return Err(DistroError::UnknownRelease(self.release.clone()));
        }
        let mut child = Command::new("debootstrap")
            .args(self.debootstrap_args(target))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => DistroError::NoDebootstrap,
                _ => DistroError::Spawn {
                    path: target.display().to_string(),
                    source,
                },
            })?;
        // Both streams are read as they come, each on a thread, so neither
        // can fill its pipe and stall debootstrap.
        let (tx, rx) = mpsc::channel();
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
        drop(tx);
        let mut stages = Stages::default();
        let mut tail = std::collections::VecDeque::with_capacity(TAIL);
        for line in rx {
            if let Some(stage) = stages.feed(&line) {
                progress(stage);
            }
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(|source| DistroError::Spawn {
            path: target.display().to_string(),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        // debootstrap's own log says more than its last lines.
        let log =
            std::fs::read_to_string(target.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let log_tail: Vec<&str> = log.lines().rev().take(TAIL).collect();
        let mut lines: Vec<String> = tail.into_iter().collect();
        lines.extend(log_tail.into_iter().rev().map(|l| format!("log: {l}")));
        Err(DistroError::Failed {
            release: self.release.clone(),
            path: target.display().to_string(),
            status,
            tail: lines.join("\n"),
        })
    }
}

/// Verbs debootstrap prints once per package.
const PER_PACKAGE: &[&str] = &[
    "Retrieving",
    "Validating",
    "Extracting",
    "Unpacking",
    "Configuring",
];

/// Picks debootstrap's stage lines out of its output: every info line
/// except the hundreds it prints per package, of which only the first of
/// each verb in a run is kept; warnings and errors always.
#[derive(Debug, Default)]
struct Stages {
    run: Vec<String>,
}

impl Stages {
    fn feed<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        let Some(info) = line.strip_prefix("I: ") else {
            return (line.starts_with("W: ") || line.starts_with("E: ")).then_some(line);
        };
        let verb = info.split_whitespace().next().unwrap_or("");
        // "Unpacking the base system..." is a stage, "Unpacking libc6..." is not.
        let stage = info.ends_with("packages...") || info.ends_with("system...");
        if !PER_PACKAGE.contains(&verb) || stage {
            // A stage starts a run: its own verb is not shown again.
            self.run.clear();
            if stage {
                self.run.push(verb.to_owned());
            }
            return Some(line);
        }
        if self.run.iter().any(|v| v == verb) {
            return None;
        }
        self.run.push(verb.to_owned());
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(release: &str, packages: &[&str], mirror: Option<&str>) -> DistroBuild {
        let packages: Vec<String> = packages.iter().map(|&p| p.to_owned()).collect();
        DistroBuild::debian(Some(release), &packages, mirror)
    }

    #[test]
    fn the_command_line_is_minbase_with_the_server_packages_then_the_callers() {
        let b = build("bookworm", &["curl", "openssh-server"], None);
        let args = b.debootstrap_args(Path::new("/t"));
        assert_eq!(
            args,
            [
                "--variant=minbase",
                "--include=systemd-sysv,openssh-server,iproute2,ifupdown,procps,curl",
                "bookworm",
                "/t"
            ]
            .map(OsString::from)
        );
        let m = build("trixie", &[], Some("http://mirror.example/debian"));
        assert_eq!(
            m.debootstrap_args(Path::new("/t")).last().unwrap(),
            "http://mirror.example/debian"
        );
        assert_eq!(m.default_name(), "debian-trixie");
    }

    #[test]
    fn what_could_become_an_option_or_a_path_is_refused_naming_the_field() {
        for (b, field) in [
            (build("--foreign", &[], None), "--release"),
            (build("../etc", &[], None), "--release"),
            (build("bookworm", &["--keyring=/x"], None), "--packages"),
            (build("bookworm", &["a b"], None), "--packages"),
            (build("bookworm", &["Curl"], None), "--packages"),
            (build("bookworm", &[], Some("ftp://x/debian")), "--mirror"),
            (build("bookworm", &[], Some("http://x/ d")), "--mirror"),
        ] {
            let err = b.check().unwrap_err();
            assert!(
                matches!(&err, DistroError::Field { field: f, .. } if *f == field),
                "{b:?}: {err}"
            );
            assert_eq!(err.kind(), crate::model::ErrorKind::Invalid);
        }
        build(
            "bookworm",
            &["libc6-dev", "g++", "python3.11"],
            Some("file:///srv/debian"),
        )
        .check()
        .unwrap();
    }

    #[test]
    fn an_unknown_release_fails_before_anything_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let err = build("no-such-release", &[], None)
            .build(tmp.path(), &mut |_| panic!("no progress expected"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                DistroError::UnknownRelease(_) | DistroError::NoDebootstrap
            ),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn progress_keeps_stages_and_drops_the_per_package_flood() {
        let out = "\
I: Retrieving InRelease
I: Checking Release signature
I: Retrieving Packages
I: Validating Packages
I: Resolving dependencies of required packages...
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving apt 2.6.1
I: Validating apt 2.6.1
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting apt...
W: Failure trying to run: chroot x
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Configuring required packages...
I: Configuring apt...
I: Unpacking the base system...
I: Unpacking apt...
I: Base system installed successfully.
some stray line";
        let mut s = Stages::default();
        let kept: Vec<&str> = out.lines().filter_map(|l| s.feed(l)).collect();
        assert_eq!(
            kept,
            [
                "I: Retrieving InRelease",
                "I: Checking Release signature",
                "I: Retrieving Packages",
                "I: Validating Packages",
                "I: Resolving dependencies of required packages...",
                "I: Retrieving adduser 3.134",
                "I: Validating adduser 3.134",
                "I: Chosen extractor for .deb packages: dpkg-deb",
                "I: Extracting adduser...",
                "W: Failure trying to run: chroot x",
                "I: Installing core packages...",
                "I: Unpacking required packages...",
                "I: Configuring required packages...",
                "I: Unpacking the base system...",
                "I: Base system installed successfully.",
            ]
        );
    }
}
