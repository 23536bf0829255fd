//! Without NAT, VPS traffic stays on the host in either mode: two policy
//! routing rules send what the subnet addresses to itself through the
//! main table as usual and make anything else from the subnet
//! unreachable. A routed host end forwards (it must, for VPS to VPS), so
//! without them a VPS's packets would leave the host with a private
//! source; a bridged one forwards whenever the host does. The host's own
//! addresses are in the local table, looked up before either rule.
use std::net::Ipv4Addr;

use rtnetlink::{Handle, packet_route::rule::RuleAction};

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

/// Put the rules in place (`on`) or take them away (NAT does the job).
pub fn fence(cfg: &NetConfig, on: bool) -> Result<()> {
    let cfg = cfg.clone();
    with_netlink(None, move |h| async move {
        for within in [true, false] {
            let mut req = request(&h, &cfg, within);
            let result = if on {
                req.execute().await
            } else {
                h.rule().del(req.message_mut().clone()).execute().await
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
                            cfg.subnet
                        ),
                        why: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    })
}
