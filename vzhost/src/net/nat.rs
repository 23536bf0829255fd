//! Optional NAT to the outside: off unless the administrator turns it on.
//! When on, the host forwards for the VPS subnet and masquerades what
//! leaves it for any address outside it (VPS to VPS traffic, bridged or
//! routed through the host, keeps its addresses); when off, vzhost's own
//! nftables table is removed, so no NAT of vzhost's exists.
use std::{io::Write as _, process::Command};

use super::NetConfig;

const TABLE: &str = "vzhost";

#[derive(Debug, thiserror::Error)]
#[error("NAT: {what}: {why} (NAT needs nftables: apt-get install nftables)")]
pub struct NatError {
    what: &'static str,
    why: String,
}

fn nft(script: &str, what: &'static str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| NatError {
            what,
            why: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NatError {
        what,
        why: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NatError {
            what,
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The nftables script that (re)creates vzhost's table for `cfg`.
fn ruleset(cfg: &NetConfig) -> String {
    format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\n\
         table ip {TABLE} {{\n  chain postrouting {{\n    \
         type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr {subnet} ip daddr != {subnet} masquerade\n  }}\n}}\n",
        subnet = cfg.subnet
    )
}

/// Turn NAT on or off for the VPS subnet.
pub fn set_nat(cfg: &NetConfig, on: bool) -> Result<(), NatError> {
    if on {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| NatError {
            what: "enable IPv4 forwarding",
            why: e.to_string(),
        })?;
        nft(&ruleset(cfg), "install the masquerade rule")
    } else if Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        nft(
            &format!("delete table ip {TABLE}\n"),
            "remove vzhost's NAT table",
        )
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_the_subnet_leaving_for_the_outside_only() {
        let cfg = NetConfig::new("vzbr0", "10.213.0.0/16").unwrap();
        let r = ruleset(&cfg);
        assert!(
            r.contains("ip saddr 10.213.0.0/16 ip daddr != 10.213.0.0/16 masquerade"),
            "{r}"
        );
        assert!(
            r.starts_with("table ip vzhost {}\ndelete table ip vzhost\n"),
            "idempotent: {r}"
        );
    }
}
