//! What the KSAL counts and reports: traffic per VPS, the event stream,
//! and the events it could not deliver.
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use ksal_common::{EventRate, NetCounters, map_names};

use super::{
    Ksal,
    error::{KsalError, Result, map_err},
    events::EventReader,
};

impl Ksal {
    /// Traffic counters of VPS `vps_id`, summed over CPUs.
    pub fn net_counters(&self, vps_id: u32) -> Result<NetCounters> {
        let map = self
            .ebpf
            .map(map_names::NET_COUNTERS)
            .ok_or(KsalError::NoMap(map_names::NET_COUNTERS))?;
        let counters: PerCpuHashMap<&MapData, u32, NetCounters> =
            PerCpuHashMap::try_from(map).map_err(map_err(map_names::NET_COUNTERS))?;
        let per_cpu = match counters.get(&vps_id, 0) {
            Ok(v) => v,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(NetCounters::default()),
            Err(e) => return Err(map_err(map_names::NET_COUNTERS)(e)),
        };
        Ok(per_cpu.iter().fold(NetCounters::default(), |mut sum, c| {
            sum.rx_bytes += c.rx_bytes;
            sum.rx_packets += c.rx_packets;
            sum.tx_bytes += c.tx_bytes;
            sum.tx_packets += c.tx_packets;
            sum.spoofed_dropped += c.spoofed_dropped;
            sum
        }))
    }

    /// Drop the traffic counters and event budget of a destroyed VPS: they
    /// outlive its stops (counters only ever grow), not the VPS itself, and
    /// a later VPS given the same id starts from zero.
    pub fn forget_counters(&mut self, vps_id: u32) {
        if let Some(Ok(mut m)) = self
            .ebpf
            .map_mut(map_names::NET_COUNTERS)
            .map(PerCpuHashMap::<_, u32, NetCounters>::try_from)
        {
            let _ = m.remove(&vps_id);
        }
        if let Some(Ok(mut m)) = self
            .ebpf
            .map_mut(map_names::EVENT_RATE)
            .map(PerCpuHashMap::<_, u32, EventRate>::try_from)
        {
            let _ = m.remove(&vps_id);
        }
    }

    /// Take the event stream (and with it the programs' own log); there is
    /// one reader per loaded KSAL.
    pub fn take_events(&mut self) -> Result<EventReader> {
        let map = self
            .ebpf
            .take_map(map_names::EVENTS)
            .ok_or(KsalError::NoMap(map_names::EVENTS))?;
        let ring = RingBuf::try_from(map).map_err(map_err(map_names::EVENTS))?;
        Ok(EventReader::new(ring, self.kernel_log.take()))
    }

    /// Events lost because the ring buffer was full, summed over CPUs.
    pub fn events_dropped(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map(map_names::EVENTS_DROPPED)
            .ok_or(KsalError::NoMap(map_names::EVENTS_DROPPED))?;
        let counts: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_err(map_names::EVENTS_DROPPED))?;
        let per_cpu = counts
            .get(&0, 0)
            .map_err(map_err(map_names::EVENTS_DROPPED))?;
        Ok(per_cpu.iter().sum())
    }
}
