//! The `vzhost` command: a thin client of the daemon's API, plus the daemon
//! itself, `doctor`, and the internal helpers the daemon re-executes.
mod client;

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use vzhost::{
    daemon::{self, api::Request},
    model::{Limits, parse_size},
    vps::CreateRequest,
};

#[derive(Parser)]
#[command(
    name = "vzhost",
    version,
    about = "Virtual private servers on one Linux kernel, confined by eBPF"
)]
struct Cli {
    /// Output format for commands that print data.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The daemon's API socket.
    #[arg(long, global = true, env = "VZHOST_SOCKET", default_value = daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Args, Default)]
struct LimitArgs {
    /// Memory limit, e.g. 256M or 1G.
    #[arg(long)]
    memory: Option<String>,
    /// CPU quota in CPUs, e.g. 0.5 or 2.
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pids: Option<u64>,
    /// Disk space the VPS may write, e.g. 1G.
    #[arg(long)]
    disk: Option<String>,
}

impl LimitArgs {
    fn parse(&self) -> anyhow::Result<Limits> {
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
enum Command {
    /// Run the host daemon.
    Daemon {
        /// State directory.
        #[arg(long, default_value = daemon::DEFAULT_ROOT)]
        root: PathBuf,
        /// Host bridge the VPSs are plugged into (created on first use).
        #[arg(long, default_value = vzhost::net::DEFAULT_BRIDGE)]
        bridge: String,
        /// VPS subnet; its first address is the gateway on the bridge.
        #[arg(long, default_value = vzhost::net::DEFAULT_SUBNET)]
        subnet: String,
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
    Create {
        name: String,
        #[arg(long)]
        template: Option<String>,
        #[arg(long)]
        hostname: Option<String>,
        /// Its address, ADDRESS or ADDRESS/PREFIX (default: the next free one).
        #[arg(long)]
        ip: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Seconds between SIGTERM and SIGKILL when stopping.
        #[arg(long)]
        stop_timeout: Option<u64>,
        /// The policy it runs under (default: the one its name or labels
        /// select, else `default`).
        #[arg(long)]
        policy: Option<String>,
        /// A label, key=value (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// First host id of the VPS's user range (default: the next free range).
        #[arg(long)]
        uid_base: Option<u32>,
        /// Size of the VPS's user range.
        #[arg(long, default_value_t = vzhost::model::IDMAP_SIZE, requires = "uid_base")]
        uid_count: u32,
    },
    /// Start a VPS.
    Start { name: String },
    /// Stop a VPS (SIGTERM to its init, SIGKILL after its stop timeout).
    Stop { name: String },
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
    /// Run a command in a VPS; exits with the command's status.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// An interactive shell in a VPS, on a pty.
    Enter { name: String },
    /// Change limits of a VPS, live, and keep them.
    Set {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Templates: the shared read-only root filesystems.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Set a login password in a VPS (read from stdin, or prompted).
    Passwd { name: String, user: String },
    #[command(name = "__launch", hide = true)]
    Launch,
    #[command(name = "__attach", hide = true)]
    Attach { plan: String },
    #[command(name = "__passwd", hide = true)]
    PasswdHelper,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Policy files, the policy each defines, and errors.
    List,
    /// A policy in force, in full.
    Show { name: String },
    /// Check a policy file without a daemon; exits non-zero on error.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum TemplateCommand {
    List,
    /// Import a template from a directory or a tarball.
    Import {
        name: String,
        path: PathBuf,
    },
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VZHOST_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    if std::env::args().nth(1).as_deref() == Some("daemon") {
                        "info"
                    } else {
                        "warn"
                    },
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vzhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let call = |req: Request| client::call(&cli.socket, &req);
    let done = |v: Value| print(cli.output, &v, |_| String::new());
    match &cli.command {
        Command::Daemon {
            root,
            bridge,
            subnet,
            nat,
            policies,
            pins,
            metrics,
        } => {
            let metrics = match metrics.as_str() {
                "none" | "off" => None,
                addr => Some(addr.parse().with_context(|| {
                    format!(
                        "invalid --metrics {addr:?}: use ADDRESS:PORT, e.g. 127.0.0.1:9464, or none"
                    )
                })?),
            };
            daemon::run(daemon::DaemonConfig {
                root: root.clone(),
                socket: cli.socket.clone(),
                net: vzhost::net::NetConfig::new(bridge, subnet)?,
                nat: *nat,
                metrics,
                policies: policies.clone(),
                pins: (pins != "none").then(|| PathBuf::from(pins)),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => doctor(cli.output),
        Command::Create {
            name,
            template,
            hostname,
            ip,
            limits,
            stop_timeout,
            policy,
            labels,
            uid_base,
            uid_count,
        } => {
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("invalid --label {l:?}: use key=value"))
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let v = call(Request::Create(CreateRequest {
                name: name.clone(),
                template: template.clone(),
                hostname: hostname.clone(),
                limits: limits.parse()?,
                labels,
                stop_timeout: *stop_timeout,
                ip: ip.clone(),
                policy: policy.clone(),
                idmap: uid_base.map(|base| vzhost::model::IdMap {
                    base,
                    count: *uid_count,
                }),
            }))?;
            print(cli.output, &v, |v| {
                format!("created {}", v["name"].as_str().unwrap_or_default())
            })
        }
        Command::Start { name } => done(call(Request::Start { name: name.clone() })?),
        Command::Stop { name } => done(call(Request::Stop { name: name.clone() })?),
        Command::Restart { name } => done(call(Request::Restart { name: name.clone() })?),
        Command::Destroy { name, force } => done(call(Request::Destroy {
            name: name.clone(),
            force: *force,
        })?),
        Command::List => {
            let v = call(Request::List)?;
            print(cli.output, &v, list_table)
        }
        Command::Policy { command } => match command {
            PolicyCommand::List => {
                let v = call(Request::PolicyList)?;
                print(cli.output, &v, policy_table)
            }
            PolicyCommand::Show { name } => {
                let v = call(Request::PolicyShow { name: name.clone() })?;
                print(cli.output, &v, |v| {
                    serde_yaml::to_string(v).unwrap_or_else(|e| e.to_string())
                })
            }
            PolicyCommand::Check { file } => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                match vzhost::policy::Policy::parse(&file.display().to_string(), &text) {
                    Ok(p) => {
                        print(
                            cli.output,
                            &json!({"file": file, "policy": p.name, "ok": true}),
                            |_| format!("{}: policy {} is valid", file.display(), p.name),
                        )?;
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        if cli.output == Output::Json {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(&json!({"ok": false, "error": e}))?
                            );
                        } else {
                            eprintln!("{e}");
                        }
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
        },
        Command::Events { name, follow } => events(cli, name.as_deref(), *follow),
        Command::Stat { name } => {
            let v = call(Request::Stat { name: name.clone() })?;
            print(cli.output, &v, stat_table)
        }
        Command::Exec { name, cmd } => client::exec(&cli.socket, name, cmd),
        Command::Enter { name } => client::enter(&cli.socket, name),
        Command::Set { name, limits } => {
            let v = call(Request::Set {
                name: name.clone(),
                limits: limits.parse()?,
            })?;
            done(v)
        }
        Command::Template { command } => match command {
            TemplateCommand::List => {
                let v = call(Request::TemplateList)?;
                print(cli.output, &v, |v| {
                    let rows = v.as_array().cloned().unwrap_or_default();
                    let mut out = format!("{:<20} {}\n", "NAME", "PATH");
                    for t in rows {
                        out += &format!(
                            "{:<20} {}\n",
                            t["name"].as_str().unwrap_or(""),
                            t["path"].as_str().unwrap_or("")
                        );
                    }
                    out
                })
            }
            TemplateCommand::Import { name, path } => {
                let path = std::fs::canonicalize(path)
                    .with_context(|| format!("template source {}", path.display()))?;
                done(call(Request::TemplateImport {
                    name: name.clone(),
                    path: path.display().to_string(),
                })?)
            }
        },
        Command::Passwd { name, user } => {
            let password = client::read_password(user)?;
            done(call(Request::Passwd {
                name: name.clone(),
                user: user.clone(),
                password,
            })?)
        }
        Command::Launch => {
            let mut plan = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut plan)?;
            let plan = serde_json::from_str(&plan).context("launch plan")?;
            let pid = vzhost::ns::launch::launch(&plan)?;
            println!("{pid}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Attach { plan } => {
            let plan = serde_json::from_str(plan).context("attach plan")?;
            let code = vzhost::ns::attach::attach(&plan)?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Command::PasswdHelper => Ok(ExitCode::from(vzhost::vps::passwd_helper(
            std::io::stdin().lock(),
        ) as u8)),
    }
}

fn print(output: Output, v: &Value, table: impl Fn(&Value) -> String) -> anyhow::Result<ExitCode> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Table => {
            let t = table(v);
            if !t.is_empty() {
                print!("{}", if t.ends_with('\n') { t } else { t + "\n" });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(v: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:<18} {:<24} {}\n",
        "NAME", "STATUS", "IP", "HOSTNAME", "NPROC"
    );
    for row in v.as_array().cloned().unwrap_or_default() {
        out += &format!(
            "{:<24} {:<8} {:<18} {:<24} {}\n",
            row["name"].as_str().unwrap_or(""),
            row["status"].as_str().unwrap_or(""),
            row["ip"].as_str().unwrap_or("-"),
            row["hostname"].as_str().unwrap_or(""),
            row["nproc"]
        );
    }
    out
}

fn policy_table(v: &Value) -> String {
    let mut out = format!("{:<16} {:<7} {}\n", "POLICY", "STATE", "FILE");
    for f in v.as_array().cloned().unwrap_or_default() {
        let state = match (f["policy"].is_string(), f["error"].is_object()) {
            (_, false) => "ok",
            (true, true) => "stale",
            (false, true) => "invalid",
        };
        out += &format!(
            "{:<16} {:<7} {}\n",
            f["policy"].as_str().unwrap_or("-"),
            state,
            f["file"].as_str().unwrap_or("")
        );
        if f["error"].is_object() {
            let e = &f["error"];
            out += &format!(
                "    {}:{}:{}: {}{}\n",
                e["file"].as_str().unwrap_or(""),
                e["line"],
                e["column"],
                e["reason"].as_str().unwrap_or(""),
                if state == "stale" {
                    " (its last good version stays in force)"
                } else {
                    ""
                }
            );
        }
    }
    out
}

/// Print events (one line each, or JSON lines), following if asked.
fn events(cli: &Cli, name: Option<&str>, follow: bool) -> anyhow::Result<ExitCode> {
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let v = client::call(
            &cli.socket,
            &Request::Events {
                name: name.map(str::to_owned),
                after,
                wait_ms: if follow { 10_000 } else { 0 },
            },
        )?;
        let batch = v.as_array().cloned().unwrap_or_default();
        if let Some(last) = batch.last().and_then(|e| e["seq"].as_u64()) {
            after = last;
        }
        for e in &batch {
            match (cli.output, follow) {
                (Output::Json, true) => println!("{}", serde_json::to_string(e)?),
                (Output::Json, false) => all.push(e.clone()),
                (Output::Table, _) => println!(
                    "{} {:<16} {:<12} {:<8} {:<28} pid={} comm={}",
                    e["time"]
                        .as_f64()
                        .map_or(String::new(), |t| format!("{t:.3}")),
                    e["vps"].as_str().unwrap_or("?"),
                    e["hook"].as_str().unwrap_or(""),
                    e["verdict"].as_str().unwrap_or(""),
                    e["rule"].as_str().unwrap_or(""),
                    e["tgid"],
                    e["comm"].as_str().unwrap_or("")
                ),
            }
        }
        if !follow {
            break;
        }
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Like /proc/user_beancounters: a block of rows per VPS.
fn stat_table(v: &Value) -> String {
    let num = |v: &Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
    let mut out = format!(
        "{:<24} {:<10} {:>14} {:>14} {:>14} {:>10}\n",
        "VPS", "RESOURCE", "HELD", "MAXHELD", "LIMIT", "FAILCNT"
    );
    for vps in v.as_array().cloned().unwrap_or_default() {
        let name = vps["name"].as_str().unwrap_or("");
        let status = if vps["running"].as_bool() == Some(true) {
            name.to_owned()
        } else {
            format!("{name} (stopped)")
        };
        for (i, row) in vps["beancounters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            out += &format!(
                "{:<24} {:<10} {:>14} {:>14} {:>14} {:>10}\n",
                if i == 0 { status.as_str() } else { "" },
                row["resource"].as_str().unwrap_or(""),
                num(&row["held"]),
                num(&row["maxheld"]),
                num(&row["limit"]),
                num(&row["failcnt"]),
            );
        }
    }
    out
}

fn doctor(output: Output) -> anyhow::Result<ExitCode> {
    let checks = vzhost::doctor::run();
    print(output, &json!(checks), |_| {
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        checks
            .iter()
            .map(|c| {
                format!(
                    "{:width$}  {:7}  {}\n",
                    c.name,
                    if c.ok { "OK" } else { "MISSING" },
                    c.detail
                )
            })
            .collect()
    })?;
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
