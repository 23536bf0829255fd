//! A do-nothing cgroup program: `vzhost doctor` loads and attaches it to
//! prove that cgroup BPF attachment works on this host.
use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

#[cgroup_skb]
pub fn ksal_cgroup_probe(_ctx: SkBuffContext) -> i32 {
    1
}
