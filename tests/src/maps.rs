//! What a daemon's pinned KSAL maps hold, read from their pins: how tests
//! show a stopped and destroyed VPS left no entry behind.
use std::path::Path;

use aya::maps::{HashMap, LpmTrie, Map, MapData, PerCpuHashMap};
use ksal_common::{
    DeviceKey, EgressKey, EventRate, FileRule, FileRuleKey, MountKey, NetCounters, SysctlKey,
    VethEntry, VpsEntry, VpsNet, map_names,
};

/// Entries of every per-VPS map pinned under `pins` (a daemon's `--pins`
/// directory), by map name; a map not pinned there counts none.
pub fn ksal_map_entries(pins: &Path) -> Vec<(&'static str, usize)> {
    let Some(dir) = std::fs::read_dir(pins.join("maps"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.path())
    else {
        return Vec::new();
    };
    let open = |name: &str| Map::from_map_data(MapData::from_pin(dir.join(name)).ok()?).ok();
    macro_rules! count {
        ($name:expr, $kind:ident, $key:ty, $value:ty) => {
            (
                $name,
                open($name)
                    .and_then(|m| $kind::<_, $key, $value>::try_from(m).ok())
                    .map_or(0, |m| m.keys().count()),
            )
        };
    }
    vec![
        count!(map_names::VPS, HashMap, u64, VpsEntry),
        count!(map_names::VPS_NET, HashMap, u64, VpsNet),
        count!(map_names::VETH, HashMap, u32, VethEntry),
        count!(map_names::NET_COUNTERS, PerCpuHashMap, u32, NetCounters),
        count!(map_names::EVENT_RATE, PerCpuHashMap, u32, EventRate),
        count!(map_names::FILE_RULES, HashMap, FileRuleKey, FileRule),
        count!(map_names::DEVICE_ALLOW, HashMap, DeviceKey, u32),
        count!(map_names::SYSCTL_ALLOW, HashMap, SysctlKey, u32),
        count!(map_names::MOUNT_ALLOW, HashMap, MountKey, u32),
        count!(map_names::EGRESS_RULES, LpmTrie, EgressKey, u32),
    ]
}
