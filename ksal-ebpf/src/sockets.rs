//! Socket creation: the families a VPS may open at all (an allowlist), and
//! within them raw IP and packet sockets, which a VPS's root could
//! otherwise open in its own network namespace, denied by policy.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use ksal_common::{Hook, guard, guard_rule};

use crate::guards::{deny, previous, vps_task};

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_RAW: i32 = 3;
/// The socket type without SOCK_NONBLOCK / SOCK_CLOEXEC.
const SOCK_TYPE_MASK: i32 = 0xf;

/// socket_create(family, type, protocol, kern)
#[lsm(hook = "socket_create")]
pub fn ksal_socket_create(ctx: LsmContext) -> i32 {
    let earlier = previous::<4>(&ctx);
    if earlier != 0 {
        return earlier;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0;
    }
    let Some(scope) = vps_task() else {
        return 0;
    };
    let family: i32 = ctx.arg(0);
    let kind: i32 = ctx.arg(1);
    let object = ((family as u64) << 32) | (kind as u32 as u64);
    let guards = scope.vps.guards;
    let listed = (0..64).contains(&family) && scope.vps.families_allowed & (1u64 << family) != 0;
    if guards & guard::SOCKET_FAMILIES != 0 && !listed {
        return deny(
            &ctx,
            &scope,
            Hook::SocketCreate,
            guard_rule::SOCKET_FAMILIES,
            object,
        );
    }
    if family == AF_PACKET && guards & guard::PACKET_SOCKETS != 0 {
        return deny(
            &ctx,
            &scope,
            Hook::SocketCreate,
            guard_rule::PACKET_SOCKETS,
            object,
        );
    }
    if (family == AF_INET || family == AF_INET6)
        && kind & SOCK_TYPE_MASK == SOCK_RAW
        && guards & guard::RAW_SOCKETS != 0
    {
        return deny(
            &ctx,
            &scope,
            Hook::SocketCreate,
            guard_rule::RAW_SOCKETS,
            object,
        );
    }
    0
}
