//! Links, addresses and routes through rtnetlink. Each operation runs on a
//! thread of its own with a small runtime, so it never blocks the daemon's
//! runtime, and so it can enter a VPS's network namespace (setns affects
//! only the calling thread).
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, OwnedFd},
};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        link::{
            AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoVeth, LinkAttribute,
            LinkInfo, LinkMessage,
        },
        route::RouteScope,
    },
};

use super::{NetConfig, NetMode, Subnet, vps_mac};

/// Ports a Linux bridge takes (BR_MAX_PORTS is 1024, port number 0 is
/// never given out).
pub const BRIDGE_MAX_PORTS: usize = 1023;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{what}: {why}")]
    Netlink { what: String, why: String },
    #[error("{0} exists but is not a bridge; choose another --bridge or remove it")]
    NotABridge(String),
    #[error(
        "bridge {bridge} is full: a Linux bridge takes at most {BRIDGE_MAX_PORTS} ports, one per \
         running VPS; run the daemon with --network routed (no such limit; stop its VPSs first), \
         or start more VPSs under another daemon with its own --bridge"
    )]
    BridgeFull { bridge: String },
}

pub type Result<T> = std::result::Result<T, LinkError>;

pub(super) fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |e| LinkError::Netlink {
        what,
        why: e.to_string(),
    }
}

/// Run `op` with a netlink handle, on a fresh thread, in the network
/// namespace `netns` if one is given (else the caller's).
pub(super) fn with_netlink<T, F, Fut>(netns: Option<OwnedFd>, op: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let fail = |why: String| LinkError::Netlink {
        what: "netlink".into(),
        why,
    };
    std::thread::spawn(move || {
        if let Some(ns) = netns {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| fail(format!("enter the VPS network namespace: {e}")))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| fail(e.to_string()))?;
            tokio::spawn(conn);
            op(handle).await
        })
    })
    .join()
    .map_err(|_| fail("netlink thread panicked".into()))?
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
    })
}

async fn has_address(handle: &Handle, index: u32, ip: IpAddr) -> Result<bool> {
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(a) = addrs.try_next().await.map_err(nl("list addresses"))? {
        use rtnetlink::packet_route::address::AddressAttribute;
        if a.attributes
            .iter()
            .any(|at| matches!(at, AddressAttribute::Address(v) if *v == ip))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Create the bridge with the gateway address if it is missing; refuse a
/// link of that name that is not a bridge. In routed mode no VPS is
/// plugged into it: it only holds the gateway address (a bridge rather
/// than a dummy link, whose module hosts and the test VM may lack).
pub fn ensure_bridge(cfg: &NetConfig) -> Result<()> {
    let cfg = cfg.clone();
    with_netlink(None, move |h| async move {
        let link = match link_by_name(&h, &cfg.bridge).await? {
            Some(l) if !is_bridge(&l) => return Err(LinkError::NotABridge(cfg.bridge.clone())),
            Some(l) => l,
            None => {
                h.link()
                    .add(LinkBridge::new(&cfg.bridge).build())
                    .execute()
                    .await
                    .map_err(nl(format!("create bridge {}", cfg.bridge)))?;
                link_by_name(&h, &cfg.bridge)
                    .await?
                    .ok_or_else(|| LinkError::NotABridge(cfg.bridge.clone()))?
            }
        };
        let index = link.header.index;
        let gw = cfg.subnet.gateway();
        if !has_address(&h, index, IpAddr::V4(gw)).await? {
            h.address()
                .add(index, IpAddr::V4(gw), cfg.subnet.prefix)
                .execute()
                .await
                .map_err(nl(format!(
                    "add {gw}/{} to {}",
                    cfg.subnet.prefix, cfg.bridge
                )))?;
        }
        if let Some(p6) = cfg.subnet6 {
            let gw6 = p6.gateway();
            if !has_address(&h, index, IpAddr::V6(gw6)).await? {
                super::v6::add_nodad(&h, index, gw6, p6.len)
                    .await
                    .map_err(nl(format!("add {gw6}/{} to {}", p6.len, cfg.bridge)))?;
            }
            if cfg.mode == NetMode::Routed {
                // IPv6 is routed between interfaces only with forwarding
                // on for all of them (no per-interface switch as for IPv4).
                super::v6::sysctl("all/forwarding", "1")?;
            }
        }
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring up {}", cfg.bridge)))
    })
}

/// Give VPS `id` (whose init is `init_pid`) its `eth0` with address `ip`
/// and a default route via the gateway; its host end plugged into the
/// bridge, or (routed) routed to with proxy ARP; and its IPv6 address
/// `ip6` where the daemon has a v6 prefix. The veth's peer is made in the
/// VPS's network namespace as `eth0`, with its MAC: never moved there (a
/// move waits for an RCU grace period).
pub fn attach_vps(
    cfg: &NetConfig,
    id: u32,
    ip: Subnet,
    ip6: Option<Ipv6Addr>,
    init_pid: u32,
) -> Result<()> {
    let host = cfg.host_veth(id);
    let netns = std::fs::File::open(format!("/proc/{init_pid}/ns/net"))
        .map(OwnedFd::from)
        .map_err(|e| LinkError::Netlink {
            what: "open the VPS network namespace".into(),
            why: e.to_string(),
        })?;
    let netns_fd = netns.try_clone().map_err(|e| LinkError::Netlink {
        what: "dup the VPS network namespace".into(),
        why: e.to_string(),
    })?;
    let host_cfg = cfg.clone();
    let h_name = host.clone();
    with_netlink(None, move |h| async move {
        if let Some(stale) = link_by_name(&h, &h_name).await? {
            let _ = h.link().del(stale.header.index).execute().await;
        }
        h.link()
            .add(veth_into(&h_name, id, netns_fd.as_raw_fd()))
            .execute()
            .await
            .map_err(nl(format!("create veth {h_name} with eth0 in the VPS")))?;
        drop(netns_fd);
        let hv = link_by_name(&h, &h_name)
            .await?
            .ok_or_else(|| LinkError::Netlink {
                what: format!("find veth {h_name}"),
                why: "it vanished".into(),
            })?;
        match host_cfg.mode {
            NetMode::Bridged => plug(&h, &host_cfg.bridge, hv.header.index, &h_name).await?,
            NetMode::Routed => {
                route_to(&h, &host_cfg, hv.header.index, &h_name, ip.addr).await?;
                if let (Some(ip6), Some(p6)) = (ip6, host_cfg.subnet6) {
                    super::v6::route_to(&h, p6, hv.header.index, &h_name, ip6).await?;
                }
            }
        }
        Ok(())
    })?;
    let gateway = cfg.subnet.gateway();
    let v6 = ip6.zip(cfg.subnet6).map(|(ip6, p6)| (ip6, p6, cfg.mode));
    with_netlink(Some(netns), move |h| async move {
        let index = link_by_name(&h, "eth0")
            .await?
            .ok_or_else(|| LinkError::Netlink {
                what: "find eth0 in the VPS".into(),
                why: "it was not made".into(),
            })?
            .header
            .index;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl("bring up eth0"))?;
        h.address()
            .add(index, IpAddr::V4(ip.addr), ip.prefix)
            .execute()
            .await
            .map_err(nl(format!("add {ip} to eth0")))?;
        h.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("default route via {gateway}")))?;
        if let Some((ip6, p6, mode)) = v6 {
            super::v6::configure_eth0(&h, index, ip6, p6, mode).await?;
        }
        Ok(())
    })
}

