//! `vzhost daemon`: owns all state, serves the API on a root-only Unix
//! socket, and re-adopts running VPSs when it restarts. VPSs never depend
//! on the daemon's process: stopping or killing it leaves them running.
//!
//! - `boot`: startup, from the state directory to a serving socket
//! - `server`: the socket's accept loop, one span per request
//! - `handlers`: what each request does to the host
//! - `session`: exec and enter, relayed through pipes or a VPS's own pty
//! - `api` and `channel`: the typed requests and replies, and their framing
pub mod api;
mod boot;
pub mod channel;
mod handlers;
mod host_limits;
mod server;
mod session;

use std::path::PathBuf;

pub use boot::run;

pub const DEFAULT_ROOT: &str = "/var/lib/vzhost";
pub const DEFAULT_SOCKET: &str = "/run/vzhost/vzhost.sock";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {source}")]
    State {
        path: String,
        source: crate::vps::store::StoreError,
    },
    #[error("state directory {path}: cannot resolve it to name this daemon's cgroups: {source}")]
    Identity {
        path: String,
        source: std::io::Error,
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
    #[error(
        "cannot serve metrics on {addr}: {source}; choose another address with --metrics ADDR, \
         or turn the endpoint off with --metrics none"
    )]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot find the daemon's own executable: {0}")]
    Exe(std::io::Error),
    #[error("network: {0}")]
    Net(#[from] crate::net::LinkError),
    #[error("NAT: {0}")]
    Nat(#[from] crate::net::NatError),
    #[error("network mode: {0}")]
    Mode(#[from] crate::net::ModeError),
    #[error("{0}")]
    Prefix6(#[from] crate::net::Prefix6Error),
    #[error("cannot adopt the running VPSs: {0}")]
    Adopt(#[from] crate::vps::LifecycleError),
}

pub struct DaemonConfig {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub net: crate::net::NetConfig,
    /// The network mode asked for (None: keep the stored one, else the
    /// default).
    pub network: Option<crate::net::NetMode>,
    /// The VPSs' IPv6 prefix asked for (None: the stored one, else a new
    /// ULA /64).
    pub subnet6: Option<crate::net::Prefix6>,
    /// Masquerade VPS traffic leaving by other interfaces (off by default).
    pub nat: bool,
    /// Where `/metrics` is served; None turns the endpoint off.
    pub metrics: Option<std::net::SocketAddr>,
    /// The policies directory, watched for changes.
    pub policies: PathBuf,
    /// Where KSAL maps and links are pinned (None: they go with the daemon).
    pub pins: Option<PathBuf>,
}
