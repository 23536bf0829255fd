//! How data prints without `-o json`: fixed-width columns, like vzlist and
//! /proc/user_beancounters.
use vzhost::{
    daemon::api::Event,
    doctor::Check,
    metrics::VpsStat,
    model::{Status, VpsStatus},
    policy::watch::FileStatus,
    rootfs::TemplateInfo,
};

/// NAME STATUS IP HOSTNAME NPROC, as vzlist prints them, then IP6.
pub fn vps(rows: &[VpsStatus]) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:<18} {:<24} {:<5} {}\n",
        "NAME", "STATUS", "IP", "HOSTNAME", "NPROC", "IP6"
    );
    for row in rows {
        out += &format!(
            "{:<24} {:<8} {:<18} {:<24} {:<5} {}\n",
            row.name,
            row.status,
            row.ip.as_deref().unwrap_or("-"),
            row.hostname,
            row.nproc,
            row.ip6.as_deref().unwrap_or("-")
        );
    }
    out
}

/// Policy files, with where and why a bad one is bad.
pub fn policies(files: &[FileStatus]) -> String {
    let mut out = format!("{:<16} {:<7} {}\n", "POLICY", "STATE", "FILE");
    for f in files {
        let state = match (&f.policy, &f.error) {
            (_, None) => "ok",
            (Some(_), Some(_)) => "stale",
            (None, Some(_)) => "invalid",
        };
        out += &format!(
            "{:<16} {:<7} {}\n",
            f.policy.as_deref().unwrap_or("-"),
            state,
            f.file
        );
        if let Some(e) = &f.error {
            out += &format!(
                "    {e}{}\n",
                if f.policy.is_some() {
                    " (its last good version stays in force)"
                } else {
                    ""
                }
            );
        }
    }
    out
}

/// One line per event.
pub fn event(e: &Event) -> String {
    let k = &e.logged.event;
    format!(
        "{:.3} {:<16} {:<12} {:<8} {:<28} pid={} comm={}",
        e.logged.time,
        e.vps.as_deref().unwrap_or("?"),
        k.hook,
        k.verdict,
        e.rule,
        k.tgid,
        k.comm
    )
}

/// Like /proc/user_beancounters: a block of rows per VPS.
pub fn stat(vpss: &[VpsStat]) -> String {
    let num = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
    let mut out = format!(
        "{:<24} {:<10} {:>14} {:>14} {:>14} {:>10}\n",
        "VPS", "RESOURCE", "HELD", "MAXHELD", "LIMIT", "FAILCNT"
    );
    for vps in vpss {
        let label = if vps.running {
            vps.name.clone()
        } else {
            format!("{} ({})", vps.name, Status::Stopped)
        };
        for (i, row) in vps.beancounters.iter().enumerate() {
            out += &format!(
                "{:<24} {:<10} {:>14} {:>14} {:>14} {:>10}\n",
                if i == 0 { label.as_str() } else { "" },
                row.resource,
                row.held,
                num(row.maxheld),
                num(row.limit),
                num(row.failcnt),
            );
        }
    }
    out
}

/// NAME DISTRIBUTION RELEASE INIT SIZE CREATED HASH; a dash where a
/// template has no metadata (the built-in one before its first use).
pub fn templates(rows: &[TemplateInfo]) -> String {
    let line = |cols: [&str; 7]| {
        format!(
            "{:<20} {:<12} {:<8} {:<8} {:>10}  {:<16}  {}\n",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6]
        )
    };
    let mut out = line([
        "NAME",
        "DISTRIBUTION",
        "RELEASE",
        "INIT",
        "SIZE",
        "CREATED",
        "HASH",
    ]);
    for t in rows {
        out += &match &t.meta {
            Some(m) => line([
                &t.name,
                &m.distribution,
                &m.release,
                m.init.as_str(),
                &size(m.size),
                &utc(m.created),
                // Enough of the digest to tell templates apart.
                m.hash.get(..19).unwrap_or(&m.hash),
            ]),
            None => line([&t.name, "-", "-", "-", "-", "-", "-"]),
        };
    }
    out
}

/// Bytes in the largest binary unit that keeps a whole number part.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM` UTC (Hinnant's
/// civil-from-days).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hh, mm) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

pub fn doctor(checks: &[Check]) -> String {
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
}

#[cfg(test)]
mod tests {
    use vzhost::{
        ksal::{KsalEvent, LoggedEvent},
        model::{Limits, Verdict},
        policy::PolicyError,
    };

    use super::*;

