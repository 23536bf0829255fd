//! The command line, as clap reads it.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vzhost::{
    daemon,
    model::{Limits, SpecError, parse_size},
};

#[derive(Parser)]
#[command(
    name = "vzhost",
    version,
    about = "Virtual private servers on one Linux kernel, confined by eBPF",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 3 not found, 4 conflict, \
                  5 invalid, 6 kernel; exec and enter exit with the command's status."
)]
pub struct Cli {
    /// Output format for commands that print data.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon's API socket.
    #[arg(long, global = true, env = "VZHOST_SOCKET", default_value = daemon::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args, Default)]
pub struct LimitArgs {
    /// Memory limit, e.g. 256M or 1G.
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU quota in CPUs, e.g. 0.5 or 2.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Disk space the VPS may write, e.g. 1G.
    #[arg(long)]
    pub disk: Option<String>,
}

impl LimitArgs {
    pub fn parse(&self) -> Result<Limits, SpecError> {
        let size =
            |field, v: &Option<String>| v.as_deref().map(|v| parse_size(field, v)).transpose();
        Ok(Limits {
            memory: size("memory", &self.memory)?,
            cpus: self.cpus,
            pids: self.pids,
            disk: size("disk", &self.disk)?,
        })
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the host daemon.
    Daemon {
        /// State directory.
        #[arg(long, default_value = daemon::DEFAULT_ROOT)]
        root: PathBuf,
        /// How VPSs are wired to the host. routed (the default, as OpenVZ's
        /// venet): each VPS's veth is on no bridge, the host routes its
        /// address (/32) to it and answers its ARP (proxy ARP); no port
        /// limit and one hop less, for thousands of VPSs. bridged: every
        /// veth a port of --bridge, one layer-2 segment (broadcasts reach
        /// the neighbours), at most 1023 running VPSs per bridge. Without
        /// this flag the mode the state directory's VPSs were wired with
        /// is kept; a change is refused while VPSs run.
        #[arg(long, value_name = "routed|bridged")]
        network: Option<vzhost::net::NetMode>,
        /// Host bridge with the gateway address (created on first use); in
        /// bridged mode the VPSs are plugged into it.
        #[arg(long, default_value = vzhost::net::DEFAULT_BRIDGE)]
        bridge: String,
        /// VPS subnet; its first address is the gateway on --bridge.
        #[arg(long, default_value = vzhost::net::DEFAULT_SUBNET)]
        subnet: String,
        /// VPS IPv6 prefix (/48 to /120); its ::1 is the gateway. Default:
        /// the one in the state directory, else a ULA /64 chosen at random
        /// (RFC 4193) and kept there.
        #[arg(long, value_name = "PREFIX")]
        subnet6: Option<String>,
        /// Masquerade VPS traffic that leaves the host (off by default:
        /// traffic stays on the host).
        #[arg(long)]
        nat: bool,
        /// Directory of policy files (*.yaml), watched for changes.
        #[arg(long, default_value = vzhost::policy::DEFAULT_DIR)]
        policies: PathBuf,
        /// bpffs directory where KSAL maps and links are pinned, so VPSs stay
        /// confined while the daemon is down; "none" to not pin.
        #[arg(long, default_value = vzhost::ksal::pins::DEFAULT_DIR)]
        pins: String,
        /// Address of the Prometheus endpoint (/metrics), or "none".
        #[arg(long, default_value = vzhost::metrics::http::DEFAULT_ADDR)]
        metrics: String,
    },
    /// Report which kernel features vzhost relies on are present.
    Doctor,
    /// Create a VPS.
    Create(CreateArgs),
    /// Start a VPS.
    Start { name: String },
    /// Stop a VPS (its init's stop signal, SIGKILL after its stop
    /// timeout), or with --all every running VPS, many at a time (for a
    /// host shutdown).
    Stop {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Stop every running VPS; exits non-zero naming any that failed.
        #[arg(long)]
        all: bool,
        /// With --all: how many stops run at once.
        #[arg(long, default_value_t = super::stop_all::DEFAULT_JOBS, requires = "all",
              value_parser = clap::value_parser!(u16).range(1..))]
        jobs: u16,
    },
    /// Restart a VPS; its neighbours keep running.
    Restart { name: String },
    /// Remove a VPS and all its files.
    Destroy {
        name: String,
        /// Stop it first if it runs.
        #[arg(long)]
        force: bool,
    },
    /// List VPSs.
    List,
    /// KSAL policies: those in force, one in full, or check a file offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// KSAL denials and audit records (of VPS NAME, or all).
    Events {
        name: Option<String>,
        /// Keep printing events as they arrive.
        #[arg(short, long)]
        follow: bool,
    },
    /// Beancounters: what each resource holds, its high-water mark, limit
    /// and failure count (all VPSs without a NAME).
    Stat { name: Option<String> },
    /// Run a command in a VPS; exits with the command's status. Its stdio
    /// are relayed through pipes, or a pty when stdin and stdout are a
    /// terminal.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// An interactive shell in a VPS, on a pty.
    Enter { name: String },
    /// Attach to a running VPS's console (its /dev/console, where its init
    /// writes and a getty may wait); detach with Ctrl-]. With --log, print
    /// what the console recorded instead (running or stopped).
    Console {
        name: String,
        /// Print the recorded console output, control characters escaped.
        #[arg(long)]
        log: bool,
    },
    /// Change limits of a VPS, live, and keep them.
    Set {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Add the OpenSSH public keys in FILE to root's authorized_keys
        /// in the VPS (running or stopped).
        #[arg(long, value_name = "FILE")]
        ssh_key: Option<PathBuf>,
    },
    /// Templates: the shared read-only root filesystems.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Set a login password in a VPS (read from stdin, or prompted).
    Passwd { name: String, user: String },
}

