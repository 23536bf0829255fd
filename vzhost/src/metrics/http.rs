//! The daemon's metrics endpoint: `GET /metrics` over plain HTTP/1.1, one
//! request per connection, which is all a Prometheus scraper needs. Any
//! local user can connect, so it holds under abuse: at most
//! [`MAX_CONNECTIONS`] are served at once (more are closed at once), each
//! has a deadline to send its request and to take the answer, a request
//! head is capped, and failing accepts (EMFILE) back off instead of
//! spinning, with one log line per episode.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::HostStat;

pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest request head served (its blank line excluded).
pub const MAX_REQUEST: usize = 16 * 1024;
/// What is read of a request at most: a head of the largest size and its
/// blank line.
const READ_LIMIT: usize = MAX_REQUEST + 4;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the figures of a scrape come from (called on a blocking thread).
pub type Source = Arc<dyn Fn() -> HostStat + Send + Sync>;

/// Bind the endpoint now, so a taken address fails the daemon's start.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

pub async fn serve(listener: std::net::TcpListener, source: Source) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot serve metrics: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Backoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Some(failures) = backoff.succeeded() {
                    tracing::info!(failures, "metrics accept works again");
                }
                // Over the cap: dropped, so closed at once.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let source = source.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, source).await {
                        tracing::debug!("metrics request: {e}");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                let (pause, first) = backoff.failed();
                if first {
                    tracing::warn!(
                        "metrics accept failed: {e}; retrying with pauses up to {:?}, quietly \
                         until it works again",
                        Backoff::MAX
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Pauses between failing accepts. A connection refused for want of a
/// descriptor stays queued, so retrying at once would spin: the pause
/// doubles from [`Backoff::MIN`] to [`Backoff::MAX`], and a run of failures
/// is logged once when it starts and once when it ends.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u64,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(10);
    pub(crate) const MAX: Duration = Duration::from_secs(1);

    /// The pause after one more failure, and whether it starts a run.
    pub(crate) fn failed(&mut self) -> (Duration, bool) {
        self.failures += 1;
        let doublings = (self.failures - 1).min(16) as u32;
        (
            Self::MIN.saturating_mul(1 << doublings).min(Self::MAX),
            self.failures == 1,
        )
    }

    /// After an accept that worked: how many failed before it, if any.
    pub(crate) fn succeeded(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.failures)).filter(|&n| n > 0)
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics { openmetrics: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

fn blank_line(received: &[u8]) -> Option<usize> {
    received.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Whether `received` holds a whole request head, or as much of one as
/// will be read.
pub fn head_complete(received: &[u8]) -> bool {
    received.len() >= READ_LIMIT || blank_line(received).is_some()
}

/// What the request in `received` asks for: its head is what comes before
/// the blank line, or all that came if the client stopped short of one.
pub fn route(received: &[u8]) -> Route {
    let head = &received[..blank_line(received).unwrap_or(received.len())];
    if head.len() > MAX_REQUEST {
        return Route::TooLarge;
    }
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        return Route::BadRequest;
    };
    if method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    if target.split('?').next() != Some("/metrics") {
        return Route::NotFound;
    }
    let openmetrics = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    Route::Metrics { openmetrics }
}

/// The head of the request on `stream`, up to [`READ_LIMIT`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head_complete(&buf) {
        let room = chunk.len().min(READ_LIMIT - buf.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

async fn answer(mut stream: TcpStream, source: Source) -> std::io::Result<()> {
    let timed_out = |what| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| timed_out("request head"))??;
    let text = "text/plain; charset=utf-8";
    let (status, ctype, body) = match route(&head) {
        Route::Metrics { openmetrics } => {
            let stat = tokio::task::spawn_blocking(move || source())
                .await
                .map_err(std::io::Error::other)?;
            let (body, ctype) = super::encode(&stat, openmetrics);
            ("200 OK", ctype, body)
        }
        Route::NotFound => (
            "404 Not Found",
            text,
            "vzhost serves its metrics at /metrics\n".to_owned(),
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            text,
            "only GET is served\n".to_owned(),
        ),
        Route::BadRequest => ("400 Bad Request", text, "malformed request\n".to_owned()),
        Route::TooLarge => (
            "431 Request Header Fields Too Large",
            text,
            "request head too large\n".to_owned(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(reply.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| timed_out("answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapers_get_the_format_they_ask_for() {
        let prom = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n";
        assert_eq!(route(prom), Route::Metrics { openmetrics: true });
        let curl = b"GET /metrics?x=1 HTTP/1.1\r\nAccept: */*\r\n\r\n";
        assert_eq!(route(curl), Route::Metrics { openmetrics: false });
    }

    #[test]
    fn other_requests_are_told_what_is_wrong() {
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        for bad in [
            &b""[..],
            b"GET",
            b" /metrics HTTP/1.1",
            b"GET metrics HTTP/1.1",
        ] {
            assert_eq!(route(bad), Route::BadRequest, "{bad:?}");
        }
    }

    #[test]
    fn a_head_is_complete_at_its_blank_line_or_past_the_cap() {
        assert!(!head_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET /metrics HTTP/1.1\r\n\r\n"));
        assert!(!head_complete(&vec![b'a'; MAX_REQUEST]));
        assert!(head_complete(&vec![b'a'; READ_LIMIT]));
    }

    #[test]
    fn only_a_head_past_the_cap_is_too_large() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_REQUEST, b'a');
        let mut at_cap = head.clone();
        at_cap.extend_from_slice(b"\r\n\r\n");
        assert_eq!(route(&at_cap), Route::Metrics { openmetrics: false });
        head.push(b'a');
        assert_eq!(route(&head), Route::TooLarge);
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(route(&head), Route::TooLarge);
    }

    #[test]
    fn failing_accepts_back_off_and_log_once_per_run() {
        let mut b = Backoff::default();
        let runs: Vec<(Duration, bool)> = (0..12).map(|_| b.failed()).collect();
        assert_eq!(runs.iter().filter(|(_, first)| *first).count(), 1);
        assert!(runs[0].1);
        assert_eq!(runs[0].0, Backoff::MIN);
        assert!(runs.windows(2).all(|w| w[1].0 >= w[0].0), "{runs:?}");
        assert_eq!(runs.last().unwrap().0, Backoff::MAX);
        assert_eq!(b.succeeded(), Some(12));
        assert_eq!(b.succeeded(), None);
        assert_eq!(b.failed(), (Backoff::MIN, true), "a new run starts afresh");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(HostStat::default)));
        // Idle clients take every slot and keep it until their deadline.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut late = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), late.read(&mut buf))
            .await
            .expect("closed, not left waiting");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    }
}