    fn columns(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn the_vps_list_shows_a_dash_for_no_address() {
        let row = |name: &str, status, ip: Option<&str>| VpsStatus {
            name: name.into(),
            status,
            ip: ip.map(str::to_owned),
            ip6: ip.map(|_| "fd00::2".to_owned()),
            hostname: format!("{name}.example"),
            nproc: 3,
            template: "busybox".into(),
            limits: Limits::default(),
            init_pid: None,
            network: None,
            policy: None,
            degraded: false,
            last_exit: None,
        };
        let t = vps(&[
            row("web", Status::Running, Some("10.213.0.2/16")),
            row("db", Status::Stopped, None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            columns(lines[0]),
            ["NAME", "STATUS", "IP", "HOSTNAME", "NPROC", "IP6"]
        );
        assert_eq!(
            columns(lines[1]),
            [
                "web",
                "running",
                "10.213.0.2/16",
                "web.example",
                "3",
                "fd00::2"
            ]
        );
        assert_eq!(
            columns(lines[2]),
            ["db", "stopped", "-", "db.example", "3", "-"]
        );
    }

    #[test]
    fn policy_files_say_whether_they_are_in_force() {
        let error = Some(PolicyError {
            file: "x.yaml".into(),
            line: 4,
            column: 7,
            reason: "not absolute".into(),
        });
        let t = policies(&[
            FileStatus {
                file: "a.yaml".into(),
                policy: Some("a".into()),
                error: None,
            },
            FileStatus {
                file: "x.yaml".into(),
                policy: Some("x".into()),
                error: error.clone(),
            },
            FileStatus {
                file: "y.yaml".into(),
                policy: None,
                error,
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(columns(lines[1]), ["a", "ok", "a.yaml"]);
        assert_eq!(columns(lines[2]), ["x", "stale", "x.yaml"]);
        assert_eq!(
            lines[3].trim(),
            "x.yaml:4:7: not absolute (its last good version stays in force)"
        );
        assert_eq!(columns(lines[4]), ["-", "invalid", "y.yaml"]);
        assert_eq!(lines[5].trim(), "x.yaml:4:7: not absolute");
    }

    #[test]
    fn beancounters_mark_stopped_vpss_and_unknown_values() {
        let stopped = VpsStat {
            name: "db".into(),
            id: 2,
            running: false,
            started_at: None,
            accounting: None,
            network: None,
            disk_used: 4096,
            disk_limit: None,
            beancounters: Vec::new(),
        }
        .with_beancounters();
        let t = stat(&[stopped]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            columns(lines[1]),
            ["db", "(stopped)", "numproc", "0", "0", "-", "0"]
        );
        let disk = lines.iter().find(|l| l.contains("diskspace")).unwrap();
        assert_eq!(columns(disk), ["diskspace", "4096", "-", "-", "-"]);
    }

    #[test]
    fn templates_show_their_metadata_or_dashes() {
        use vzhost::rootfs::meta::{Init, TemplateMeta};
        let debian = TemplateInfo {
            name: "debian-bookworm".into(),
            path: "/var/lib/vzhost/templates/debian-bookworm".into(),
            builtin: false,
            meta: Some(TemplateMeta {
                distribution: "debian".into(),
                release: "12".into(),
                codename: Some("bookworm".into()),
                init: Init::Systemd,
                hash: format!("sha256:{}", "ab".repeat(32)),
                size: 124_780_544,
                created: 1_796_006_700,
            }),
        };
        let busybox = TemplateInfo {
            name: "busybox".into(),
            path: "/x".into(),
            builtin: true,
            meta: None,
        };
        let t = templates(&[busybox, debian]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            columns(lines[0]),
            [
                "NAME",
                "DISTRIBUTION",
                "RELEASE",
                "INIT",
                "SIZE",
                "CREATED",
                "HASH"
            ]
        );
        assert_eq!(columns(lines[1]), ["busybox", "-", "-", "-", "-", "-", "-"]);
        assert_eq!(
            columns(lines[2]),
            [
                "debian-bookworm",
                "debian",
                "12",
                "systemd",
                "119.0",
                "MiB",
                "2026-11-30",
                "02:45",
                "sha256:abababababab"
            ]
        );
        assert_eq!(size(512), "512 B");
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn an_event_line_names_the_vps_rule_and_verdict() {
        let mut e = Event {
            logged: LoggedEvent {
                seq: 1,
                time: 12.3456,
                event: KsalEvent {
                    vps_id: 1,
                    cgroup_id: 2,
                    hook: "file_open".into(),
                    rule_id: 3,
                    verdict: Verdict::Audited,
                    pid: 10,
                    tgid: 9,
                    comm: "cat".into(),
                    object: 0,
                    ktime_ns: 0,
                },
            },
            vps: Some("web".into()),
            rule: "files[0]".into(),
        };
        assert_eq!(
            columns(&event(&e)),
            [
                "12.346",
                "web",
                "file_open",
                "audited",
                "files[0]",
                "pid=9",
                "comm=cat"
            ]
        );
        e.vps = None;
        assert_eq!(columns(&event(&e))[1], "?");
    }
}
