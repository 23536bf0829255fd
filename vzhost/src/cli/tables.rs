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

/// NAME STATUS IP HOSTNAME NPROC, as vzlist prints them.
pub fn vps(rows: &[VpsStatus]) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:<18} {:<24} {}\n",
        "NAME", "STATUS", "IP", "HOSTNAME", "NPROC"
    );
    for row in rows {
        out += &format!(
            "{:<24} {:<8} {:<18} {:<24} {}\n",
            row.name,
            row.status,
            row.ip.as_deref().unwrap_or("-"),
            row.hostname,
            row.nproc
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

pub fn templates(rows: &[TemplateInfo]) -> String {
    let mut out = format!("{:<20} {}\n", "NAME", "PATH");
    for t in rows {
        out += &format!("{:<20} {}\n", t.name, t.path.display());
    }
    out
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
            ["NAME", "STATUS", "IP", "HOSTNAME", "NPROC"]
        );
        assert_eq!(
            columns(lines[1]),
            ["web", "running", "10.213.0.2/16", "web.example", "3"]
        );
        assert_eq!(columns(lines[2]), ["db", "stopped", "-", "db.example", "3"]);
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
