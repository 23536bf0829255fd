//! Network guards on cgroup hooks: per-VPS traffic counters, egress
//! anti-spoofing, bind only to the VPS's own address, egress deny rules.
//! cgroup programs return 1 to allow and 0 to deny.
use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_skb_ancestor_cgroup_id},
    macros::{cgroup_skb, cgroup_sock_addr},
    maps::lpm_trie::Key,
    programs::{SkBuffContext, SockAddrContext},
};
use aya_log_ebpf::error;
use ksal_common::{
    EGRESS_ALLOW, EGRESS_FIXED_BITS, EgressKey, Hook, NetCounters, VpsNet, guard_rule,
};

use crate::{
    events,
    maps::{CONFIG, EGRESS_RULES, NET_COUNTERS, VPS_NET},
    scope,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
/// skb->protocol holds the big-endian ethertype in its low 16 bits.
const ETH_P_IP_SKB: u32 = 0x0800u16.to_be() as u32;
/// 127.0.0.0/8 in network byte order, as read on little-endian.
const LOOPBACK_NET_LE: u32 = 0x7f;

fn level() -> Option<i32> {
    let c = CONFIG.get(0)?;
    (c.ready != 0).then_some(c.vps_cgroup_level as i32)
}

fn vps_of_skb(ctx: &SkBuffContext) -> Option<&'static VpsNet> {
    // SAFETY: the helper takes the program's own skb pointer.
    let cg = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb.cast(), level()?) };
    // SAFETY: plain-integer values, replaced whole by the host.
    unsafe { VPS_NET.get(cg) }
}

fn vps_of_task() -> Option<&'static VpsNet> {
    // SAFETY: plain helper call.
    let cg = unsafe { bpf_get_current_ancestor_cgroup_id(level()?) };
    // SAFETY: as above.
    unsafe { VPS_NET.get(cg) }
}

/// Update VPS `vps_id`'s traffic counters on this CPU.
pub fn count<C: EbpfContext>(ctx: &C, vps_id: u32, f: impl FnOnce(&mut NetCounters)) {
    if let Some(c) = NET_COUNTERS.get_ptr_mut(vps_id) {
        // SAFETY: a per-CPU slot, ours for the program's run.
        f(unsafe { &mut *c });
    } else {
        let mut fresh = NetCounters::default();
        f(&mut fresh);
        if NET_COUNTERS.insert(vps_id, fresh, 0).is_err() {
            // Only when the table (one slot per VPS id) is full.
            error!(ctx, "KSAL_NET_COUNTERS full: VPS {} not counted", vps_id);
        }
    }
}

#[cgroup_skb]
pub fn ksal_skb_egress(ctx: SkBuffContext) -> i32 {
    let Some(vps) = vps_of_skb(&ctx) else {
        return ALLOW;
    };
    let len = u64::from(ctx.len());
    if ctx.skb.protocol() == ETH_P_IP_SKB && vps.ipv4_be != 0 {
        // cgroup_skb data starts at the IP header; saddr is at byte 12.
        if let Ok(saddr) = ctx.load::<u32>(12)
            && saddr != vps.ipv4_be
            && saddr & 0xff != LOOPBACK_NET_LE
        {
            count(&ctx, vps.vps_id, |c| c.spoofed_dropped += 1);
            return DENY;
        }
    }
    count(&ctx, vps.vps_id, |c| {
        c.tx_bytes += len;
        c.tx_packets += 1;
    });
    ALLOW
}

#[cgroup_skb]
pub fn ksal_skb_ingress(ctx: SkBuffContext) -> i32 {
    if let Some(vps) = vps_of_skb(&ctx) {
        let len = u64::from(ctx.len());
        count(&ctx, vps.vps_id, |c| {
            c.rx_bytes += len;
            c.rx_packets += 1;
        });
    }
    ALLOW
}

/// A VPS binds its own address or loopback; the wildcard becomes its own.
#[cgroup_sock_addr(bind4)]
pub fn ksal_bind4(ctx: SockAddrContext) -> i32 {
    let Some(vps) = vps_of_task() else {
        return ALLOW;
    };
    // SAFETY: the context pointer is valid for the program's run.
    let addr = unsafe { &mut *ctx.sock_addr };
    let ip = addr.user_ip4;
    if ip == vps.ipv4_be || ip & 0xff == LOOPBACK_NET_LE {
        return ALLOW;
    }
    if ip == 0 && vps.ipv4_be != 0 {
        addr.user_ip4 = vps.ipv4_be;
        return ALLOW;
    }
    DENY
}

/// `::ffff:0:0/96` words 0..3 as read on little-endian.
const V4_MAPPED_WORD2: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The IPv4 address inside a v4-mapped IPv6 address, if it is one.
fn v4_mapped(ip6: &[u32; 4]) -> Option<u32> {
    (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == V4_MAPPED_WORD2).then_some(ip6[3])
}

