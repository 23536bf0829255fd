//! Build the static probe (`probe/vzprobe.c`) that tests run inside
//! busybox VPSs, which have no C library.
use std::{env, path::PathBuf};

fn main() {
    let src = "probe/vzprobe.c";
    println!("cargo::rerun-if-changed={src}");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("vzprobe");
    let mut cc = cc::Build::new().get_compiler().to_command();
    let status = cc
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run the C compiler");
    assert!(
        status.success(),
        "building {src} failed: a static C library is needed (`cargo xtask setup` installs libc6-dev)"
    );
}
