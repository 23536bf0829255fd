//! The daemon's API, typed at both ends. Each request is a struct that
//! names its reply type ([`Call`]); on the wire a request is one JSON
//! object tagged by `op` (`{"op": "start", "name": "web"}`), and a reply
//! is `{"ok": REPLY}` or `{"error": {"kind": KIND, "message": TEXT}}`,
//! each on a line of its own ([`super::channel::Channel`]).
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    ksal::LoggedEvent,
    metrics::VpsStat,
    model::{ErrorKind, Limits, Runtime, Spec, VpsStatus},
    policy::{Policy, watch::FileStatus},
    rootfs::{TemplateInfo, distro::DistroBuild},
    vps::CreateRequest,
};

/// A request and the type of its answer.
pub trait Call: Into<Request> {
    type Reply: Serialize + DeserializeOwned;
}

/// Every request, as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping(Ping),
    Create(CreateRequest),
    Start(Start),
    Stop(Stop),
    Restart(Restart),
    Destroy(Destroy),
    List(List),
    PolicyList(PolicyList),
    PolicyShow(PolicyShow),
    Events(Events),
    Stat(Stat),
    Exec(Exec),
    Enter(Enter),
    Set(Set),
    TemplateList(TemplateList),
    TemplateImport(TemplateImport),
    TemplateCreate(TemplateCreate),
    Passwd(Passwd),
    Console(Console),
    ConsoleLog(ConsoleLog),
}

/// Each request's type and reply, and its place in [`Request`].
macro_rules! calls {
    ($($variant:ident($request:ty) = $op:literal => $reply:ty,)*) => {
        $(
            impl Call for $request {
                type Reply = $reply;
            }
            impl From<$request> for Request {
                fn from(r: $request) -> Self {
                    Self::$variant(r)
                }
            }
        )*
        impl Request {
            /// Its `op`, for logs.
            pub fn op(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $op,)*
                }
            }
        }
    };
}

calls! {
    Ping(Ping) = "ping" => (),
    Create(CreateRequest) = "create" => Spec,
    Start(Start) = "start" => Runtime,
    Stop(Stop) = "stop" => (),
    Restart(Restart) = "restart" => Runtime,
    Destroy(Destroy) = "destroy" => (),
    List(List) = "list" => Vec<VpsStatus>,
    PolicyList(PolicyList) = "policy_list" => Vec<FileStatus>,
    PolicyShow(PolicyShow) = "policy_show" => Policy,
    Events(Events) = "events" => Vec<Event>,
    Stat(Stat) = "stat" => Vec<VpsStat>,
    Exec(Exec) = "exec" => Session,
    Enter(Enter) = "enter" => Session,
    Set(Set) = "set" => Spec,
    TemplateList(TemplateList) = "template_list" => Vec<TemplateInfo>,
    TemplateImport(TemplateImport) = "template_import" => TemplateInfo,
    TemplateCreate(TemplateCreate) = "template_create" => Progress,
    Passwd(Passwd) = "passwd" => (),
    Console(Console) = "console" => Session,
    ConsoleLog(ConsoleLog) = "console_log" => String,
}

impl Request {
    /// The VPS it is about, if one.
    pub fn vps(&self) -> Option<&str> {
        match self {
            Self::Create(r) => Some(&r.name),
            Self::Start(Start { name })
            | Self::Stop(Stop { name })
            | Self::Restart(Restart { name })
            | Self::Destroy(Destroy { name, .. })
            | Self::Exec(Exec { name, .. })
            | Self::Enter(Enter { name })
            | Self::Set(Set { name, .. })
            | Self::Passwd(Passwd { name, .. })
            | Self::Console(Console { name })
            | Self::ConsoleLog(ConsoleLog { name }) => Some(name),
            Self::Events(Events { name, .. }) | Self::Stat(Stat { name }) => name.as_deref(),
            Self::Ping(_)
            | Self::List(_)
            | Self::PolicyList(_)
            | Self::PolicyShow(_)
            | Self::TemplateList(_)
            | Self::TemplateImport(_)
            | Self::TemplateCreate(_) => None,
        }
    }
}

