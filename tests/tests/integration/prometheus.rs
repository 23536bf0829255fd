//! A real Prometheus server scrapes the daemon. Native only: the server
//! (Debian's `prometheus`) is not carried into the test VM's initramfs;
//! the endpoint itself is tested in the VM by `metrics::`.
use std::time::{Duration, Instant};

use crate::metrics::{ADDR, send, two_vps_with_traffic};
use vzhost_tests::{Daemon, Scratch};

const PROMETHEUS_ADDR: &str = "127.0.0.1:9490";

/// Percent-encode a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an instant query, as JSON.
fn api_query(d: &Daemon, q: &str) -> serde_json::Value {
    let path = format!("/api/v1/query?query={}", encode(q));
    match d.http_get(PROMETHEUS_ADDR, &path, "application/json") {
        Ok((_, _, body)) => serde_json::from_str(&body).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Run an instant query: series labels to values.
fn query(d: &Daemon, q: &str) -> Vec<(serde_json::Value, f64)> {
    api_query(d, q)["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), value)
        })
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn value_of(d: &Daemon, q: &str) -> Option<f64> {
    query(d, q).first().map(|(_, v)| *v)
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

vzhost_tests::net_test! {
fn prometheus_scrapes_both_vps_and_sees_traffic() -> anyhow::Result<()> {
    let d = Daemon::start("prom")?;
    let bytes = two_vps_with_traffic(&d);

    // promtool's linter accepts what the endpoint serves.
    let (_, _, text) = d.http_get(ADDR, "/metrics", "*/*")?;
    let scratch = Scratch::new()?;
    let exposition = scratch.file("metrics.txt", &text)?;
    let lint = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", exposition.display()))
        .output()?;
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        vzhost_tests::stderr(&lint)
    );

    let config = scratch.file(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vzhost\n    static_configs:\n      - targets: ['{ADDR}']\n"
        ),
    )?;
    let data = scratch.dir.path().join("data");
    let _server = Killed(d.host_spawn(
        &[
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            &format!("--web.listen-address={PROMETHEUS_ADDR}"),
        ],
        &scratch.dir.path().join("prometheus.log"),
    )?);
    wait_for(
        "both VPSs up in Prometheus",
        Duration::from_secs(60),
        || {
            let up = query(&d, "vzhost_vps_up");
            ["a", "b"]
                .iter()
                .all(|n| up.iter().any(|(m, v)| m["vps"] == *n && *v == 1.0))
        },
    );
    let tx_q = "vzhost_vps_network_transmit_bytes_total{vps=\"a\"}";
    let rx_q = "vzhost_vps_network_receive_bytes_total{vps=\"b\"}";
    let (tx0, rx0) = (value_of(&d, tx_q).unwrap(), value_of(&d, rx_q).unwrap());
    send(&d);
    wait_for("the traffic in Prometheus", Duration::from_secs(30), || {
        value_of(&d, tx_q).is_some_and(|v| v - tx0 >= bytes as f64)
            && value_of(&d, rx_q).is_some_and(|v| v - rx0 >= bytes as f64)
    });
    let grew = value_of(&d, rx_q).unwrap() - rx0;
    assert!(
        grew < bytes as f64 * 1.1,
        "b received {grew} for {bytes} sent"
    );

    // Every query of the shipped Grafana dashboard is valid PromQL over
    // these metrics.
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/grafana-dashboard.json"
    ))?)?;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$vps", ".*");
            let answer = api_query(&d, &expr);
            assert_eq!(
                answer["status"], "success",
                "panel {}: {expr}: {answer}",
                panel["title"]
            );
        }
    }
    Ok(())
}
}
