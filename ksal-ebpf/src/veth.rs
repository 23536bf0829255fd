//! The backstop on the host side of each VPS's veth (tc clsact ingress:
//! the frames the VPS sends). The cgroup hooks see sockets; this sees
//! every frame whatever made it: any socket family, packets the VPS
//! forwards or rewrote with its own NAT, replies its kernel generates.
//! A frame passes only with the VPS's own MAC and, for ARP, IPv4 and
//! IPv6, its own address (IPv6 also its link-local one, and the
//! unspecified one for neighbour discovery and MLD), and IPv4 only to
//! destinations its egress rules allow.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use ksal_common::{EGRESS_PORT_PING, Hook, VethEntry, guard_rule, mode};

use crate::{
    events::{self, Subject},
    maps::{VETH, VPS},
    network::{count, egress_denied_by},
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMPV6: u8 = 58;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const ICMP_ECHO: u8 = 8;

enum Verdict {
    Pass,
    /// Not the VPS's own source (or a protocol it may not send): always
    /// dropped, counted, reported; the object says what was wrong.
    Spoofed(u64),
    /// IPv4 to a destination an egress rule denies (rule id, object as
    /// the connect hook reports it: address << 16 | port).
    Denied(u32, u64),
}

#[classifier]
pub fn ksal_veth_egress(ctx: TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain-integer values, replaced whole by the host.
    let Some(veth) = (unsafe { VETH.get(ifindex) }) else {
        // Attached only to VPS veths, after their entry: a veth the host
        // forgot carries nothing.
        return TC_ACT_SHOT;
    };
    // SAFETY: as above.
    let policy_mode = unsafe { VPS.get(veth.cgroup_id) }.map_or(mode::ENFORCE, |v| v.mode);
    let mut subject = Subject {
        vps_id: veth.vps_id,
        cgroup_id: veth.cgroup_id,
        mode: policy_mode,
        pid_tgid: 0,
        comm: [0; ksal_common::COMM_LEN],
    };
    match verdict(&ctx, veth) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Spoofed(object) => {
            count(&ctx, veth.vps_id, |c| c.spoofed_dropped += 1);
            subject.mode = mode::ENFORCE;
            events::ruled_out(
                &ctx,
                &subject,
                Hook::VethEgress,
                guard_rule::SPOOFED,
                object,
            );
            TC_ACT_SHOT
        }
        Verdict::Denied(rule_id, object) => {
            if events::ruled_out(&ctx, &subject, Hook::VethEgress, rule_id, object) {
                TC_ACT_SHOT
            } else {
                TC_ACT_OK
            }
        }
    }
}

fn verdict(ctx: &TcContext, veth: &VethEntry) -> Verdict {
    // SAFETY: as above.
    let tagged = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    let Ok(src) = ctx.load::<[u8; 6]>(6) else {
        return Verdict::Spoofed(0);
    };
    if tagged || src != veth.mac {
        return Verdict::Spoofed(mac_object(&src));
    }
    let Ok(proto) = ctx.load::<u16>(12) else {
        return Verdict::Spoofed(0);
    };
    match u16::from_be(proto) {
        ETH_P_IP => ipv4(ctx, veth),
        ETH_P_ARP => arp(ctx, veth),
        ETH_P_IPV6 => ipv6(ctx, veth),
        other => Verdict::Spoofed(u64::from(other)),
    }
}

