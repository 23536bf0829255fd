//! The first KSAL hook end to end: file_open denials for a stand-in VPS
//! cgroup, host tasks untouched, child cgroups covered, events delivered.
use std::{fs, time::Duration};

use ksal_common::{access, mode};
use vzhost::{
    ksal::{Ksal, KsalEvent},
    model::Verdict,
};
use vzhost_tests::{CgroupGuard, Scratch, lsm_available, stderr};

const VPS_ID: u32 = 7;
const RULE_ID: u32 = 42;
const EPERM_TEXT: &str = "Operation not permitted";

fn assert_denied(out: &std::process::Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what}: expected a denial, it succeeded"
    );
    assert!(
        stderr(out).contains(EPERM_TEXT),
        "{what}: expected EPERM, got: {}",
        stderr(out)
    );
}

/// A stand-in VPS with the KSAL loaded and one file under a rule.
struct Rig {
    vps: CgroupGuard,
    ksal: Ksal,
    scratch: Scratch,
    file: std::path::PathBuf,
}

fn rig(name: &str, contents: &str, vps_mode: u32, denied: u32) -> anyhow::Result<Rig> {
    let vps = CgroupGuard::new(name)?;
    let mut ksal = Ksal::load(vps.level, None)?;
    let scratch = Scratch::new()?;
    let file = scratch.file("ruled.txt", contents)?;
    ksal.register_vps(vps.id, VPS_ID, vps_mode)?;
    ksal.deny_file(VPS_ID, &file, denied, RULE_ID)?;
    Ok(Rig {
        vps,
        ksal,
        scratch,
        file,
    })
}

#[test]
fn file_open_denied_inside_vps_allowed_on_host() -> anyhow::Result<()> {
    if !lsm_available("file_open_denied_inside_vps_allowed_on_host") {
        return Ok(());
    }
    let vps = CgroupGuard::new("ksal-file-open")?;
    let mut ksal = Ksal::load(vps.level, None)?;
    let mut events = ksal.take_events()?;
    let scratch = Scratch::new()?;
    let denied = scratch.file("denied.txt", "secret\n")?;
    let allowed = scratch.file("allowed.txt", "public\n")?;
    ksal.register_vps(vps.id, VPS_ID, mode::ENFORCE)?;
    ksal.deny_file(VPS_ID, &denied, access::ANY, RULE_ID)?;
    let denied_s = denied.to_str().unwrap();
    println!(
        "VPS cgroup {} (id {}), denied file {denied_s}",
        vps.path.display(),
        vps.id
    );

    let out = vps.run(&["cat", denied_s])?;
    assert_denied(&out, "cat of the denied file inside the VPS");
    println!("inside the VPS: cat {denied_s}: {}", stderr(&out).trim());

    let out = vps.run(&["cat", allowed.to_str().unwrap()])?;
    assert!(
        out.status.success(),
        "allowed file inside the VPS: {}",
        stderr(&out)
    );
    assert_eq!(out.stdout, b"public\n");

    assert_eq!(
        fs::read_to_string(&denied)?,
        "secret\n",
        "the host must still open the file"
    );
    println!("on the host: the same file opens");

    let inner = vps.child("inner")?;
    assert_denied(
        &inner.run(&["cat", denied_s])?,
        "cat from a child cgroup of the VPS",
    );
    println!("from a child cgroup of the VPS: denied too");

    let seen = events.collect_until(Duration::from_secs(5), |_| false);
    let denials: Vec<&KsalEvent> = seen
        .iter()
        .filter(|e| e.verdict == Verdict::Denied)
        .collect();
    assert_eq!(
        denials.len(),
        2,
        "one denial event per denied open: {seen:?}"
    );
    for e in &denials {
        assert_eq!(e.vps_id, VPS_ID);
        assert_eq!(e.hook, "file_open");
        assert_eq!(e.rule_id, RULE_ID);
        assert_eq!(e.comm, "cat");
        assert_ne!(e.pid, 0);
    }
    assert_eq!(
        denials[0].cgroup_id, vps.id,
        "keyed on the VPS-level cgroup"
    );
    assert_eq!(
        denials[1].cgroup_id, vps.id,
        "a child cgroup maps to its VPS"
    );
    println!("events: {denials:?}");
    Ok(())
}

