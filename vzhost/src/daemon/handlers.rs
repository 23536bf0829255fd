//! What each request does to the host: every call the daemon makes into
//! [`Host`] is in this file, each answering with the library's own types.
//! The host locks what it must itself (a lock per VPS), so requests on
//! different VPSs, list, stat and scrapes run side by side.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    api::{self, Event, Session},
    channel::{ApiError, Channel},
    session,
};
use crate::{
    ksal::EventLog,
    metrics::{DenialCount, HostStat, VpsStat},
    model::{ErrorKind, Runtime, Spec, Verdict, VpsStatus},
    ns::{attach::AttachPlan, helper::HelperError},
    policy::{Mode, Policy, watch::FileStatus},
    rootfs::{TemplateError, TemplateInfo},
    vps::{CreateRequest, Host, LifecycleError},
};

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error("bad request: {0}")]
    Request(#[from] ApiError),
    #[error("no policy {0} is in force; `vzhost policy list` shows them")]
    NoPolicy(String),
    #[error("exec needs a command: vzhost exec NAME -- CMD...")]
    NoCommand,
    #[error(
        "the console of VPS {name} does not answer ({source}); restart the VPS to get its console back"
    )]
    Console {
        name: String,
        source: std::io::Error,
    },
    #[error("the console of VPS {0} is attached in another session; detach there first (Ctrl-])")]
    ConsoleBusy(String),
    #[error("cannot set up the session's {what}: {source}")]
    Session {
        what: &'static str,
        source: std::io::Error,
    },
}

