//! The daemon's `/metrics` endpoint, read the way a scraper reads it:
//! fresh figures per VPS, in Prometheus naming, in the classic text format
//! or OpenMetrics as asked.
use std::time::{Duration, Instant};

use vzhost_tests::Daemon;

pub const ADDR: &str = "127.0.0.1:9464";

/// The value of the sample `series` (name and labels as exposed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Two running VPSs, and 1 MiB sent from a to b over HTTP.
pub fn two_vps_with_traffic(d: &Daemon) -> u64 {
    const BYTES: u64 = 1 << 20;
    d.ok(&["create", "a", "--ip", "10.213.0.10/16", "--pids", "50"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    d.sh_ok(
        "a",
        "mkdir -p /srv && dd if=/dev/zero of=/srv/blob bs=4096 count=256 2>/dev/null && httpd -p 0.0.0.0:8080 -h /srv",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    BYTES
}

pub fn send(d: &Daemon) {
    d.sh_ok("b", "wget -q -O /dev/null http://10.213.0.10:8080/blob");
}

#[test]
fn metrics_endpoint_reports_every_vps() -> anyhow::Result<()> {
    let d = Daemon::start("metrics")?;
    let bytes = two_vps_with_traffic(&d);
    d.ok(&["create", "idle"]);
    let get = || d.http_get(ADDR, "/metrics", "*/*").unwrap();
    let (code, head, before) = get();
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    send(&d);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, _, text) = get();
    let value = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(value("vzhost_vps_up{vps=\"a\"}"), 1.0);
    assert_eq!(value("vzhost_vps_up{vps=\"b\"}"), 1.0);
    assert_eq!(value("vzhost_vps_up{vps=\"idle\"}"), 0.0);
    let moved = |s: &str| value(s) - sample(&before, s).unwrap_or(0.0);
    let tx = moved("vzhost_vps_network_transmit_bytes_total{vps=\"a\"}");
    let rx = moved("vzhost_vps_network_receive_bytes_total{vps=\"b\"}");
    for (what, v) in [("a transmit", tx), ("b receive", rx)] {
        assert!(
            v >= bytes as f64 && v < bytes as f64 * 1.1,
            "{what} moved by {v} for {bytes} bytes sent"
        );
    }
    // The same figures as `stat`, from the same cgroup files.
    assert_eq!(value("vzhost_vps_processes_limit{vps=\"a\"}"), 50.0);
    assert!(value("vzhost_vps_memory_bytes{vps=\"a\"}") > 0.0);
    assert!(value("vzhost_vps_cpu_seconds_total{vps=\"a\",mode=\"user\"}") >= 0.0);
    assert!(value("vzhost_vps_disk_used_bytes{vps=\"a\"}") >= 1048576.0);
    assert!(text.contains("vzhost_build_info{version=\""), "{text}");
    assert!(text.contains("# HELP vzhost_vps_memory_bytes "), "{text}");
    // Prometheus asks for OpenMetrics and gets it.
    let (_, head, om) = d.http_get(
        ADDR,
        "/metrics",
        "application/openmetrics-text;version=1.0.0",
    )?;
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"));
    let (code, _, _) = d.http_get(ADDR, "/nothing", "*/*")?;
    assert_eq!(code, 404);
    Ok(())
}

/// A VPS that fills its layer with small files (here 100 000 made from the
/// host side, to keep the test short; the walk of its layer is what costs)
/// does not make scrapes slow for the others: its usage is walked off the
/// request path, and a scrape waits for no walk longer than a moment.
#[test]
fn a_vps_full_of_small_files_does_not_slow_scrapes() -> anyhow::Result<()> {
    let d = Daemon::start("metrics-files")?;
    d.ok(&["create", "a"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    let (count, quick) = if vzhost_tests::in_vm() {
        (20_000, Duration::from_secs(5))
    } else {
        (100_000, Duration::from_secs(1))
    };
    let upper = d.root().join("vps/a/disk/upper/srv");
    for dir in 0..count / 1000 {
        let dir = upper.join(dir.to_string());
        std::fs::create_dir_all(&dir)?;
        for file in 0..1000 {
            std::fs::File::create(dir.join(file.to_string()))?;
        }
    }
    // The walk of a's layer starts with the first scrape and takes longer
    // than these; none of them waits for it.
    for _ in 0..10 {
        let started = Instant::now();
        let (code, _, text) = d.http_get(ADDR, "/metrics", "*/*")?;
        let took = started.elapsed();
        assert_eq!(code, 200);
        assert!(took < quick, "a scrape took {took:?}");
        assert!(
            sample(&text, "vzhost_vps_memory_bytes{vps=\"b\"}").is_some(),
            "b is in every scrape: {text}"
        );
    }
    // a's figure arrives once its walk is done: a thousand more directories.
    let counted = vzhost_tests::wait_for(Duration::from_secs(120), || {
        let (_, _, text) = d.http_get(ADDR, "/metrics", "*/*").unwrap();
        sample(&text, "vzhost_vps_disk_used_bytes{vps=\"a\"}")
            .is_some_and(|bytes| bytes >= (count / 1000 * 4096) as f64)
    });
    assert!(counted, "a's usage never counted its files");
    Ok(())
}
