//! Every map the programs share. Sizes come from `ksal-common`, so the host
//! knows the capacity it fills.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, RingBuf},
};
use ksal_common::{
    Config, DeviceKey, EVENTS_RINGBUF_BYTES, EgressKey, EventRate, FileRule, FileRuleKey,
    MAX_FILE_RULES, MAX_VPS, MountKey, NetCounters, SysctlKey, VethEntry, VpsEntry, VpsNet,
};

#[map(name = "KSAL_CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// cgroup v2 id of a VPS -> its entry. A task whose ancestor at the VPS
/// level is not in here is a host task and is never affected.
#[map(name = "KSAL_VPS")]
pub static VPS: HashMap<u64, VpsEntry> = HashMap::with_max_entries(MAX_VPS, 0);

#[map(name = "KSAL_FILE_RULES")]
pub static FILE_RULES: HashMap<FileRuleKey, FileRule> =
    HashMap::with_max_entries(MAX_FILE_RULES, 0);

#[map(name = "KSAL_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RINGBUF_BYTES, 0);

/// Events that did not fit in the ring buffer, per CPU.
#[map(name = "KSAL_EVENTS_DROPPED")]
pub static EVENTS_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// (VPS, filesystem type) it may mount; consulted when `guard::MOUNT_TYPES`
/// is set for the VPS.
#[map(name = "KSAL_MOUNT_ALLOW")]
pub static MOUNT_ALLOW: HashMap<MountKey, u32> = HashMap::with_max_entries(MAX_FILE_RULES, 0);

/// (VPS, device) -> the access it may have.
#[map(name = "KSAL_DEVICE_ALLOW")]
pub static DEVICE_ALLOW: HashMap<DeviceKey, u32> = HashMap::with_max_entries(MAX_FILE_RULES, 0);

/// (VPS, sysctl path) it may write.
#[map(name = "KSAL_SYSCTL_ALLOW")]
pub static SYSCTL_ALLOW: HashMap<SysctlKey, u32> = HashMap::with_max_entries(MAX_FILE_RULES, 0);

/// VPS id -> its event budget on this CPU.
#[map(name = "KSAL_EVENT_RATE")]
pub static EVENT_RATE: PerCpuHashMap<u32, EventRate> = PerCpuHashMap::with_max_entries(MAX_VPS, 0);

/// cgroup v2 id of a VPS -> its address; cgroups not in here are the host's.
#[map(name = "KSAL_VPS_NET")]
pub static VPS_NET: HashMap<u64, VpsNet> = HashMap::with_max_entries(MAX_VPS, 0);

#[map(name = "KSAL_NET_COUNTERS")]
pub static NET_COUNTERS: PerCpuHashMap<u32, NetCounters> =
    PerCpuHashMap::with_max_entries(MAX_VPS, 0);

/// (VPS, port, destination network) -> the id of the rule denying it,
/// longest prefix first.
#[map(name = "KSAL_EGRESS_RULES")]
pub static EGRESS_RULES: LpmTrie<EgressKey, u32> = LpmTrie::with_max_entries(MAX_FILE_RULES, 0);

/// ifindex of a VPS's host-side veth -> what its tc program checks.
#[map(name = "KSAL_VETH")]
pub static VETH: HashMap<u32, VethEntry> = HashMap::with_max_entries(MAX_VPS, 0);
