//! The daemon's metrics endpoint: `GET /metrics` over plain HTTP/1.1, one
//! request per connection, which is all a Prometheus scraper needs.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::HostStat;

pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";
const MAX_REQUEST: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

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
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let source = source.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, source).await {
                        tracing::debug!("metrics request: {e}");
                    }
                });
            }
            Err(e) => tracing::warn!("metrics accept: {e}"),
        }
    }
}

/// The head of a request: method, path, and whether OpenMetrics is accepted.
fn parse_head(head: &str) -> Option<(&str, &str, bool)> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?, first.next()?);
    let openmetrics = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    Some((method, path.split('?').next().unwrap_or(path), openmetrics))
}

async fn answer(mut stream: TcpStream, source: Source) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            buf.extend_from_slice(&chunk[..n]);
            if n == 0 || buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > MAX_REQUEST {
                return Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned());
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let (status, ctype, body) = match parse_head(&head) {
        Some(("GET", "/metrics", openmetrics)) => {
            let stat = tokio::task::spawn_blocking(move || source())
                .await
                .map_err(std::io::Error::other)?;
            let (body, ctype) = super::encode(&stat, openmetrics);
            ("200 OK", ctype, body)
        }
        Some(("GET", _, _)) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "vzhost serves its metrics at /metrics\n".to_owned(),
        ),
        Some(_) => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is served\n".to_owned(),
        ),
        None => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "malformed request\n".to_owned(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse() {
        let prom = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n";
        assert_eq!(parse_head(prom), Some(("GET", "/metrics", true)));
        let curl = "GET /metrics?x=1 HTTP/1.1\r\nAccept: */*\r\n\r\n";
        assert_eq!(parse_head(curl), Some(("GET", "/metrics", false)));
        assert_eq!(parse_head(""), None);
    }
}