#[test]
fn file_open_rule_covers_other_names_of_the_file() -> anyhow::Result<()> {
    if !lsm_available("file_open_rule_covers_other_names_of_the_file") {
        return Ok(());
    }
    // Every field is bound: an unbound one would be dropped at once,
    // detaching the KSAL or deleting the file.
    let Rig {
        vps,
        ksal: _ksal,
        scratch,
        file: denied,
    } = rig("ksal-file-names", "secret\n", mode::ENFORCE, access::ANY)?;
    let link = scratch.dir.path().join("symlink");
    std::os::unix::fs::symlink(&denied, &link)?;
    let hard = scratch.dir.path().join("hardlink");
    fs::hard_link(&denied, &hard)?;
    for name in [&link, &hard] {
        assert_denied(
            &vps.run(&["cat", name.to_str().unwrap()])?,
            &name.display().to_string(),
        );
    }
    Ok(())
}

#[test]
fn file_open_audit_mode_allows_and_records() -> anyhow::Result<()> {
    if !lsm_available("file_open_audit_mode_allows_and_records") {
        return Ok(());
    }
    let Rig {
        vps,
        mut ksal,
        scratch: _scratch,
        file: watched,
    } = rig("ksal-file-audit", "data\n", mode::AUDIT, access::ANY)?;
    let mut events = ksal.take_events()?;
    let out = vps.run(&["cat", watched.to_str().unwrap()])?;
    assert!(
        out.status.success(),
        "audit mode must allow: {}",
        stderr(&out)
    );
    let e = events
        .next_timeout(Duration::from_secs(5))
        .expect("an audit event");
    assert_eq!(
        (e.verdict.as_str(), e.rule_id, e.vps_id),
        ("audited", RULE_ID, VPS_ID)
    );
    Ok(())
}

#[test]
fn file_open_read_rule_leaves_writes_alone() -> anyhow::Result<()> {
    if !lsm_available("file_open_read_rule_leaves_writes_alone") {
        return Ok(());
    }
    let Rig {
        vps,
        ksal: _ksal,
        scratch: _scratch,
        file: f,
    } = rig("ksal-file-rw", "", mode::ENFORCE, access::READ)?;
    let path = f.to_str().unwrap();
    assert_denied(&vps.run(&["cat", path])?, "read of a read-denied file");
    let out = vps.run(&["sh", "-c", &format!("echo appended >> {path}")])?;
    assert!(
        out.status.success(),
        "write-only open must pass: {}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&f)?, "appended\n");
    Ok(())
}

#[test]
fn file_open_honours_an_earlier_programs_denial() -> anyhow::Result<()> {
    if !lsm_available("file_open_honours_an_earlier_programs_denial") {
        return Ok(());
    }
    let vps = CgroupGuard::new("ksal-file-chain")?;
    let mut first = Ksal::load(vps.level, None)?;
    let scratch = Scratch::new()?;
    let denied = scratch.file("denied.txt", "secret\n")?;
    first.register_vps(vps.id, VPS_ID, mode::ENFORCE)?;
    first.deny_file(VPS_ID, &denied, access::ANY, RULE_ID)?;
    // A second KSAL attached after the first knows nothing of this VPS; it
    // runs later in the chain and must pass the earlier EPERM through.
    let _second = Ksal::load(vps.level, None)?;
    assert_denied(
        &vps.run(&["cat", denied.to_str().unwrap()])?,
        "chained programs",
    );
    Ok(())
}

#[test]
fn file_open_unregistered_cgroup_is_untouched() -> anyhow::Result<()> {
    if !lsm_available("file_open_unregistered_cgroup_is_untouched") {
        return Ok(());
    }
    let vps = CgroupGuard::new("ksal-file-vps")?;
    let other = CgroupGuard::new("ksal-file-other")?;
    let mut ksal = Ksal::load(vps.level, None)?;
    let scratch = Scratch::new()?;
    let denied = scratch.file("denied.txt", "secret\n")?;
    ksal.register_vps(vps.id, VPS_ID, mode::ENFORCE)?;
    ksal.deny_file(VPS_ID, &denied, access::ANY, RULE_ID)?;
    let out = other.run(&["cat", denied.to_str().unwrap()])?;
    assert!(
        out.status.success(),
        "a cgroup that is no VPS: {}",
        stderr(&out)
    );
    ksal.unregister_vps(vps.id)?;
    let out = vps.run(&["cat", denied.to_str().unwrap()])?;
    assert!(
        out.status.success(),
        "after unregistering: {}",
        stderr(&out)
    );
    Ok(())
}