/// Is the daemon there?
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ping {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stop {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restart {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Destroy {
    pub name: String,
    /// Stop it first if it runs.
    pub force: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct List {}

/// Policy files and their state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicyList {}

/// A policy in force, in full.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyShow {
    pub name: String,
}

/// KSAL events numbered after `after` (of VPS `name`, or all); waits up
/// to `wait_ms` for one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Events {
    pub name: Option<String>,
    pub after: u64,
    pub wait_ms: u64,
}

/// Beancounters of one VPS, or of all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stat {
    pub name: Option<String>,
}

/// Run `argv` in VPS `name`; answered by a [`Session`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exec {
    pub name: String,
    pub argv: Vec<String>,
    /// On a pty allocated inside the VPS, as for a caller on a terminal;
    /// else on pipes.
    #[serde(default)]
    pub tty: bool,
}

/// An interactive shell in VPS `name` on a pty; answered by a [`Session`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enter {
    pub name: String,
}

/// Change limits, live, and keep them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Set {
    pub name: String,
    pub limits: Limits,
    /// OpenSSH public keys (a key file's text) to add to its root's
    /// authorized_keys.
    #[serde(default)]
    pub ssh_keys: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TemplateList {}

/// Import template `name` from `path` (a directory or tarball on the host).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateImport {
    pub name: String,
    pub path: String,
}

/// Build template `name` from a distribution's archive; answered by
/// [`Progress`] lines as the build goes, the last one `Done`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateCreate {
    pub name: String,
    #[serde(flatten)]
    pub build: DistroBuild,
}

/// The messages answering a long job, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// A stage reached.
    Line(String),
    /// Finished: what was made.
    Done(TemplateInfo),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Passwd {
    pub name: String,
    pub user: String,
    pub password: String,
}

/// Attach to the console of running VPS `name`; answered by a
/// [`Session`] whose `Started` carries a connection to the VPS's console
/// keeper. It lasts until the caller goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Console {
    pub name: String,
}

/// What the console of VPS `name` recorded, oldest first, as the VPS wrote
/// it (invalid UTF-8 replaced; control characters kept: escape them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleLog {
    pub name: String,
}

/// A reply: the request's answer, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Error(Failure),
}

impl<T> Reply<T> {
    pub fn into_result(self) -> Result<T, Failure> {
        match self {
            Self::Ok(v) => Ok(v),
            Self::Error(f) => Err(f),
        }
    }
}

/// Why a request failed: its kind (for the caller's exit code) and what
/// to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

/// The messages answering an exec, an enter or a console, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Session {
    /// The command runs; with this message come the caller's ends of its
    /// stdio: three pipes (to its stdin, from its stdout, from its stderr),
    /// or the master of the pty it runs on (or the console keeper's
    /// socket).
    Started,
    /// The command is gone; its status as a shell reports it.
    Exited { exit_code: i32 },
}

