//! Without NAT, VPS traffic stays on the host in either mode: two policy
//! routing rules send what the subnet addresses to itself through the
//! main table as usual and make anything else from the subnet
//! unreachable. A routed host end forwards (it must, for VPS to VPS), so
//! without them a VPS's packets would leave the host with a private
//! source; a bridged one forwards whenever the host does. The host's own
//! addresses are in the local table, looked up before either rule. The
//! same two rules hold the IPv6 prefix (routed mode forwards IPv6).
use std::net::{Ipv4Addr, Ipv6Addr};

use rtnetlink::{Handle, RuleAddRequest, packet_route::rule::RuleAction};

use super::{
    NetConfig,
    link::{LinkError, Result, with_netlink},
};

/// Just before the main table's rule (32766).
const PRIORITY: u32 = 32_000;

/// One of the two rules for `cfg`'s subnet: what it sends `within`
/// itself goes on to the main table; anything else is unreachable.
fn request(h: &Handle, cfg: &NetConfig, within: bool) -> rtnetlink::RuleAddRequest<Ipv4Addr> {
    let (net, prefix) = (cfg.subnet.network(), cfg.subnet.prefix);
    let req = h.rule().add().v4().source_prefix(net, prefix);
    if within {
        req.priority(PRIORITY)
            .action(RuleAction::ToTable)
            .destination_prefix(net, prefix)
    } else {
        req.priority(PRIORITY + 1).action(RuleAction::Unreachable)
    }
}

/// The same for `cfg`'s IPv6 prefix, if it has one.
fn request6(h: &Handle, cfg: &NetConfig, within: bool) -> Option<RuleAddRequest<Ipv6Addr>> {
    let p6 = cfg.subnet6?;
    let req = h.rule().add().v6().source_prefix(p6.net, p6.len);
    Some(if within {
        req.priority(PRIORITY)
            .action(RuleAction::ToTable)
            .destination_prefix(p6.net, p6.len)
    } else {
        req.priority(PRIORITY + 1).action(RuleAction::Unreachable)
    })
}

/// Add `req`'s rule (`on`) or delete it.
async fn apply<T>(
    h: &Handle,
    mut req: RuleAddRequest<T>,
    on: bool,
) -> std::result::Result<(), rtnetlink::Error> {
    if on {
        req.execute().await
    } else {
        h.rule().del(req.message_mut().clone()).execute().await
    }
}

/// Put the rules in place (`on`) or take them away (NAT does the job).
pub fn fence(cfg: &NetConfig, on: bool) -> Result<()> {
    let cfg = cfg.clone();
    with_netlink(None, move |h| async move {
        for (within, v6) in [(true, false), (false, false), (true, true), (false, true)] {
            let result = if v6 {
                match request6(&h, &cfg, within) {
                    Some(req) => apply(&h, req, on).await,
                    None => continue,
                }
            } else {
                apply(&h, request(&h, &cfg, within), on).await
            };
            match result {
                Ok(()) => {}
                // Already there, or already gone.
                Err(rtnetlink::Error::NetlinkError(e))
                    if [-libc::EEXIST, -libc::ENOENT].contains(&e.raw_code()) => {}
                Err(e) => {
                    return Err(LinkError::Netlink {
                        what: format!(
                            "{} the rule keeping {}'s traffic on the host",
                            if on { "add" } else { "remove" },
                            if v6 {
                                cfg.subnet6.map(|p| p.to_string()).unwrap_or_default()
                            } else {
                                cfg.subnet.to_string()
                            }
                        ),
                        why: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    })
}