impl HandlerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Lifecycle(e) => e.kind(),
            Self::Template(e) => e.kind(),
            Self::Helper(e) => e.kind(),
            Self::Request(e) => e.kind(),
            Self::NoPolicy(_) => ErrorKind::NotFound,
            Self::NoCommand => ErrorKind::Invalid,
            Self::Console { .. } | Self::ConsoleBusy(_) => ErrorKind::Conflict,
            Self::Session { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, HandlerError>;

/// Events kept for `vzhost events`.
const EVENT_LOG_CAPACITY: usize = 10_000;
/// The longest an events request may wait for one.
const MAX_EVENT_WAIT: Duration = Duration::from_secs(60);

/// What the request handlers share: the host and the KSAL's event log.
#[derive(Clone)]
pub struct Handlers {
    host: Arc<Host>,
    events: Arc<EventLog>,
}

impl Handlers {
    pub fn new(host: Host) -> Self {
        Self {
            host: Arc::new(host),
            events: Arc::new(EventLog::new(EVENT_LOG_CAPACITY)),
        }
    }

    /// Watch every VPS's init for an exit of its own; never returns.
    pub fn watch_inits(&self) {
        self.host.clone().watch_inits();
    }

    pub fn event_log(&self) -> Arc<EventLog> {
        self.events.clone()
    }

    fn host(&self) -> &Host {
        &self.host
    }

    pub fn create(&self, r: &CreateRequest) -> Result<Spec> {
        Ok(self.host().create(r)?)
    }

    pub fn start(&self, name: &str) -> Result<Runtime> {
        Ok(self.host().start(name)?)
    }

    pub fn stop(&self, name: &str) -> Result<()> {
        Ok(self.host().stop(name)?)
    }

    pub fn restart(&self, name: &str) -> Result<Runtime> {
        Ok(self.host().restart(name)?)
    }

    pub fn destroy(&self, name: &str, force: bool) -> Result<()> {
        let vps_id = self.host().destroy(name, force)?;
        self.events.forget(vps_id);
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<VpsStatus>> {
        Ok(self.host().list()?)
    }

    pub fn set(&self, r: &api::Set) -> Result<Spec> {
        let h = self.host();
        if let Some(text) = &r.ssh_keys {
            h.add_ssh_keys(&r.name, text)?;
        }
        Ok(h.set(&r.name, &r.limits)?)
    }

    pub fn passwd(&self, r: &api::Passwd) -> Result<()> {
        Ok(self.host().passwd(&r.name, &r.user, &r.password)?)
    }

    pub fn stat(&self, name: Option<&str>) -> Result<Vec<VpsStat>> {
        Ok(self.host().stat(name)?)
    }

    pub fn policy_list(&self) -> Vec<FileStatus> {
        self.host().policy_files()
    }

    pub fn policy_show(&self, name: &str) -> Result<Policy> {
        self.host()
            .policy(name)
            .ok_or_else(|| HandlerError::NoPolicy(name.to_owned()))
    }

    pub fn template_list(&self) -> Vec<TemplateInfo> {
        self.host().templates().list()
    }

    pub fn template_import(&self, r: &api::TemplateImport) -> Result<TemplateInfo> {
        Ok(self
            .host()
            .templates()
            .import(&r.name, Path::new(&r.path))?)
    }

    /// Build a template, telling the caller on `chan` each stage reached.
    pub fn template_create(
        &self,
        chan: &mut Channel,
        r: &api::TemplateCreate,
    ) -> Result<TemplateInfo> {
        Ok(self
            .host()
            .templates()
            .create(&r.name, &r.build, &mut |line| {
                // A caller who hung up still gets the template built.
                let _ = chan.send(&api::Reply::Ok(api::Progress::Line(line.to_owned())), &[]);
            })?)
    }

    pub fn reload_policies(&self) {
        self.host().reload_policies();
    }

    pub fn shutdown(&self) {
        self.host().shutdown();
    }

    /// Events after `r.after` (of VPS `r.name`, or all), waiting up to
    /// `r.wait_ms` for one; each carries its VPS's name and its rule's.
    pub fn events(&self, r: &api::Events) -> Vec<Event> {
        let wait = Duration::from_millis(r.wait_ms).min(MAX_EVENT_WAIT);
        let logged = self.events.after(r.after, wait);
        let names = self.host().event_names();
        logged
            .into_iter()
            .filter_map(|logged| {
                let vps = names.vps(logged.event.vps_id).map(str::to_owned);
                if r.name.is_some() && vps != r.name {
                    return None;
                }
                let rule = names.rule(logged.event.vps_id, logged.event.rule_id);
                Some(Event { logged, vps, rule })
            })
            .collect()
    }

    /// The figures of one scrape.
    pub fn host_stat(&self) -> HostStat {
        let h = self.host();
        let counts = self.events.counts();
        // Names are looked up only when there is something to name.
        let denials = if counts.is_empty() {
            Vec::new()
        } else {
            let names = h.event_names();
            counts
                .into_iter()
                .map(|((vps_id, hook, rule_id, verdict), count)| DenialCount {
                    vps: names
                        .vps(vps_id)
                        .map_or_else(|| format!("vps#{vps_id}"), str::to_owned),
                    hook,
                    rule: names.rule(vps_id, rule_id),
                    mode: match verdict {
                        Verdict::Denied => Mode::Enforce,
                        Verdict::Audited => Mode::Audit,
                    },
                    count,
                })
                .collect()
        };
        HostStat {
            vps: h.stat(None).unwrap_or_default(),
            denials,
            events_dropped: h.events_dropped(),
            policy_reload_errors: h.policy_reload_errors(),
        }
    }

    /// Run a command in a VPS for the caller on `chan`.
    pub fn exec(&self, chan: &mut Channel, r: api::Exec) -> Result<Session> {
        if r.argv.is_empty() {
            return Err(HandlerError::NoCommand);
        }
        let (plan, exe) = self.attach_plan(&r.name, r.argv, r.tty)?;
        session::run(chan, &exe, &plan)
    }

    /// A login shell in a VPS, on a pty, for the caller on `chan`.
    pub fn enter(&self, chan: &mut Channel, r: &api::Enter) -> Result<Session> {
        let argv = vec!["/bin/sh".into(), "-l".into()];
        let (plan, exe) = self.attach_plan(&r.name, argv, true)?;
        session::run(chan, &exe, &plan)
    }

    /// The console of a running VPS, for the caller on `chan`.
    pub fn console(&self, chan: &mut Channel, name: &str) -> Result<Session> {
        let socket = self.host().console_socket(name)?;
        session::console(chan, name, &socket)
    }

    /// What the console of a VPS recorded.
    pub fn console_log(&self, name: &str) -> Result<String> {
        let bytes = self.host().console_log(name)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn attach_plan(
        &self,
        name: &str,
        argv: Vec<String>,
        tty: bool,
    ) -> Result<(AttachPlan, PathBuf)> {
        let h = self.host();
        Ok((h.attach_plan(name, argv, tty)?, h.exe().to_owned()))
    }
}
