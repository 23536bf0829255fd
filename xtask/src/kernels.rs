//! The Debian cloud kernels the VM boots: resolved through their meta
//! packages (the ABI number moves with security updates), downloaded once
//! with `apt-get download`, and unpacked into a cache.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::shell;

/// The kernel series of the test matrix and their meta packages.
pub const SERIES: &[(&str, &str)] = &[
    ("6.1", "linux-image-cloud-amd64"),
    ("6.12", "linux-image-6.12-cloud-amd64"),
];

/// Modules every VM loads, dependencies first.
pub const VM_MODULES: &[&str] = &[
    "overlay",
    "veth",
    "bridge",
    "loop",
    "xfs",
    "virtio_pci",
    "virtio_blk",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
    // The tc program on each VPS's veth (clsact qdisc, cls_bpf filter),
    // and DNAT inside a VPS, which its test attacks with.
    "sch_ingress",
    "cls_bpf",
    "nft_nat",
];

pub fn cache_dir() -> PathBuf {
    std::env::var_os("VZHOST_KERNEL_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/vzhost/kernels"), PathBuf::from)
}

pub struct Kernel {
    pub package: String,
    pub vmlinuz: PathBuf,
    modules_dir: PathBuf,
}

/// The concrete image package behind a series' meta package.
pub fn resolve(series: &str) -> anyhow::Result<String> {
    let Some((_, meta)) = SERIES.iter().find(|(s, _)| *s == series) else {
        let known: Vec<_> = SERIES.iter().map(|(s, _)| *s).collect();
        bail!(
            "unknown kernel series {series}; choose one of {}",
            known.join(", ")
        );
    };
    let out =
        shell::output(Command::new("apt-cache").args(["depends", meta])).with_context(|| {
            format!("cannot resolve {meta}; run `apt-get update` (or `cargo xtask setup`)")
        })?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
        .map(str::to_owned)
        .with_context(|| format!("{meta} depends on no linux-image package; run `apt-get update`"))
}

/// The unpacked kernel for `series`, downloading it first if needed.
pub fn ensure(series: &str) -> anyhow::Result<Kernel> {
    let package = resolve(series)?;
    let root = cache_dir().join(&package);
    if !root.join(".complete").exists() {
        download(&package, &root)?;
    }
    Kernel::open(package, &root)
}

/// Whether the kernel for `series` is already cached.
pub fn is_cached(series: &str) -> bool {
    resolve(series).is_ok_and(|p| cache_dir().join(p).join(".complete").exists())
}

fn download(package: &str, root: &Path) -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!(
            "kernel {package} is not cached in {}; run `cargo xtask setup` as root",
            root.display()
        );
    }
    eprintln!("xtask: downloading {package} ...");
    let staging = cache_dir().join(format!(".download-{package}"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("mkdir {}", staging.display()))?;
    shell::run(
        Command::new("apt-get")
            .args(["-o", "APT::Sandbox::User=root", "download", package])
            .current_dir(&staging),
    )?;
    let deb = std::fs::read_dir(&staging)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let _ = std::fs::remove_dir_all(root);
    shell::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    std::fs::remove_dir_all(&staging)?;
    std::fs::write(root.join(".complete"), package)?;
    Ok(())
}

impl Kernel {
    fn open(package: String, root: &Path) -> anyhow::Result<Self> {
        let find_one = |dir: &Path, prefix: &str| -> anyhow::Result<PathBuf> {
            std::fs::read_dir(dir)
                .with_context(|| format!("read {}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .with_context(|| format!("no {prefix}* in {}", dir.display()))
        };
        let vmlinuz = find_one(&root.join("boot"), "vmlinuz-")?;
        let modules_dir = find_one(&root.join("lib/modules"), "")?;
        Ok(Self {
            package,
            vmlinuz,
            modules_dir,
        })
    }

    /// The named modules and their dependencies, decompressed, in an
    /// order `insmod` can load them.
    pub fn modules(&self, names: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut index = HashMap::new();
        index_modules(&self.modules_dir.join("kernel"), &mut index)?;
        let mut loaded = Vec::new();
        for name in names {
            self.add_module(name, &index, &mut loaded)?;
        }
        Ok(loaded)
    }

    fn add_module(
        &self,
        name: &str,
        index: &HashMap<String, PathBuf>,
        loaded: &mut Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let name = name.replace('-', "_");
        if loaded.iter().any(|(n, _)| *n == name) {
            return Ok(());
        }
        let Some(path) = index.get(&name) else {
            if self.is_builtin(&name) {
                return Ok(());
            }
            bail!("{} has no module {name}", self.package);
        };
        let bytes = read_module(path)?;
        for dep in module_depends(&bytes) {
            self.add_module(&dep, index, loaded)?;
        }
        loaded.push((name, bytes));
        Ok(())
    }
}

impl Kernel {
    /// Whether `name` is built into the kernel (listed in modules.builtin).
    fn is_builtin(&self, name: &str) -> bool {
        std::fs::read_to_string(self.modules_dir.join("modules.builtin")).is_ok_and(|list| {
            list.lines().any(|l| {
                l.rsplit('/')
                    .next()
                    .and_then(|f| f.strip_suffix(".ko"))
                    .is_some_and(|m| m.replace('-', "_") == name)
            })
        })
    }
}

fn index_modules(dir: &Path, index: &mut HashMap<String, PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(file) = path.file_name().map(|n| n.to_string_lossy().into_owned())
            && let Some(stem) = file
                .strip_suffix(".ko")
                .or_else(|| file.strip_suffix(".ko.xz"))
        {
            index.insert(stem.replace('-', "_"), path);
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("cannot run xz (install xz-utils)")?;
        if !out.status.success() {
            bail!("xz -dc {} failed", path.display());
        }
        Ok(out.stdout)
    } else {
        std::fs::read(path).with_context(|| format!("read {}", path.display()))
    }
}

/// The `depends=` list of a module's .modinfo section.
fn module_depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &module[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modinfo_depends() {
        let m = b"\x7fELF...\0license=GPL\0depends=stp,llc\0intree=Y\0";
        assert_eq!(module_depends(m), ["stp", "llc"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }
}
