//! The one syscall filter of everything that runs in a VPS (its init and
//! what `vzhost exec` starts there). `mount_setattr(2)` and `fspick(2)`
//! change an existing mount or superblock (clearing `MOUNT_ATTR_RDONLY`,
//! a reconfigure with `rw`) without passing any LSM hook on 6.1 or 6.12,
//! so the KSAL's mount rules cannot see them. They fail with ENOSYS, as on
//! a kernel without them: libmount and systemd then fall back to mount(2),
//! whose every remount and bind the `sb_mount` hook holds.
//!
//! Hand-written classic BPF, since the filter crates (seccompiler) kill a
//! process of a foreign architecture, and a VPS may run 32-bit binaries:
//! here every architecture the kernel can enter by is matched on its own
//! syscall numbers, and anything else is allowed.
use std::io;

/// The calls refused; their numbers are the same on every architecture
/// of the unified table (x86_64, its x32 ABI, i386, aarch64).
pub const REFUSED: [u32; 2] = [
    libc::SYS_mount_setattr as u32, // 442
    libc::SYS_fspick as u32,        // 433
];

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Set in the number of a syscall made through the x32 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The architectures a process on this host can make syscalls as.
#[cfg(target_arch = "x86_64")]
const ARCHES: &[u32] = &[AUDIT_ARCH_X86_64, 0x4000_0003 /* AUDIT_ARCH_I386 */];
#[cfg(target_arch = "aarch64")]
const ARCHES: &[u32] = &[0xc000_00b7 /* AUDIT_ARCH_AARCH64 */];

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LOAD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// The filter: per architecture, load the number (x32's bit cleared) and
/// refuse the calls of [`REFUSED`]; allow everything else.
pub fn mount_api_filter() -> Vec<libc::sock_filter> {
    let mut prog = Vec::new();
    for &arch in ARCHES {
        // This architecture's block: number load, optional mask, one
        // test per refused call, and the two returns.
        let masked = arch == AUDIT_ARCH_X86_64;
        let block = 1 + usize::from(masked) + REFUSED.len() + 2;
        prog.push(stmt(LOAD, ARCH));
        prog.push(jump(JEQ, arch, 0, block as u8));
        prog.push(stmt(LOAD, NR));
        if masked {
            prog.push(stmt(
                libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
                !X32_SYSCALL_BIT,
            ));
        }
        for (i, &nr) in REFUSED.iter().enumerate() {
            // On a match, skip the remaining tests and the allow.
            prog.push(jump(JEQ, nr, (REFUSED.len() - i) as u8, 0));
        }
        prog.push(stmt(RET, ALLOW));
        prog.push(stmt(RET, ENOSYS));
    }
    prog.push(stmt(RET, ALLOW));
    prog
}

/// Install [`mount_api_filter`] on the calling thread, for good: it is
/// inherited by every child and kept across exec. Needs CAP_SYS_ADMIN in
/// the caller's user namespace (a VPS's root has it in the VPS's), so
/// setuid programs in the VPS keep working (no `no_new_privs`).
pub fn refuse_unhooked_mount_calls() -> io::Result<()> {
    let filter = mount_api_filter();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    super::dispatch(
        || super::Call::SeccompFilter {
            instructions: filter.len(),
        },
        || {
            // SAFETY: prog points at `filter`, alive for the call; the
            // kernel copies the program.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &raw const prog,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r)
            }
        },
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel would answer: a small interpreter of the
    /// instructions the filter uses.
    fn verdict(prog: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            match code {
                LOAD => acc = if i.k == ARCH { arch } else { nr },
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= i.k,
                JEQ => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                RET => return i.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    fn the_unhooked_mount_calls_fail_as_unknown_on_every_abi() {
        let prog = mount_api_filter();
        for &arch in ARCHES {
            for nr in REFUSED {
                assert_eq!(verdict(&prog, arch, nr), ENOSYS, "{arch:#x} {nr}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            verdict(&prog, AUDIT_ARCH_X86_64, 442 | X32_SYSCALL_BIT),
            ENOSYS,
            "the x32 ABI"
        );
    }

    #[test]
    fn everything_else_passes() {
        let prog = mount_api_filter();
        for &arch in ARCHES {
            // mount(2) of either ABI, fsopen, fsconfig, move_mount, open_tree.
            for nr in [165, 21, 430, 431, 429, 428, 0, 59, 441, 443] {
                assert_eq!(verdict(&prog, arch, nr), ALLOW, "{arch:#x} {nr}");
            }
        }
        assert_eq!(verdict(&prog, 0xdead_beef, 442), ALLOW, "a foreign arch");
    }

    #[test]
    fn installing_goes_through_the_seam() {
        let fake = crate::sys::fake::Fake::install(|_| Some(Ok(0)));
        refuse_unhooked_mount_calls().unwrap();
        assert_eq!(
            fake.calls(),
            vec![super::super::Call::SeccompFilter {
                instructions: mount_api_filter().len()
            }]
        );
    }
}