#[derive(Args)]
pub struct CreateArgs {
    pub name: String,
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Its address, ADDRESS or ADDRESS/PREFIX (default: the next free one).
    #[arg(long)]
    pub ip: Option<String>,
    /// Its IPv6 address, inside the daemon's --subnet6 (default: the next
    /// free one).
    #[arg(long)]
    pub ip6: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[arg(long)]
    pub stop_timeout: Option<u64>,
    /// The policy it runs under (default: the one its name or labels
    /// select, else `default`).
    #[arg(long)]
    pub policy: Option<String>,
    /// A label, key=value (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// First host id of the VPS's user range (default: the next free range).
    #[arg(long)]
    pub uid_base: Option<u32>,
    /// Install the OpenSSH public keys in FILE as root's authorized_keys
    /// in the VPS.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Size of the VPS's user range.
    #[arg(long, default_value_t = vzhost::model::IDMAP_SIZE, requires = "uid_base")]
    pub uid_count: u32,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Policy files, the policy each defines, and errors.
    List,
    /// A policy in force, in full.
    Show { name: String },
    /// Check a policy file without a daemon; exits non-zero on error.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Templates with their distribution, release, init, size and hash.
    List,
    /// Import a template from a directory or a tarball.
    Import { name: String, path: PathBuf },
    /// Build a template from a distribution's archive (debootstrap),
    /// prepared for VPS use; NAME defaults to DISTRO-RELEASE.
    Create {
        #[command(flatten)]
        build: BuildArgs,
        name: Option<String>,
    },
    /// Build and prepare a root directory at --dir, without a daemon
    /// (what `create` makes, for images and caches).
    Build {
        #[command(flatten)]
        build: BuildArgs,
        /// The directory to make; it must not exist, or be empty. A failed
        /// build removes it.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum DistroArg {
    Debian,
}

#[derive(Args)]
pub struct BuildArgs {
    pub distro: DistroArg,
    /// The release, e.g. bookworm.
    #[arg(long, default_value = vzhost::rootfs::distro::DEFAULT_RELEASE)]
    pub release: String,
    /// Extra packages, comma-separated (systemd-sysv, openssh-server,
    /// iproute2, ifupdown and procps are always installed).
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// The archive to build from (default: debootstrap's own).
    #[arg(long)]
    pub mirror: Option<String>,
}

impl BuildArgs {
    pub fn build(&self) -> vzhost::rootfs::distro::DistroBuild {
        match self.distro {
            DistroArg::Debian => vzhost::rootfs::distro::DistroBuild::debian(
                Some(&self.release),
                &self.packages,
                self.mirror.as_deref(),
            ),
        }
    }
}