/// A veth `host` whose peer is made as `eth0` in the network namespace
/// `netns` (down: veth refuses to open a side before it has a peer), with
/// VPS `id`'s MAC: one known to the host without asking
/// the VPS (it may change it, and then its frames are dropped on the veth).
fn veth_into(host: &str, id: u32, netns: std::os::fd::RawFd) -> LinkMessage {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name("eth0".to_owned())
        .address(vps_mac(id).to_vec())
        .setns_by_fd(netns)
        .build();
    LinkVeth::new(host, "eth0")
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build()
}

/// Bridged: plug host veth `veth` (index `index`) into `bridge`, up. A
/// full bridge is refused by the kernel here; the failed start removes
/// the veth, and the VPS's eth0 goes with it.
async fn plug(h: &Handle, bridge: &str, index: u32, veth: &str) -> Result<()> {
    let br = link_by_name(h, bridge)
        .await?
        .ok_or_else(|| LinkError::NotABridge(bridge.to_owned()))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(br.header.index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|e| plug_error(e, bridge, veth))
}

fn plug_error(e: rtnetlink::Error, bridge: &str, veth: &str) -> LinkError {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EXFULL => {
            LinkError::BridgeFull {
                bridge: bridge.to_owned(),
            }
        }
        e => nl(format!("plug {veth} into {bridge}"))(e),
    }
}

/// Routed: host veth `veth` (index `index`) up on no bridge, forwarding
/// what the VPS sends and answering its ARP for every address the host
/// routes elsewhere (proxy ARP: its neighbours; the gateway is the host's
/// own), and a /32 route to the VPS's address `ip` through it, from the
/// gateway address. Both go with the veth when it is deleted.
async fn route_to(h: &Handle, cfg: &NetConfig, index: u32, veth: &str, ip: Ipv4Addr) -> Result<()> {
    let mut conf = InetDevConf::default();
    conf.forwarding = 1;
    conf.proxy_arp = 1;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .up()
                .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(
                    vec![AfSpecInet::DevConfRequest(conf)],
                )]))
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("bring up {veth} with forwarding and proxy ARP")))?;
    let gateway = cfg.subnet.gateway();
    h.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(ip, 32)
                .output_interface(index)
                .pref_source(gateway)
                .scope(RouteScope::Link)
                .build(),
        )
        .replace()
        .execute()
        .await
        .map_err(nl(format!("route {ip}/32 through {veth}")))
}

/// The index of VPS `id`'s host veth.
pub fn veth_index(cfg: &NetConfig, id: u32) -> Result<u32> {
    let host = cfg.host_veth(id);
    with_netlink(None, move |h| async move {
        link_by_name(&h, &host)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| LinkError::Netlink {
                what: format!("find veth {host}"),
                why: "it does not exist".into(),
            })
    })
}

/// Remove VPS `id`'s host veth (and with it its eth0), if present.
pub fn detach_vps(cfg: &NetConfig, id: u32) -> Result<()> {
    let host = cfg.host_veth(id);
    with_netlink(None, move |h| async move {
        if let Some(link) = link_by_name(&h, &host).await? {
            h.link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(nl(format!("delete {host}")))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nack(errno: i32) -> rtnetlink::Error {
        let mut m = rtnetlink::packet_core::ErrorMessage::default();
        m.code = std::num::NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(m)
    }

    #[test]
    fn a_full_bridge_is_refused_with_the_limit_and_the_fix() {
        let e = plug_error(nack(libc::EXFULL), "vzbr0", "vzab12c3").to_string();
        assert!(
            e.contains("bridge vzbr0 is full")
                && e.contains(&format!("at most {BRIDGE_MAX_PORTS} ports"))
                && e.contains("--network routed"),
            "{e}"
        );
        let other = plug_error(nack(libc::EPERM), "vzbr0", "vzab12c3").to_string();
        assert!(
            other.contains("plug vzab12c3 into vzbr0") && !other.contains("full"),
            "{other}"
        );
    }
}
