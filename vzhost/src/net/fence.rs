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

/// The rules for `cfg`'s subnet: (priority, destination prefix, action).
fn rules(cfg: &NetConfig) -> [(u32, Option<(Ipv4Addr, u8)>, RuleAction); 2] {
    let subnet = (cfg.subnet.network(), cfg.subnet.prefix);
    [
        (PRIORITY, Some(subnet), RuleAction::ToTable),
        (PRIORITY + 1, None, RuleAction::Unreachable),
    ]
}

fn request(
    h: &Handle,
    cfg: &NetConfig,
    (priority, to, action): (u32, Option<(Ipv4Addr, u8)>, RuleAction),
) -> rtnetlink::RuleAddRequest<Ipv4Addr> {
    let req = h
        .rule()
        .add()
        .v4()
        .priority(priority)
        .action(action)
        .source_prefix(cfg.subnet.network(), cfg.subnet.prefix);
    match to {
        Some((net, prefix)) => req.destination_prefix(net, prefix),
        None => req,
    }
}

/// Put the rules in place (`on`) or take them away (NAT does the job).
pub fn fence(cfg: &NetConfig, on: bool) -> Result<()> {
    let cfg = cfg.clone();
    with_netlink(None, move |h| async move {
        for rule in rules(&cfg) {
            let mut req = request(&h, &cfg, rule);
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
