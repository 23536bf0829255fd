//! The read-modify-write of /etc/shadow, on temp dirs laid out as a
//! template and a VPS's upper layer.
use std::{fs, os::unix::fs::symlink};

use super::*;

#[test]
fn shadow_lines_are_replaced_or_added() {
    let s = "root:*:1:0:99999:7:::\nbob:!:1:0:99999:7:::\n";
    let out = set_shadow_hash(s, "root", "$6$x$y");
    let root = out.lines().next().unwrap();
    assert!(root.starts_with("root:$6$x$y:"), "{root}");
    assert!(root.ends_with(":0:99999:7:::"), "{root}");
    assert!(out.contains("bob:!:1:"));
    let added = set_shadow_hash("", "alice", "$6$a$b");
    assert!(added.starts_with("alice:$6$a$b:"));
}

#[test]
fn sha512_hashes_verify() {
    let h = sha_crypt::sha512_simple("s3cret", &sha_crypt::Sha512Params::default()).unwrap();
    assert!(h.starts_with("$6$"));
    assert!(sha_crypt::sha512_check("s3cret", &h).is_ok());
    assert!(sha_crypt::sha512_check("wrong", &h).is_err());
}

const DEFAULT: Owner = Owner {
    uid: 7,
    gid: 7,
    mode: 0o600,
};

#[test]
fn only_a_user_in_passwd_gets_a_hash_and_the_old_owner_and_mode_stay() {
    let passwd = b"root:x:0:0::/root:/bin/sh\n";
    assert!(matches!(
        updated_shadow(None, None, DEFAULT, "root", "h"),
        Err(ShadowError::NoPasswd)
    ));
    assert!(matches!(
        updated_shadow(Some(passwd), None, DEFAULT, "bob", "h"),
        Err(ShadowError::NoUser(u)) if u == "bob"
    ));
    let debian = Owner {
        uid: 0,
        gid: 42,
        mode: 0o640,
    };
    let old = (b"root:*:1:0:99999:7:::\n".to_vec(), debian);
    let (text, owner) = updated_shadow(Some(passwd), Some(old), DEFAULT, "root", "h").unwrap();
    assert!(text.starts_with("root:h:"), "{text}");
    assert_eq!(owner, debian);
    let (_, owner) = updated_shadow(Some(passwd), None, DEFAULT, "root", "h").unwrap();
    assert_eq!(owner, DEFAULT);
    let binary = (vec![0xff, 0xfe], debian);
    assert!(matches!(
        updated_shadow(Some(passwd), Some(binary), DEFAULT, "root", "h"),
        Err(ShadowError::NotText)
    ));
}

/// A template and an upper layer side by side.
fn layers() -> (tempfile::TempDir, SafeDir, SafeDir) {
    let tmp = tempfile::tempdir().unwrap();
    for d in ["template/etc", "upper/etc"] {
        fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    fs::write(
        tmp.path().join("template/etc/passwd"),
        "root:x:0:0::/:/bin/sh\n",
    )
    .unwrap();
    fs::write(tmp.path().join("template/etc/shadow"), "root:*:1:::::\n").unwrap();
    let template = SafeDir::open(&tmp.path().join("template"), None).unwrap();
    let upper = SafeDir::open(&tmp.path().join("upper"), None).unwrap();
    (tmp, template, upper)
}

const IDS: IdMap = IdMap {
    base: 2_000_000,
    count: 65_536,
};

#[test]
fn the_upper_layer_wins_and_the_template_is_read_with_its_owner_mapped() {
    let (tmp, template, upper) = layers();
    let uid = nix::unistd::getuid().as_raw();
    let (bytes, owner) = read_layered(&upper, &template, "etc/shadow", IDS)
        .unwrap()
        .unwrap();
    assert_eq!(bytes, b"root:*:1:::::\n");
    if uid < IDS.count {
        assert_eq!(
            owner.uid,
            IDS.base + uid,
            "the template's owner, as the VPS's"
        );
    }
    fs::write(tmp.path().join("upper/etc/shadow"), "root:!:2:::::\n").unwrap();
    let (bytes, owner) = read_layered(&upper, &template, "etc/shadow", IDS)
        .unwrap()
        .unwrap();
    assert_eq!(bytes, b"root:!:2:::::\n");
    assert_eq!(owner.uid, uid, "the upper layer's owner as it is");
    assert!(
        read_layered(&upper, &template, "etc/none", IDS)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_planted_symlink_in_the_upper_layer_is_refused_and_the_host_file_kept() {
    let (tmp, template, upper) = layers();
    let host = tmp.path().join("host-secret");
    fs::write(&host, "secret\n").unwrap();
    symlink(&host, tmp.path().join("upper/etc/shadow")).unwrap();
    let err = read_layered(&upper, &template, "etc/shadow", IDS).unwrap_err();
    assert!(matches!(err, SafeError::Symlink { .. }), "{err}");
    assert_eq!(fs::read_to_string(&host).unwrap(), "secret\n");
}

#[test]
fn a_password_change_keeps_the_shadow_files_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let (tmp, _, _) = layers();
    let root = tmp.path().join("template");
    let shadow = root.join("etc/shadow");
    fs::set_permissions(&shadow, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::metadata(&shadow).unwrap();
    let view = View::Inside(SafeDir::open(&root, None).unwrap());
    view.apply(&Credential::Password {
        user: "root".into(),
        hash: "$6$s$h".into(),
    })
    .unwrap();
    let after = fs::metadata(&shadow).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert!(
        fs::read_to_string(&shadow)
            .unwrap()
            .starts_with("root:$6$s$h:")
    );
}

#[test]
fn a_user_the_vps_lacks_is_refused_by_name_and_nothing_written() {
    let (tmp, template, upper) = layers();
    let view = View::Layers {
        upper,
        template,
        ids: IDS,
    };
    let err = view
        .apply(&Credential::Password {
            user: "mallory".into(),
            hash: "h".into(),
        })
        .unwrap_err();
    assert!(matches!(&err, Failed::Shadow(ShadowError::NoUser(u)) if u == "mallory"));
    assert!(err.to_string().contains("mallory"), "{err}");
    assert!(!tmp.path().join("upper/etc/shadow").exists());
}

#[test]
fn keys_never_go_through_a_symlinked_ssh_directory() {
    let (tmp, template, upper) = layers();
    let outside = tmp.path().join("host-ssh");
    fs::create_dir(&outside).unwrap();
    fs::create_dir(tmp.path().join("upper/root")).unwrap();
    symlink(&outside, tmp.path().join("upper/root/.ssh")).unwrap();
    let view = View::Layers {
        upper,
        template,
        ids: IDS,
    };
    let err = view
        .apply(&Credential::AuthorizedKeys {
            keys: vec!["ssh-ed25519 AAAA k".into()],
        })
        .unwrap_err();
    assert!(
        matches!(err, Failed::Files(SafeError::Symlink { .. })),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing outside"
    );
}
