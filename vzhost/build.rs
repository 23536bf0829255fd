//! Build the in-kernel KSAL (`ksal-ebpf`) for bpfel and leave the object in
//! OUT_DIR, where `ksal::Ksal` embeds it.
use std::path::Path;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest_dir)
        .parent()
        .context("vzhost has no parent directory")?;
    let ebpf_dir = root.join("ksal-ebpf");
    let common_dir = root.join("ksal-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to ksal-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ksal-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building ksal-ebpf failed; run `cargo xtask setup` (nightly rust-src, bpf-linker)")
}