/// A KSAL event as `vzhost events` shows it: what was logged, with the
/// names of its VPS and rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(flatten)]
    pub logged: LoggedEvent,
    /// None once the VPS is gone.
    pub vps: Option<String>,
    pub rule: String,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{ksal::KsalEvent, model::Verdict};

    /// `request` on the wire and back, and that wire form.
    fn wire(request: impl Into<Request>) -> Value {
        let line = serde_json::to_string(&request.into()).unwrap();
        let back: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), line, "round trip");
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn requests_keep_their_wire_form() {
        assert_eq!(wire(Ping {}), json!({"op": "ping"}));
        assert_eq!(
            wire(Start { name: "web".into() }),
            json!({"op": "start", "name": "web"})
        );
        assert_eq!(
            wire(Destroy {
                name: "web".into(),
                force: true
            }),
            json!({"op": "destroy", "name": "web", "force": true})
        );
        assert_eq!(
            wire(Events {
                name: None,
                after: 7,
                wait_ms: 0
            }),
            json!({"op": "events", "name": null, "after": 7, "wait_ms": 0})
        );
        let create = wire(CreateRequest {
            name: "db".into(),
            limits: Limits {
                memory: Some(1 << 30),
                ..Limits::default()
            },
            ..CreateRequest::default()
        });
        assert_eq!(create["op"], "create");
        assert_eq!(create["limits"]["memory"], 1u64 << 30);
        assert_eq!(wire(TemplateList {}), json!({"op": "template_list"}));
        assert_eq!(
            wire(TemplateCreate {
                name: "deb".into(),
                build: DistroBuild::debian(None, &["curl".into()], None),
            }),
            json!({"op": "template_create", "name": "deb", "distro": "debian",
                   "release": "bookworm", "packages": ["curl"], "mirror": null})
        );
    }

    #[test]
    fn an_exec_from_an_older_client_runs_without_a_tty() {
        let r: Request =
            serde_json::from_str(r#"{"op":"exec","name":"a","argv":["true"]}"#).unwrap();
        let Request::Exec(exec) = r else {
            panic!("{r:?}")
        };
        assert!(!exec.tty);
    }

    #[test]
    fn unknown_or_incomplete_requests_are_refused() {
        for line in [
            r#"{"op":"format_disk"}"#,
            r#"{"op":"start"}"#,
            r#"{"name":"web"}"#,
            r#"{"op":"destroy","name":"web","force":"yes"}"#,
            "[]",
            "",
        ] {
            assert!(serde_json::from_str::<Request>(line).is_err(), "{line}");
        }
    }

    #[test]
    fn requests_name_their_op_and_vps() {
        let r: Request = Passwd {
            name: "web".into(),
            user: "root".into(),
            password: "x".into(),
        }
        .into();
        assert_eq!((r.op(), r.vps()), ("passwd", Some("web")));
        let r: Request = Stat { name: None }.into();
        assert_eq!((r.op(), r.vps()), ("stat", None));
    }

    #[test]
    fn replies_carry_a_value_or_a_typed_failure() {
        let ok: Reply<Session> = Reply::Ok(Session::Exited { exit_code: 3 });
        let line = serde_json::to_string(&ok).unwrap();
        assert_eq!(line, r#"{"ok":{"exited":{"exit_code":3}}}"#);
        assert_eq!(serde_json::from_str::<Reply<Session>>(&line).unwrap(), ok);
        let err: Reply<Vec<VpsStatus>> = Reply::Error(Failure {
            kind: ErrorKind::NotFound,
            message: "VPS web does not exist".into(),
        });
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(
            line,
            r#"{"error":{"kind":"not_found","message":"VPS web does not exist"}}"#
        );
        let back = serde_json::from_str::<Reply<Vec<VpsStatus>>>(&line).unwrap();
        assert_eq!(back.into_result().unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn every_op_name_is_its_wire_tag() {
        for r in [
            Request::from(Ping {}),
            TemplateImport {
                name: "t".into(),
                path: "/x".into(),
            }
            .into(),
            PolicyList {}.into(),
        ] {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["op"], r.op());
        }
    }

    #[test]
    fn a_policy_reply_reads_back_as_the_policy_shown() {
        let policy = Policy::parse("default.yaml", crate::policy::BUILTIN_DEFAULT).unwrap();
        let line = serde_json::to_string(&Reply::Ok(policy.clone())).unwrap();
        let back: Reply<Policy> = serde_json::from_str(&line).unwrap();
        assert_eq!(back.into_result().unwrap(), policy);
    }

    #[test]
    fn events_travel_flat_with_their_names() {
        let event = Event {
            logged: LoggedEvent {
                seq: 4,
                time: 1.5,
                event: KsalEvent {
                    vps_id: 2,
                    cgroup_id: 9,
                    hook: "file_open".into(),
                    rule_id: 11,
                    verdict: Verdict::Denied,
                    pid: 40,
                    tgid: 40,
                    comm: "cat".into(),
                    object: 77,
                    ktime_ns: 5,
                },
            },
            vps: Some("web".into()),
            rule: "files[0]".into(),
        };
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (&v["seq"], &v["verdict"], &v["vps"], &v["rule"], &v["comm"]),
            (
                &json!(4),
                &json!("denied"),
                &json!("web"),
                &json!("files[0]"),
                &json!("cat")
            )
        );
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), event);
    }
}
