//! The host's own addresses, as a VPS would reach them: what
//! `network.deny_host` denies.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt as _;
use rtnetlink::packet_route::address::AddressAttribute;

use super::link::{LinkError, Result, with_netlink};

/// Every IPv4 address of this network namespace (the gateway on the
/// bridge included) and its subnet's broadcast address, as /32 networks,
/// with the limited broadcast and multicast, which the host receives on
/// the bridge too. Loopback is left out: a VPS's own 127.0.0.0/8 is its
/// own namespace's, and rules on it would cut the VPS off from itself.
pub fn host_networks() -> Result<Vec<(Ipv4Addr, u8)>> {
    let addrs = with_netlink(None, |h| async move {
        let mut out = Vec::new();
        let mut list = h.address().get().execute();
        while let Some(a) = list.try_next().await.map_err(|e| LinkError::Netlink {
            what: "list the host's addresses".into(),
            why: e.to_string(),
        })? {
            for at in &a.attributes {
                match at {
                    AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Broadcast(ip) => {
                        out.push(*ip);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    })?;
    Ok(networks(addrs))
}

fn networks(addrs: Vec<Ipv4Addr>) -> Vec<(Ipv4Addr, u8)> {
    let mut out: Vec<(Ipv4Addr, u8)> = addrs
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .chain([Ipv4Addr::BROADCAST])
        .map(|ip| (ip, 32))
        .chain([(Ipv4Addr::new(224, 0, 0, 0), 4)])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_left_out_and_broadcast_and_multicast_join() {
        let got = networks(vec![
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(10, 213, 0, 1),
            Ipv4Addr::new(10, 213, 255, 255),
            Ipv4Addr::new(10, 213, 0, 1),
        ]);
        assert_eq!(
            got,
            [
                (Ipv4Addr::new(10, 213, 0, 1), 32),
                (Ipv4Addr::new(10, 213, 255, 255), 32),
                (Ipv4Addr::new(224, 0, 0, 0), 4),
                (Ipv4Addr::BROADCAST, 32),
            ]
        );
    }
}
