//! What can go wrong in the KSAL, each error naming the program, hook, map
//! or cgroup involved and what to do about it.
use aya::{maps::MapError, programs::ProgramError};

use super::{btf, cgroup_attach::AttachError};

#[derive(Debug, thiserror::Error)]
pub enum KsalError {
    #[error("loading the KSAL eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("the KSAL object has no program {0} (vzhost and ksal-ebpf are out of step; rebuild)")]
    NoProgram(&'static str),
    #[error("the KSAL object has no map {0} (vzhost and ksal-ebpf are out of step; rebuild)")]
    NoMap(&'static str),
    #[error("{}", describe_program_error(program, hook, source))]
    Program {
        program: &'static str,
        hook: &'static str,
        source: ProgramError,
    },
    #[error(
        "this kernel's LSM hook {hook} takes {nargs} arguments, a signature this vzhost has no \
         program for; update vzhost"
    )]
    HookSignature { hook: &'static str, nargs: u32 },
    #[error("putting the KSAL guards on cgroup {cgroup}: {source}")]
    Attach { cgroup: String, source: AttachError },
    #[error("KSAL map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error(
        "this kernel would not load the tc program that checks what VPSs send on their veth \
         ({0}); it needs sched_cls BPF programs (CONFIG_NET_CLS_BPF, CONFIG_NET_SCH_INGRESS)"
    )]
    NoVethProgram(String),
    #[error("putting the tc program on veth {veth}: {source}")]
    Veth { veth: String, source: ProgramError },
    #[error("cannot resolve policy path {path}: {source}")]
    Path {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, KsalError>;

fn describe_program_error(program: &str, hook: &str, err: &ProgramError) -> String {
    let errno = match err {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EPERM) => format!(
            "the kernel refused to load BPF LSM program {program} for hook {hook} (EPERM): \
             this host does not permit loading BPF LSM programs (the kernel or a policy \
             around it refuses BPF_PROG_LOAD for LSM); LSM enforcement needs a host that \
             allows it, such as the test VM (`cargo xtask vm run`)"
        ),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => format!(
            "the kernel cannot run BPF LSM program {program} for hook {hook}: BPF LSM is not \
             active (boot with `lsm=...,bpf` and CONFIG_BPF_LSM=y): {err}"
        ),
        _ => format!("BPF program {program} for hook {hook} failed: {err}"),
    }
}

pub(super) fn map_err(map: &'static str) -> impl FnOnce(MapError) -> KsalError {
    move |source| KsalError::Map { map, source }
}

pub(super) fn program_error(
    program: &'static str,
    hook: &'static str,
) -> impl Fn(ProgramError) -> KsalError + Copy {
    move |source| KsalError::Program {
        program,
        hook,
        source,
    }
}
