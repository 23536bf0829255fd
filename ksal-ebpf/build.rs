//! Rebuild the programs when bpf-linker changes (e.g. after `cargo xtask setup`
//! rebuilt it against another LLVM).
use which::which;

fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH; run `cargo xtask setup` to build it against LLVM 22",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