fn mac_object(mac: &[u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(mac);
    u64::from_be_bytes(b)
}

/// ARP for IPv4 over Ethernet whose sender is the VPS (or an address
/// probe, sender 0.0.0.0, which no neighbour table learns from).
fn arp(ctx: &TcContext, veth: &VethEntry) -> Verdict {
    let at = ETH_HLEN;
    let (Ok(htype), Ok(ptype), Ok(hlen), Ok(plen)) = (
        ctx.load::<u16>(at),
        ctx.load::<u16>(at + 2),
        ctx.load::<u8>(at + 4),
        ctx.load::<u8>(at + 5),
    ) else {
        return Verdict::Spoofed(u64::from(ETH_P_ARP));
    };
    if u16::from_be(htype) != 1 || u16::from_be(ptype) != ETH_P_IP || hlen != 6 || plen != 4 {
        return Verdict::Spoofed(u64::from(ETH_P_ARP));
    }
    let (Ok(sha), Ok(spa)) = (ctx.load::<[u8; 6]>(at + 8), ctx.load::<u32>(at + 14)) else {
        return Verdict::Spoofed(u64::from(ETH_P_ARP));
    };
    if sha != veth.mac {
        return Verdict::Spoofed(mac_object(&sha));
    }
    if spa != veth.ipv4_be && spa != 0 {
        return Verdict::Spoofed(u64::from(spa) << 16);
    }
    Verdict::Pass
}

/// IPv6 from the VPS's own address, its link-local one (fe80::/64 with
/// the EUI-64 of its MAC), or (neighbour discovery and MLD only) the
/// unspecified one.
fn ipv6(ctx: &TcContext, veth: &VethEntry) -> Verdict {
    let at = ETH_HLEN;
    // Compared as two words in packet byte order (no memcmp in BPF).
    let (Ok(next), Ok(hi), Ok(lo)) = (
        ctx.load::<u8>(at + 6),
        ctx.load::<u64>(at + 8),
        ctx.load::<u64>(at + 16),
    ) else {
        return Verdict::Spoofed(u64::from(ETH_P_IPV6));
    };
    let (own_hi, own_lo) = halves(&veth.ipv6);
    let own = hi == own_hi && lo == own_lo && (own_hi | own_lo) != 0;
    let m = veth.mac;
    let eui64 = u64::from_ne_bytes([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    let link_local = hi == u64::from_ne_bytes([0xfe, 0x80, 0, 0, 0, 0, 0, 0]) && lo == eui64;
    let unspecified = hi | lo == 0 && (next == IPPROTO_ICMPV6 || next == IPPROTO_HOPOPTS);
    if own || link_local || unspecified {
        Verdict::Pass
    } else {
        Verdict::Spoofed(u64::from_be(lo))
    }
}

fn halves(ip: &[u8; 16]) -> (u64, u64) {
    let (mut hi, mut lo) = ([0u8; 8], [0u8; 8]);
    hi.copy_from_slice(&ip[..8]);
    lo.copy_from_slice(&ip[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

fn ipv4(ctx: &TcContext, veth: &VethEntry) -> Verdict {
    let at = ETH_HLEN;
    let (Ok(ver_ihl), Ok(frag), Ok(proto), Ok(saddr), Ok(daddr)) = (
        ctx.load::<u8>(at),
        ctx.load::<u16>(at + 6),
        ctx.load::<u8>(at + 9),
        ctx.load::<u32>(at + 12),
        ctx.load::<u32>(at + 16),
    ) else {
        return Verdict::Spoofed(u64::from(ETH_P_IP));
    };
    if saddr != veth.ipv4_be || veth.ipv4_be == 0 {
        return Verdict::Spoofed(u64::from(saddr) << 16);
    }
    let l4 = at + usize::from(ver_ihl & 0x0f) * 4;
    // Later fragments carry no ports: only the rules for every port.
    let first = u16::from_be(frag) & 0x1fff == 0;
    let (port, opening) = match proto {
        IPPROTO_TCP if first => match (ctx.load::<u16>(l4 + 2), ctx.load::<u8>(l4 + 13)) {
            (Ok(p), Ok(flags)) => (
                u32::from(u16::from_be(p)),
                flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
            ),
            _ => (0, true),
        },
        IPPROTO_UDP if first => (
            ctx.load::<u16>(l4 + 2)
                .map_or(0, |p| u32::from(u16::from_be(p))),
            true,
        ),
        // Echo replies and errors answer what someone else sent.
        IPPROTO_ICMP if first => match ctx.load::<u8>(l4) {
            Ok(ICMP_ECHO) => (EGRESS_PORT_PING, true),
            Ok(0 | 3 | 11 | 12 | 14 | 16 | 18) => (0, false),
            _ => (0, true),
        },
        _ => (0, true),
    };
    match egress_denied_by(veth.vps_id, port, daddr, opening) {
        Some(rule_id) => {
            Verdict::Denied(rule_id, (u64::from(daddr) << 16) | u64::from(port & 0xffff))
        }
        None => Verdict::Pass,
    }
}
