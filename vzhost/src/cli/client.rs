//! Talking to the daemon: one connection per request, typed replies, and
//! failures that keep the kind the daemon gave them.
use std::{
    os::{fd::OwnedFd, unix::net::UnixStream},
    path::{Path, PathBuf},
};

use vzhost::{
    daemon::{
        api::{Call, Failure, Progress, Reply, Session},
        channel::{ApiError, Channel},
    },
    model::ErrorKind,
    rootfs::TemplateInfo,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the vzhost daemon at {path} (is `vzhost daemon` running, and are you root?): {source}"
    )]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Daemon(#[from] Failure),
    #[error("the daemon answered out of turn: {0}")]
    Protocol(&'static str),
}

impl ClientError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Daemon(f) => f.kind,
            Self::Connect { .. } | Self::Api(_) | Self::Protocol(_) => ErrorKind::Internal,
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    fn send<C: Call>(&self, request: C) -> Result<Channel, ClientError> {
        let sock = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            path: self.socket.display().to_string(),
            source,
        })?;
        let mut chan = Channel::new(sock);
        chan.send(&request.into(), &[])?;
        Ok(chan)
    }

    /// Ask, and wait for the answer.
    pub fn call<C: Call>(&self, request: C) -> Result<C::Reply, ClientError> {
        let mut chan = self.send(request)?;
        read(&mut chan).map(|(reply, _)| reply)
    }

    /// Ask for a long job: each progress line to `line` as it comes, then
    /// what was made.
    pub fn follow<C: Call<Reply = Progress>>(
        &self,
        request: C,
        mut line: impl FnMut(&str),
    ) -> Result<TemplateInfo, ClientError> {
        let mut chan = self.send(request)?;
        loop {
            match read::<Progress>(&mut chan)?.0 {
                Progress::Line(l) => line(&l),
                Progress::Done(info) => return Ok(info),
            }
        }
    }

    /// Start an exec or enter: the channel its exit will come on, and the
    /// caller's ends of the command's stdio.
    pub fn session<C: Call<Reply = Session>>(
        &self,
        request: C,
    ) -> Result<(Channel, Vec<OwnedFd>), ClientError> {
        let mut chan = self.send(request)?;
        match read::<Session>(&mut chan)? {
            (Session::Started, fds) => Ok((chan, fds)),
            (Session::Exited { .. }, _) => Err(ClientError::Protocol("exited before it started")),
        }
    }
}

/// The next reply on `chan`, with the descriptors that came with it.
pub fn read<T: serde::de::DeserializeOwned>(
    chan: &mut Channel,
) -> Result<(T, Vec<OwnedFd>), ClientError> {
    let (reply, fds) = chan.recv::<Reply<T>>()?;
    Ok((reply.into_result()?, fds))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use vzhost::daemon::api::{Request, Start};

    use super::*;

    /// A one-shot daemon at a temporary socket that answers with `reply`.
    fn daemon(
        reply: &'static str,
    ) -> (tempfile::TempDir, Client, std::thread::JoinHandle<Request>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let served = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut chan = Channel::new(sock);
            let (request, _) = chan.recv::<Request>().unwrap();
            std::io::Write::write_all(&mut chan.socket(), reply.as_bytes()).unwrap();
            request
        });
        (dir, Client::new(&path), served)
    }

    #[test]
    fn a_failure_from_the_daemon_arrives_typed() {
        let (_dir, client, served) = daemon(
            "{\"error\":{\"kind\":\"conflict\",\"message\":\"VPS web is already running\"}}\n",
        );
        let err = client.call(Start { name: "web".into() }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(err.to_string(), "VPS web is already running");
        let request = served.join().unwrap();
        assert_eq!((request.op(), request.vps()), ("start", Some("web")));
    }

    #[test]
    fn an_answer_arrives_as_the_type_the_request_promises() {
        let (_dir, client, _served) =
            daemon("{\"ok\":{\"init_pid\":42,\"init_start\":7,\"started_at\":1700000000}}\n");
        let runtime = client.call(Start { name: "web".into() }).unwrap();
        assert_eq!(runtime.init_pid, 42);
    }

    #[test]
    fn an_answer_of_the_wrong_shape_is_no_success() {
        let (_dir, client, _served) = daemon("{\"ok\":\"pong\"}\n");
        let err = client.call(Start { name: "web".into() }).unwrap_err();
        assert!(matches!(err, ClientError::Api(ApiError::Json(_))), "{err}");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }

    #[test]
    fn a_long_job_shows_each_stage_then_what_it_made_or_why_not() {
        use vzhost::{daemon::api::TemplateCreate, rootfs::distro::DistroBuild};
        let create = || TemplateCreate {
            name: "deb".into(),
            build: DistroBuild::debian(None, &[], None),
        };
        let (_dir, client, served) = daemon(
            "{\"ok\":{\"line\":\"I: Retrieving InRelease\"}}\n\
             {\"ok\":{\"line\":\"I: Base system installed successfully.\"}}\n\
             {\"ok\":{\"done\":{\"name\":\"deb\",\"path\":\"/t/deb\",\"builtin\":false}}}\n",
        );
        let mut lines = Vec::new();
        let made = client
            .follow(create(), |l| lines.push(l.to_owned()))
            .unwrap();
        assert_eq!(
            lines,
            [
                "I: Retrieving InRelease",
                "I: Base system installed successfully."
            ]
        );
        assert_eq!((made.name.as_str(), made.meta), ("deb", None));
        assert_eq!(served.join().unwrap().op(), "template_create");

        let (_dir, client, _served) = daemon(
            "{\"ok\":{\"line\":\"I: Retrieving InRelease\"}}\n\
             {\"error\":{\"kind\":\"internal\",\"message\":\"debootstrap of bookworm failed\"}}\n",
        );
        let err = client.follow(create(), |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "debootstrap of bookworm failed");
    }

    #[test]
    fn no_daemon_is_a_general_failure_that_says_what_to_check() {
        let client = Client::new(Path::new("/nonexistent/vzhost.sock"));
        let err = client.call(Start { name: "web".into() }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(
            err.to_string().contains("is `vzhost daemon` running"),
            "{err}"
        );
    }
}