/// The most specific egress entry of VPS `vps_id` for `port` (0: its
/// entries for every port) whose network holds `ip`.
#[inline(always)]
fn egress_rule(vps_id: u32, port: u32, ip: u32) -> Option<u32> {
    let key = Key::new(
        EGRESS_FIXED_BITS + 32,
        EgressKey {
            vps_id_be: vps_id.to_be(),
            port_be: port.to_be(),
            ipv4_be: ip,
        },
    );
    EGRESS_RULES.get(key).copied()
}

/// The rule denying VPS `vps_id` a packet to `ip` on `port` (0: a protocol
/// without ports), if any: the most specific entry for its port, else for
/// every port. An `EGRESS_ALLOW` entry lets it through; the host's own
/// addresses (`DENY_HOST`) are denied only to packets `opening` a flow,
/// so replies to connections the host opened pass.
#[inline(always)]
pub fn egress_denied_by(vps_id: u32, port: u32, ip: u32, opening: bool) -> Option<u32> {
    let specific = if port == 0 {
        None
    } else {
        egress_rule(vps_id, port, ip)
    };
    match specific.or_else(|| egress_rule(vps_id, 0, ip))? {
        EGRESS_ALLOW => None,
        guard_rule::DENY_HOST if !opening => None,
        rule_id => Some(rule_id),
    }
}

/// Apply the VPS's egress deny rules to a connect or send to `ip`: denied
/// when a rule for its port or for every port covers it. The event's
/// object is the address (network order) and port.
fn egress_allowed(ctx: &SockAddrContext, ip: u32, hook: Hook) -> i32 {
    let Some(scope) = scope::current() else {
        return ALLOW;
    };
    // SAFETY: the context pointer is valid for the program's run.
    let port = u16::from_be(unsafe { (*ctx.sock_addr).user_port } as u16);
    let Some(rule_id) = egress_denied_by(scope.vps.vps_id, u32::from(port), ip, true) else {
        return ALLOW;
    };
    let object = (u64::from(ip) << 16) | u64::from(port);
    if events::rule_out(ctx, &scope, hook, rule_id, object) {
        DENY
    } else {
        ALLOW
    }
}

fn ip4(ctx: &SockAddrContext) -> u32 {
    // SAFETY: the context pointer is valid for the program's run.
    unsafe { (*ctx.sock_addr).user_ip4 }
}

fn ip6(ctx: &SockAddrContext) -> [u32; 4] {
    // SAFETY: as above; user_ip6 is read one aligned word at a time.
    unsafe {
        let a = &*ctx.sock_addr;
        [a.user_ip6[0], a.user_ip6[1], a.user_ip6[2], a.user_ip6[3]]
    }
}

#[cgroup_sock_addr(connect4)]
pub fn ksal_connect4(ctx: SockAddrContext) -> i32 {
    egress_allowed(&ctx, ip4(&ctx), Hook::Connect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn ksal_sendmsg4(ctx: SockAddrContext) -> i32 {
    egress_allowed(&ctx, ip4(&ctx), Hook::Sendmsg)
}

/// IPv6 sockets reach IPv4 through v4-mapped addresses: the same rules
/// apply to them. (VPSs have no IPv6 address of their own yet.)
#[cgroup_sock_addr(connect6)]
pub fn ksal_connect6(ctx: SockAddrContext) -> i32 {
    v4_mapped(&ip6(&ctx)).map_or(ALLOW, |ip| egress_allowed(&ctx, ip, Hook::Connect))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn ksal_sendmsg6(ctx: SockAddrContext) -> i32 {
    v4_mapped(&ip6(&ctx)).map_or(ALLOW, |ip| egress_allowed(&ctx, ip, Hook::Sendmsg))
}

/// IPv6 binds: the wildcard, loopback, the VPS's own IPv6 address, or its
/// own IPv4 address mapped.
#[cgroup_sock_addr(bind6)]
pub fn ksal_bind6(ctx: SockAddrContext) -> i32 {
    let Some(vps) = vps_of_task() else {
        return ALLOW;
    };
    let a = ip6(&ctx);
    let wildcard = a == [0, 0, 0, 0];
    let loopback = a == [0, 0, 0, 1u32.to_be()];
    let own = v4_mapped(&a)
        .is_some_and(|ip| ip == vps.ipv4_be || ip == 0 || ip & 0xff == LOOPBACK_NET_LE);
    let own6 = a == vps.ipv6_be && a != [0; 4];
    if wildcard || loopback || own || own6 {
        ALLOW
    } else {
        DENY
    }
}
