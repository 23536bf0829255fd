//! The Kernel Service Abstraction Layer: small eBPF programs, one module per
//! hook family, all scoped to VPS tasks through their cgroup v2 ancestor.
#![no_std]
#![no_main]

mod capabilities;
mod devices;
mod events;
mod files;
mod guards;
mod inodes;
mod kernel;
mod maps;
mod mounts;
mod network;
mod probe;
mod scope;
mod sockets;
mod veth;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path,
    // so this is never executed in a loaded program.
    unsafe { core::hint::unreachable_unchecked() }
}

// LSM programs must be GPL-compatible to be loaded.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
