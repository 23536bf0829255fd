use super::*;

#[test]
fn busybox_template_is_built_once_and_listed() {
    if !Path::new(HOST_BUSYBOX).exists() {
        eprintln!("skipped: no {HOST_BUSYBOX}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = Templates::new(tmp.path());
    let busybox = TemplateName::new("busybox").unwrap();
    let p = t.resolve(&busybox).unwrap();
    assert!(p.join("bin/sh").is_symlink());
    assert!(p.join("sbin/init").is_symlink());
    assert!(
        fs::read_to_string(p.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0")
    );
    assert_eq!(t.resolve(&busybox).unwrap(), p);
    assert!(t.list().iter().any(|i| i.name == "busybox" && i.builtin));
}

#[test]
fn unknown_and_bad_imports_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Templates::new(tmp.path());
    let nope = TemplateName::new("nope").unwrap();
    assert!(matches!(t.resolve(&nope), Err(TemplateError::Unknown(_))));
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("readme"), "not a rootfs").unwrap();
    let err = t.import("empty", src.path()).unwrap_err().to_string();
    assert!(err.contains("not a root filesystem"), "{err}");
    assert!(!tmp.path().join("templates/empty").exists());
    assert!(matches!(
        t.import("Bad", src.path()),
        Err(TemplateError::BadName(_))
    ));
    assert_eq!(
        fs::read_dir(tmp.path().join("templates")).unwrap().count(),
        0
    );
}

#[test]
fn a_failed_create_or_a_crash_leaves_no_template() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Templates::new(tmp.path());
    let bad = DistroBuild::debian(Some("no-such-release"), &[], None);
    let err = t.create("deb", &bad, &mut |_| {}).unwrap_err();
    assert_eq!(err.kind(), crate::model::ErrorKind::Invalid, "{err}");
    assert_eq!(fs::read_dir(t.dir()).unwrap().count(), 0);
    // A build a crash interrupted is swept when the daemon starts.
    fs::create_dir_all(t.dir().join(".new-deb-1-0/usr")).unwrap();
    t.sweep_staging();
    assert_eq!(fs::read_dir(t.dir()).unwrap().count(), 0);
    assert!(t.list().iter().all(|i| i.name == BUILTIN_BUSYBOX));
}

#[test]
fn an_import_is_listed_with_what_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Templates::new(tmp.path());
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("etc")).unwrap();
    fs::create_dir_all(src.path().join("sbin")).unwrap();
    fs::write(
        src.path().join("etc/os-release"),
        "ID=alpine\nVERSION_ID=3.20.1\n",
    )
    .unwrap();
    fs::write(src.path().join("sbin/init"), "ELF").unwrap();
    let info = t.import("alp", src.path()).unwrap();
    let meta = info.meta.as_ref().expect("metadata");
    assert_eq!(
        (meta.distribution.as_str(), meta.release.as_str(), meta.init),
        ("alpine", "3.20.1", meta::Init::Sysvinit)
    );
    assert_eq!(t.list().iter().find(|i| i.name == "alp"), Some(&info));
}

#[test]
fn imports_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Templates::new(tmp.path());
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("bin")).unwrap();
    fs::write(src.path().join("bin/sh"), "#!fake").unwrap();
    let p = t.import("mini", src.path()).unwrap().path;
    assert!(p.join("bin/sh").exists());
    assert!(matches!(
        t.import("mini", src.path()),
        Err(TemplateError::Exists(_))
    ));
}
