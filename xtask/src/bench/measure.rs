//! What every benchmark uses: samples and their statistics, timed
//! commands, memory readings, and the report.
use std::{
    fs,
    io::{Read as _, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Samples of one measurement, in seconds.
#[derive(Default, Clone)]
pub(super) struct Samples(pub(super) Vec<f64>);

impl Samples {
    pub(super) fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }
    pub(super) fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    pub(super) fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let m = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[m - 1] + v[m]) / 2.0
        } else {
            v[m]
        }
    }
    pub(super) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    pub(super) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    pub(super) fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {:.1} | {:.1} | {:.1} | {} |\n",
            self.median() * 1e3,
            self.min() * 1e3,
            self.max() * 1e3,
            self.0.len()
        )
    }
}

pub(super) fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

pub(super) fn target(ok: bool, text: String) -> String {
    format!("{} ({text})", if ok { "**met**" } else { "**missed**" })
}

/// What the report says, section by section.
#[derive(Default)]
pub(super) struct Report {
    pub(super) sections: Vec<String>,
}

impl Report {
    pub(super) fn add(&mut self, s: String) {
        println!("{s}");
        self.sections.push(s);
    }
}

/// A `Name:   123 kB` field of a /proc status-like file, in KiB.
pub(super) fn kib_field(path: &str, field: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix(" kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

pub(super) fn mem_available_kib() -> u64 {
    kib_field("/proc/meminfo", "MemAvailable:")
}

pub(super) fn rss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Write back dirty pages and let the machine settle before a memory reading.
pub(super) fn settle() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(500));
}

/// `GET /metrics` on 127.0.0.1:9464 inside the network namespace of `pid`.
pub(super) fn scrape(pid: u32) -> anyhow::Result<(Duration, usize)> {
    crate::host::in_netns_of(pid, || {
        let start = Instant::now();
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464")?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)?;
        Ok((start.elapsed(), body.len()))
    })
}
