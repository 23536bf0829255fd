//! Startup: the state directory, cgroups, the KSAL, policies, metrics and
//! network, the adoption of running VPSs, and then serving until asked to
//! stop.
use std::{fs, path::Path, sync::Arc};

use super::{DaemonConfig, DaemonError, handlers::Handlers, server};
use crate::{
    cgroup::manager::Hierarchy,
    enforce::Enforcement,
    ksal::Ksal,
    policy::watch::PolicyDir,
    vps::{
        Host,
        ranges::{DEFAULT_REGISTRY, RangeRegistry},
        store::Store,
    },
};

pub fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    raise_fd_limit();
    super::host_limits::raise(std::path::Path::new("/proc/sys"));
    let store = Store::open(&cfg.root).map_err(|source| DaemonError::State {
        path: cfg.root.display().to_string(),
        source,
    })?;
    // Every cgroup this daemon makes carries an identity derived from its
    // state root, so daemons started from one cgroup never share VPS cgroups.
    let root = std::fs::canonicalize(&cfg.root).map_err(|source| DaemonError::Identity {
        path: cfg.root.display().to_string(),
        source,
    })?;
    let identity = crate::model::DaemonId::of_root(&root);
    let cgroups = Hierarchy::for_current_process(&identity)?;
    // ... and its interfaces too.
    let net = cfg
        .net
        .clone()
        .tagged(&identity)
        .with_mode(network_mode(&store, cfg.network)?)
        .with_subnet6(crate::net::resolve_prefix6(store.root(), cfg.subnet6)?);
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
    let events = ksal.as_mut().and_then(|k| k.take_events().ok());
    let metrics = cfg
        .metrics
        .map(|addr| {
            crate::metrics::http::bind(addr).map_err(|source| DaemonError::Metrics { addr, source })
        })
        .transpose()?;
    let exe = std::env::current_exe().map_err(DaemonError::Exe)?;
    // The gateway's link is made (or checked: a link of that name that
    // cannot hold it is refused) before anything else is.
    crate::net::ensure_bridge(&net)?;
    crate::net::set_nat(&net, cfg.nat)?;
    crate::net::fence(&net, !cfg.nat)?;
    tracing::info!(mode = %net.mode, nat = cfg.nat, bridge = %cfg.net.bridge, subnet = %cfg.net.subnet, subnet6 = ?net.subnet6, "network ready");
    // VPS inits, left behind by their launchers, become the daemon's
    // children: their wait status tells a reboot from a poweroff.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper ({e}); a reboot inside a VPS stops it");
    }
    let host = Host::new(
        store,
        cgroups,
        Enforcement::new(ksal, lsm_error, policies),
        exe,
        net,
        RangeRegistry::new(Path::new(DEFAULT_REGISTRY), &cfg.root),
    );
    let adopted = host.adopt()?;
    tracing::info!(count = adopted.len(), "adopted running VPSs");
    let listener = server::bind(&cfg.socket)?;
    let handlers = Handlers::new(host);
    {
        let h = handlers.clone();
        thread("init-watch", move || h.watch_inits())?;
    }
    if let Some(reader) = events {
        let log = handlers.event_log();
        thread("ksal-events", move || log.collect(reader))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    if let Some(l) = metrics {
        tracing::info!(addr = ?l.local_addr().ok(), "serving metrics at /metrics");
        let h = handlers.clone();
        runtime.spawn(crate::metrics::http::serve(
            l,
            Arc::new(move || h.host_stat()),
        ));
    }
    {
        let (h, dir) = (handlers.clone(), cfg.policies.clone());
        thread("policy-watch", move || {
            if let Err(e) = crate::policy::watch::watch(&dir, || h.reload_policies()) {
                tracing::error!(dir = %dir.display(), "cannot watch the policies directory; changes need a daemon restart: {e}");
            }
        })?;
    }
    runtime.block_on(server::serve(listener, handlers.clone()));
    let _ = fs::remove_file(&cfg.socket);
    handlers.shutdown();
    tracing::info!("daemon stopped; VPSs keep running");
    Ok(())
}

/// The network mode to run with (see [`crate::net::resolve_mode`]), kept
/// in the state directory for the next daemon.
fn network_mode(
    store: &Store,
    requested: Option<crate::net::NetMode>,
) -> Result<crate::net::NetMode, DaemonError> {
    let stored = crate::net::stored_mode(store.root())?;
    let running: Vec<String> = store
        .list()
        .map_err(|source| DaemonError::State {
            path: store.root().display().to_string(),
            source,
        })?
        .into_iter()
        .filter(|spec| {
            store
                .runtime(&spec.name)
                .is_some_and(|r| crate::sys::is_same_process(r.init_pid, r.init_start))
        })
        .map(|spec| spec.name.to_string())
        .collect();
    let mode = crate::net::resolve_mode(requested, stored, &running)?;
    if stored != Some(mode) {
        let path = crate::net::mode_file(store.root());
        crate::vps::store::write_atomic(&path, format!("{mode}\n").as_bytes()).map_err(
            |source| DaemonError::State {
                path: path.display().to_string(),
                source,
            },
        )?;
    }
    Ok(mode)
}

fn thread(what: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(what.into())
        .spawn(f)
        .map(drop)
        .map_err(|source| DaemonError::Thread { what, source })
}

/// Every connection, VPS and KSAL object costs descriptors: take all the
/// hard limit allows, so a busy host does not run out at the soft one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => tracing::warn!(soft, hard, "cannot raise the open files limit: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open files limit: {e}"),
    }
}
