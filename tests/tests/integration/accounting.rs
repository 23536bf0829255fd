//! Per-VPS accounting: `vzhost stat` beancounters follow the cgroup files
//! on either layout, and their failure counts rise when a VPS runs into a
//! limit.
use vzhost_tests::Daemon;

fn counters(d: &Daemon, vps: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["stat", vps, "-o", "json"])).expect("stat json");
    let rows = v[0]["beancounters"]
        .as_array()
        .expect("beancounters")
        .clone();
    rows.into_iter()
        .map(|r| (r["resource"].as_str().unwrap().to_owned(), r))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn number(text: &str) -> u64 {
    text.trim().parse().expect("a number")
}

fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn stat_follows_the_cgroup_files_and_counts_limit_failures() -> anyhow::Result<()> {
    let d = Daemon::start("stat")?;
    d.ok(&["create", "a", "--pids", "20", "--memory", "64M"]);
    d.ok(&["start", "a"]);
    let v2_memory = d
        .controller_parent("memory")
        .is_some_and(|p| p == d.cgroup.path);

    let before = counters(&d, "a");
    let numproc = &before["numproc"];
    assert_eq!(numproc["limit"], 20);
    assert_eq!(
        numproc["held"].as_u64().unwrap(),
        number(&d.cgroup_file("pids", "a", "pids.current")),
        "numproc held is pids.current: {before}"
    );
    assert_eq!(numproc["failcnt"], 0);
    assert_eq!(before["memory"]["limit"], 64u64 << 20);
    assert_eq!(before["memory"]["failcnt"], 0);
    // An idle VPS's memory settles; held is memory.current (v2) or
    // memory.usage_in_bytes (v1), maxheld the kernel's high-water mark.
    let (usage_file, peak_file) = if v2_memory {
        ("memory.current", "memory.peak")
    } else {
        ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
    };
    let mut matched = false;
    for _ in 0..20 {
        let file = number(&d.cgroup_file("memory", "a", usage_file));
        let row = counters(&d, "a")["memory"].clone();
        let peak = number(&d.cgroup_file("memory", "a", peak_file));
        if row["held"] == file && row["maxheld"] == peak {
            matched = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        matched,
        "memory held/maxheld never matched {usage_file}/{peak_file}"
    );

    // Into the pids limit: failcnt rises with pids.events.
    let _ = d.sh(
        "a",
        "i=0; while [ $i -lt 60 ]; do sleep 120 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null; true",
    );
    let after_bomb = counters(&d, "a");
    let failcnt = after_bomb["numproc"]["failcnt"].as_u64().unwrap();
    assert!(failcnt > 0, "numproc failcnt rose: {after_bomb}");
    assert_eq!(
        failcnt,
        keyed(&d.cgroup_file("pids", "a", "pids.events"), "max"),
        "failcnt is pids.events max"
    );
    let maxheld = after_bomb["numproc"]["maxheld"].as_u64().unwrap();
    assert!(
        (15..=20).contains(&maxheld),
        "numproc maxheld reached the limit: {after_bomb}"
    );
    // Room to fork the killall, then back to an idle VPS.
    d.ok(&["set", "a", "--pids", "200"]);
    d.sh_ok("a", "killall sleep; true");

    // Into the memory limit: failcnt rises and the OOM kill is counted.
    let out = d.sh("a", "tail /dev/zero");
    assert_eq!(out.status.code(), Some(137), "the hog was OOM-killed");
    let after_hog = counters(&d, "a");
    assert!(
        after_hog["memory"]["failcnt"].as_u64().unwrap() > 0,
        "memory failcnt rose: {after_hog}"
    );
    assert!(after_hog["oomkills"]["held"].as_u64().unwrap() >= 1);
    assert!(
        after_hog["memory"]["maxheld"].as_u64().unwrap() >= 60 << 20,
        "memory maxheld reached near the limit: {after_hog}"
    );

    // The table: a block per VPS, stopped ones marked.
    d.ok(&["create", "b"]);
    let table = d.ok(&["stat"]);
    assert!(
        table.contains("RESOURCE") && table.contains("FAILCNT"),
        "{table}"
    );
    assert!(table.contains("b (stopped)"), "{table}");
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("numproc"))
        .expect("a numproc row");
    assert_eq!(
        line.split_whitespace().last(),
        Some(failcnt.to_string().as_str()),
        "{table}"
    );
    Ok(())
}
