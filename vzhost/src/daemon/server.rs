//! The API socket: root only, one connection per request, each answered on
//! a blocking thread of its own under a tracing span that names the
//! request and its VPS and ends with how long it took.
use std::{
    fs,
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixListener, UnixStream},
    },
    path::Path,
    time::{Duration, Instant},
};

use super::{
    DaemonError,
    api::{self, Call, Failure, Reply, Request},
    channel::{ApiError, Channel},
    handlers::{HandlerError, Handlers},
};
use crate::{metrics::http::Backoff, model::ErrorKind};

/// How long a caller may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.display().to_string()));
        }
        fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Root only: the API can do anything to any VPS.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// Answer requests until SIGTERM or SIGINT.
pub async fn serve(listener: UnixListener, handlers: Handlers) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot serve the socket: {e}");
            return;
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if let Some(failures) = backoff.succeeded() {
                        tracing::info!(failures, "API accept works again");
                    }
                    let handlers = handlers.clone();
                    tokio::task::spawn_blocking(move || {
                        let Ok(std) = stream.into_std() else { return };
                        if std.set_nonblocking(false).is_ok() {
                            handle(Channel::new(std), &handlers);
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors, most likely: pause rather than spin.
                    let (pause, first) = backoff.failed();
                    if first {
                        tracing::warn!("API accept failed: {e}; retrying with pauses, quietly until it works again");
                    }
                    tokio::time::sleep(pause).await;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
}

/// Read one request, answer it.
fn handle(mut chan: Channel, handlers: &Handlers) {
    let _ = chan.socket().set_read_timeout(Some(REQUEST_TIMEOUT));
    let request = match chan.recv::<Request>() {
        // No request takes descriptors: any sent along are closed here.
        Ok((request, _fds)) => request,
        Err(ApiError::Closed) => return,
        Err(e) => {
            tracing::info!(kind = %e.kind(), "refused a malformed request: {e}");
            answer::<api::Ping>(&mut chan, Err(e.into()));
            return;
        }
    };
    let _ = chan.socket().set_read_timeout(None);
    let span = tracing::info_span!("request", op = request.op(), vps = request.vps());
    let _entered = span.enter();
    let started = Instant::now();
    let failed = dispatch(&mut chan, handlers, request);
    let took_ms = started.elapsed().as_millis() as u64;
    match failed {
        None => tracing::info!(took_ms, "done"),
        Some(kind) => tracing::info!(took_ms, %kind, "failed"),
    }
}

/// Run `request`; the kind of its failure, if it failed.
fn dispatch(chan: &mut Channel, h: &Handlers, request: Request) -> Option<ErrorKind> {
    match request {
        Request::Ping(_) => answer::<api::Ping>(chan, Ok(())),
        Request::Create(r) => answer::<crate::vps::CreateRequest>(chan, h.create(&r)),
        Request::Start(r) => answer::<api::Start>(chan, h.start(&r.name)),
        Request::Stop(r) => answer::<api::Stop>(chan, h.stop(&r.name)),
        Request::Restart(r) => answer::<api::Restart>(chan, h.restart(&r.name)),
        Request::Destroy(r) => answer::<api::Destroy>(chan, h.destroy(&r.name, r.force)),
        Request::List(_) => answer::<api::List>(chan, h.list()),
        Request::Set(r) => answer::<api::Set>(chan, h.set(&r)),
        Request::Passwd(r) => answer::<api::Passwd>(chan, h.passwd(&r)),
        Request::ConsoleLog(r) => answer::<api::ConsoleLog>(chan, h.console_log(&r.name)),
        Request::Stat(r) => answer::<api::Stat>(chan, h.stat(r.name.as_deref())),
        Request::PolicyList(_) => answer::<api::PolicyList>(chan, Ok(h.policy_list())),
        Request::PolicyShow(r) => answer::<api::PolicyShow>(chan, h.policy_show(&r.name)),
        Request::Events(r) => answer::<api::Events>(chan, Ok(h.events(&r))),
        Request::TemplateList(_) => answer::<api::TemplateList>(chan, Ok(h.template_list())),
        Request::TemplateImport(r) => answer::<api::TemplateImport>(chan, h.template_import(&r)),
        Request::TemplateCreate(r) => {
            let result = h.template_create(chan, &r);
            answer::<api::TemplateCreate>(chan, result.map(api::Progress::Done))
        }
        Request::Exec(r) => {
            let result = h.exec(chan, r);
            answer::<api::Exec>(chan, result)
        }
        Request::Enter(r) => {
            let result = h.enter(chan, &r);
            answer::<api::Enter>(chan, result)
        }
        Request::Console(r) => {
            let result = h.console(chan, &r.name);
            answer::<api::Console>(chan, result)
        }
    }
}

/// Send the reply request type `C` promises; the kind of the failure, if
/// it is one.
fn answer<C: Call>(
    chan: &mut Channel,
    result: Result<C::Reply, HandlerError>,
) -> Option<ErrorKind> {
    let (reply, failed) = match result {
        Ok(v) => (Reply::Ok(v), None),
        Err(e) => {
            let kind = e.kind();
            tracing::debug!(%kind, "{e}");
            (
                Reply::Error(Failure {
                    kind,
                    message: e.to_string(),
                }),
                Some(kind),
            )
        }
    };
    // A caller that hung up gets no answer; there is no one to tell.
    let _ = chan.send(&reply, &[]);
    failed
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};

    use super::*;

    /// What the server answers to the raw bytes `sent`, with no host
    /// behind it: only requests that fail before reaching one.
    fn answer_to(sent: &[u8]) -> Reply<()> {
        let (client, server) = UnixStream::pair().unwrap();
        let sent = sent.to_vec();
        let mut writer = client.try_clone().unwrap();
        // The server stops reading at the limit: the rest may never go.
        std::thread::spawn(move || {
            let _ = writer.write_all(&sent);
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let mut chan = Channel::new(server);
        match chan.recv::<Request>() {
            Ok(_) => panic!("a malformed request parsed"),
            Err(e) => {
                answer::<api::Ping>(&mut chan, Err(e.into()));
            }
        }
        let mut line = String::new();
        BufReader::new(client).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn malformed_requests_are_refused_as_invalid() {
        for sent in [
            &b"hello\n"[..],
            b"{\"op\":\"rm_rf\"}\n",
            b"{\"op\":\"start\",\"name\":7}\n",
            b"\xff\xfe\n",
        ] {
            let failure = answer_to(sent).into_result().unwrap_err();
            assert_eq!(failure.kind, ErrorKind::Invalid, "{sent:?}: {failure:?}");
            assert!(failure.message.starts_with("bad request"), "{failure:?}");
        }
    }

    #[test]
    fn an_unended_request_past_the_limit_is_refused() {
        let big = vec![b'{'; super::super::channel::MAX_MESSAGE + 2];
        let failure = answer_to(&big).into_result().unwrap_err();
        assert_eq!(failure.kind, ErrorKind::Invalid);
    }
}
