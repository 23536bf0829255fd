//! `vzhost daemon`: owns all state, serves the API on a root-only Unix
//! socket, and re-adopts running VPSs when it restarts. VPSs never depend
//! on the daemon's process: stopping or killing it leaves them running.
pub mod api;

use std::{
    fs,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use api::{Channel, Request, Response};
use serde_json::json;

use crate::{
    cgroup::manager::Hierarchy,
    enforce::Enforcement,
    ksal::{EventLog, Ksal},
    metrics::{DenialCount, HostStat},
    policy::watch::PolicyDir,
    vps::{Host, helper, ranges::RangeRegistry, store::Store},
};

pub const DEFAULT_ROOT: &str = "/var/lib/vzhost";
pub const DEFAULT_SOCKET: &str = "/run/vzhost/vzhost.sock";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {source}")]
    State {
        path: String,
        source: crate::vps::store::StoreError,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::manager::ManagerError),
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("another daemon is serving {0}")]
    AlreadyRunning(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub struct DaemonConfig {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub net: crate::net::NetConfig,
    /// Masquerade VPS traffic leaving by other interfaces (off by default).
    pub nat: bool,
    /// Where `/metrics` is served; None turns the endpoint off.
    pub metrics: Option<std::net::SocketAddr>,
    /// The policies directory, watched for changes.
    pub policies: PathBuf,
    /// Where KSAL maps and links are pinned (None: they go with the daemon).
    pub pins: Option<PathBuf>,
}

type SharedHost = Arc<Host>;

/// What the request handlers share.
#[derive(Clone)]
struct Shared {
    host: SharedHost,
    events: Arc<EventLog>,
}

/// Events kept for `vzhost events`.
const EVENT_LOG_CAPACITY: usize = 10_000;

pub fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    let store = Store::open(&cfg.root).map_err(|source| DaemonError::State {
        path: cfg.root.display().to_string(),
        source,
    })?;
    let cgroups = Hierarchy::for_current_process()?;
    cgroups.prepare()?;
    let _ = crate::ksal::kernel_fs::ensure_mounted(crate::ksal::kernel_fs::BPFFS, "bpf");
    let (mut ksal, lsm_error) = match Ksal::load(cgroups.vps_level(), cfg.pins.as_deref()) {
        Ok(k) => {
            tracing::info!("KSAL LSM hooks attached");
            (Some(k), None)
        }
        Err(e) => {
            tracing::warn!(
                "KSAL LSM hooks unavailable: VPSs whose policy needs them start only if it \
                 allows degraded mode: {e}"
            );
            match Ksal::load_cgroup_only(cgroups.vps_level(), cfg.pins.as_deref()) {
                Ok(k) => (Some(k), Some(e.to_string())),
                Err(e2) => {
                    tracing::error!("KSAL cgroup guards unavailable too: {e2}");
                    (None, Some(e.to_string()))
                }
            }
        }
    };
    let mut policies = PolicyDir::new(&cfg.policies);
    policies.reload();
    let events = Arc::new(EventLog::new(EVENT_LOG_CAPACITY));
    if let Some(reader) = ksal.as_mut().and_then(|k| k.take_events().ok()) {
        let log = events.clone();
        std::thread::Builder::new()
            .name("ksal-events".into())
            .spawn(move || log.collect(reader))
            .map_err(|e| DaemonError::Other(format!("cannot start the event reader: {e}")))?;
    }
    let metrics = cfg
        .metrics
        .map(|addr| {
            crate::metrics::http::bind(addr).map_err(|e| {
                DaemonError::Other(format!(
                    "cannot serve metrics on {addr}: {e}; choose another address with \
                     --metrics ADDR, or turn the endpoint off with --metrics none"
                ))
            })
        })
        .transpose()?;
    let exe = std::env::current_exe()
        .map_err(|e| DaemonError::Other(format!("cannot find own executable: {e}")))?;
    // The bridge is made (or checked: a link of that name that is no
    // bridge is refused) before anything else is.
    crate::net::ensure_bridge(&cfg.net).map_err(|e| DaemonError::Other(e.to_string()))?;
    crate::net::set_nat(&cfg.net, cfg.nat).map_err(|e| DaemonError::Other(e.to_string()))?;
    tracing::info!(nat = cfg.nat, bridge = %cfg.net.bridge, subnet = %cfg.net.subnet, "network ready");
    let host = Host::new(
        store,
        cgroups,
        Enforcement::new(ksal, lsm_error, policies),
        exe,
        cfg.net.clone(),
        RangeRegistry::new(Path::new(crate::vps::ranges::DEFAULT_REGISTRY), &cfg.root),
    );
    let adopted = host
        .adopt()
        .map_err(|e| DaemonError::Other(e.to_string()))?;
    tracing::info!(count = adopted.len(), "adopted running VPSs");
    let listener = bind(&cfg.socket)?;
    let shared = Shared {
        host: Arc::new(host),
        events,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    if let Some(l) = metrics {
        tracing::info!(addr = ?l.local_addr().ok(), "serving metrics at /metrics");
        let s = shared.clone();
        runtime.spawn(crate::metrics::http::serve(
            l,
            Arc::new(move || s.host_stat()),
        ));
    }
    let host = shared.host.clone();
    {
        let (host, dir) = (host.clone(), cfg.policies.clone());
        std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || {
                let watched = crate::policy::watch::watch(&dir, || {
                    host.reload_policies();
                });
                if let Err(e) = watched {
                    tracing::error!(dir = %dir.display(), "cannot watch the policies directory; changes need a daemon restart: {e}");
                }
            })
            .map_err(|e| DaemonError::Other(format!("cannot start the policy watcher: {e}")))?;
    }
    runtime.block_on(serve(listener, shared));
    let _ = fs::remove_file(&cfg.socket);
    host.shutdown();
    tracing::info!("daemon stopped; VPSs keep running");
    Ok(())
}

fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.display().to_string()));
        }
        fs::remove_file(path).map_err(err)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    // Root only: the API can do anything to any VPS.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

async fn serve(listener: std::os::unix::net::UnixListener, shared: Shared) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot serve the socket: {e}");
            return;
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::task::spawn_blocking(move || {
                        let Ok(std) = stream.into_std() else { return };
                        if std.set_nonblocking(false).is_ok() {
                            handle(Channel::new(std), &shared);
                        }
                    });
                }
                Err(e) => tracing::warn!("accept: {e}"),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
}

fn handle(mut chan: Channel, shared: &Shared) {
    let (request, fds) = match chan.recv::<Request>() {
        Ok(r) => r,
        Err(e) => {
            let _ = chan.send(&Response::Error(format!("bad request: {e}")), &[]);
            return;
        }
    };
    let response = match dispatch(&mut chan, shared, request, fds) {
        Ok(v) => Response::Ok(v),
        Err(e) => Response::Error(e),
    };
    let _ = chan.send(&response, &[]);
}

impl Shared {
    /// The figures of one scrape.
    fn host_stat(&self) -> HostStat {
        let h = &self.host;
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
                    mode: if verdict == "audited" {
                        "audit"
                    } else {
                        "enforce"
                    }
                    .into(),
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

    /// Events after `after` (of VPS `name`, or all), waiting up to `wait`
    /// for one; each carries its VPS's name and its rule's name.
    fn events(&self, name: Option<&str>, after: u64, wait: Duration) -> Vec<serde_json::Value> {
        let logged = self.events.after(after, wait);
        let names = self.host.event_names();
        logged
            .into_iter()
            .filter_map(|e| {
                let vps = names.vps(e.event.vps_id);
                if name.is_some() && vps != name {
                    return None;
                }
                let mut v = serde_json::to_value(&e).ok()?;
                v["vps"] = json!(vps);
                v["rule"] = json!(names.rule(e.event.vps_id, e.event.rule_id));
                Some(v)
            })
            .collect()
    }
}

fn dispatch(
    chan: &mut Channel,
    shared: &Shared,
    request: Request,
    fds: Vec<OwnedFd>,
) -> Result<serde_json::Value, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let host = &shared.host;
    match request {
        Request::Ping => Ok(json!("pong")),
        Request::Stat { name } => reply(host.stat(name.as_deref())),
        Request::PolicyList => Ok(json!(host.policy_files())),
        Request::PolicyShow { name } => {
            let p = host.policy(&name).ok_or_else(|| {
                format!("no policy {name} is in force; `vzhost policy list` shows them")
            })?;
            reply(Ok::<_, String>(p))
        }
        Request::Events {
            name,
            after,
            wait_ms,
        } => Ok(json!(shared.events(
            name.as_deref(),
            after,
            Duration::from_millis(wait_ms.min(60_000))
        ))),
        Request::Create(req) => reply(host.create(&req)),
        Request::Start { name } => reply(host.start(&name)),
        Request::Stop { name } => reply(host.stop(&name)),
        Request::Restart { name } => reply(host.restart(&name)),
        Request::Destroy { name, force } => reply(host.destroy(&name, force)),
        Request::List => reply(host.list()),
        Request::Set { name, limits } => reply(host.set(&name, &limits)),
        Request::TemplateList => reply(Ok::<_, String>(host.templates().list())),
        Request::TemplateImport { name, path } => {
            let p = host
                .templates()
                .import(&name, Path::new(&path))
                .map_err(|e| s(&e))?;
            Ok(json!({ "name": name, "path": p }))
        }
        Request::Passwd {
            name,
            user,
            password,
        } => reply(host.passwd(&name, &user, &password)),
        Request::Exec { name, argv } => {
            if argv.is_empty() {
                return Err("exec needs a command: vzhost exec NAME -- CMD...".into());
            }
            let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
                .try_into()
                .map_err(|_| "exec needs the caller's stdin, stdout and stderr".to_owned())?;
            let (plan, exe) = {
                let h = host;
                (
                    h.attach_plan(&name, argv, false).map_err(|e| s(&e))?,
                    h.exe().to_owned(),
                )
            };
            let code = run_attach(&exe, &plan, [stdin, stdout, stderr])?;
            Ok(json!({ "exit_code": code }))
        }
        Request::Enter { name } => {
            let (plan, exe, pid) = {
                let h = host;
                let plan = h
                    .attach_plan(&name, vec!["/bin/sh".into(), "-l".into()], true)
                    .map_err(|e| s(&e))?;
                (
                    plan,
                    h.exe().to_owned(),
                    h.init_pid(&name).map_err(|e| s(&e))?,
                )
            };
            let (master, slave) =
                open_vps_pty(pid).map_err(|e| format!("cannot open a pty in VPS {name}: {e}"))?;
            chan.send(&Response::Ok(json!("pty")), &[master.as_raw_fd()])
                .map_err(|e| s(&e))?;
            drop(master);
            let slaves = [
                slave.try_clone().map_err(|e| s(&e))?,
                slave.try_clone().map_err(|e| s(&e))?,
                slave,
            ];
            let code = run_attach(&exe, &plan, slaves)?;
            Ok(json!({ "exit_code": code }))
        }
    }
}

/// A lifecycle result as an API value.
fn reply<T: serde::Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<serde_json::Value, String> {
    let v = r.map_err(|e| e.to_string())?;
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn run_attach(
    exe: &Path,
    plan: &crate::ns::attach::AttachPlan,
    [stdin, stdout, stderr]: [OwnedFd; 3],
) -> Result<i32, String> {
    let status = helper(exe, "__attach")
        .arg(serde_json::to_string(plan).expect("plan serializes"))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .status()
        .map_err(|e| format!("cannot run the attach helper: {e}"))?;
    use std::os::unix::process::ExitStatusExt as _;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// A pty pair from the VPS's own devpts instance.
fn open_vps_pty(init_pid: u32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let ptmx = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/{init_pid}/root/dev/pts/ptmx"))?;
    let master = OwnedFd::from(ptmx);
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int; master is a pty master.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER returns a new fd for the slave side, or -1.
    let slave = unsafe {
        libc::ioctl(
            master.as_fd().as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}
