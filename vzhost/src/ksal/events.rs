//! Decoding KSAL ring-buffer records into events the host can print, and
//! the programs' own log (aya-log) forwarded to the daemon's.
use std::{
    collections::{BTreeMap, VecDeque},
    os::fd::AsRawFd as _,
    sync::{Condvar, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, RingBuf};
use aya_log::EbpfLogger;
use ksal_common::{Event, Hook, verdict};
use serde::{Deserialize, Serialize};

use crate::model::{Verdict, text::escape_control};

/// One denial or audit record, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsalEvent {
    pub vps_id: u32,
    pub cgroup_id: u64,
    pub hook: String,
    pub rule_id: u32,
    pub verdict: Verdict,
    pub pid: u32,
    pub tgid: u32,
    /// The command name, chosen by the VPS: control characters escaped.
    pub comm: String,
    /// Hook-specific object (the inode number for file hooks).
    pub object: u64,
    pub ktime_ns: u64,
}

impl KsalEvent {
    /// Decode a ring-buffer record; `None` for one of the wrong size or
    /// with a verdict ksal-common does not define (the object and the
    /// host are out of step: nothing true can be said of it).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Event>() {
            return None;
        }
        // SAFETY: Event is #[repr(C)] plain integers (any bit pattern is
        // valid) and the slice holds at least size_of::<Event>() bytes;
        // read_unaligned copes with any alignment.
        let raw: Event = unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() };
        let comm_len = raw
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.comm.len());
        Some(Self {
            vps_id: raw.vps_id,
            cgroup_id: raw.cgroup_id,
            hook: Hook::from_u32(raw.hook)
                .map_or_else(|| format!("hook#{}", raw.hook), |h| h.name().to_owned()),
            rule_id: raw.rule_id,
            verdict: match raw.verdict {
                verdict::DENIED => Verdict::Denied,
                verdict::AUDITED => Verdict::Audited,
                _ => return None,
            },
            pid: raw.pid,
            tgid: raw.tgid,
            comm: escape_control(&String::from_utf8_lossy(&raw.comm[..comm_len])).into_owned(),
            object: raw.object,
            ktime_ns: raw.ktime_ns,
        })
    }
}

/// Forwards the programs' aya-log records to the daemon's log at debug
/// level: they report rare kernel-side paths (a full map, a full ring
/// buffer, a value the kernel should not have passed), never VPS data.
pub(super) struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        tracing::enabled!(target: "ksal::kernel", tracing::Level::DEBUG)
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::debug!(
            target: "ksal::kernel",
            level = %record.level(),
            program = record.module_path().unwrap_or(""),
            "{}",
            record.args()
        );
    }

    fn flush(&self) {}
}

pub(super) type KernelLogger = EbpfLogger<KernelLog>;

/// The reader of the programs' log, taken from `ebpf` before its programs
/// load (they refer to the log's map, which must stay open).
pub(super) fn kernel_logger(ebpf: &mut aya::Ebpf) -> Option<KernelLogger> {
    EbpfLogger::init_with_logger(ebpf, KernelLog)
        .inspect_err(|e| tracing::warn!("the KSAL programs' log is not forwarded: {e}"))
        .ok()
}

/// Reads events from the KSAL ring buffer, forwarding the programs' log
/// as it goes.
pub struct EventReader {
    ring: RingBuf<MapData>,
    kernel_log: Option<KernelLogger>,
}

impl EventReader {
    pub(super) fn new(ring: RingBuf<MapData>, kernel_log: Option<KernelLogger>) -> Self {
        Self { ring, kernel_log }
    }

    /// The next event, waiting at most `timeout` for one to arrive.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<KsalEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(log) = &mut self.kernel_log {
                log.flush();
            }
            if let Some(item) = self.ring.next() {
                if let Some(event) = KsalEvent::decode(&item) {
                    return Some(event);
                }
                continue;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let pollfd = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let mut fds = [pollfd(self.ring.as_raw_fd()), pollfd(-1)];
            if let Some(log) = &self.kernel_log {
                fds[1] = pollfd(log.as_raw_fd());
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: valid pollfds for the duration of the call (poll
            // skips a negative fd).
            unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        }
    }

    /// Every event that arrives within `timeout`, stopping early once
    /// `done` returns true for one.
    pub fn collect_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&KsalEvent) -> bool,
    ) -> Vec<KsalEvent> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(event) = self.next_timeout(left) else {
                break;
            };
            let stop = done(&event);
            seen.push(event);
            if stop {
                break;
            }
        }
        seen
    }
}

/// An event as the daemon keeps it: numbered in arrival order and stamped
/// with the wall-clock time it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub seq: u64,
    /// Unix time in seconds.
    pub time: f64,
    #[serde(flatten)]
    pub event: KsalEvent,
}

/// Counts of events by VPS, hook, rule and verdict.
pub type EventCounts = BTreeMap<(u32, String, u32, Verdict), u64>;

/// The daemon's memory of KSAL events: the most recent ones for `vzhost
/// events`, and a count of every event ever seen for the metrics.
pub struct EventLog {
    state: Mutex<LogState>,
    arrived: Condvar,
    capacity: usize,
}

struct LogState {
    next_seq: u64,
    recent: VecDeque<LoggedEvent>,
    counts: EventCounts,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(LogState {
                next_seq: 1,
                recent: VecDeque::new(),
                counts: BTreeMap::new(),
            }),
            arrived: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn record(&self, event: KsalEvent) {
        let mut s = self.lock();
        let key = (
            event.vps_id,
            event.hook.clone(),
            event.rule_id,
            event.verdict,
        );
        *s.counts.entry(key).or_default() += 1;
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let seq = s.next_seq;
        s.next_seq += 1;
        if s.recent.len() == self.capacity {
            s.recent.pop_front();
        }
        s.recent.push_back(LoggedEvent { seq, time, event });
        self.arrived.notify_all();
    }

    /// Drop the events and counts of a destroyed VPS, so that a later VPS
    /// given its id neither shows nor counts them.
    pub fn forget(&self, vps_id: u32) {
        let mut s = self.lock();
        s.counts.retain(|(id, ..), _| *id != vps_id);
        s.recent.retain(|e| e.event.vps_id != vps_id);
    }

    /// Kept events numbered above `after`; when there are none, wait up
    /// to `wait` for one.
    pub fn after(&self, after: u64, wait: Duration) -> Vec<LoggedEvent> {
        let s = self.lock();
        let (s, _) = self
            .arrived
            .wait_timeout_while(s, wait, |s| s.next_seq <= after + 1)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.recent.iter().filter(|e| e.seq > after).cloned().collect()
    }

    /// The number of the last event recorded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    pub fn counts(&self) -> EventCounts {
        self.lock().counts.clone()
    }

    /// Read `reader` until the process ends, logging each event.
    pub fn collect(&self, mut reader: EventReader) {
        loop {
            if let Some(e) = reader.next_timeout(Duration::from_secs(3600)) {
                tracing::warn!(
                    vps_id = e.vps_id,
                    hook = %e.hook,
                    rule = e.rule_id,
                    verdict = %e.verdict,
                    pid = e.tgid,
                    comm = %e.comm,
                    "KSAL event"
                );
                self.record(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hook: u32, verdict: u32, comm: &[u8]) -> Vec<u8> {
        let mut c = [0u8; ksal_common::COMM_LEN];
        c[..comm.len()].copy_from_slice(comm);
        let ev = Event {
            ktime_ns: 1,
            cgroup_id: 77,
            object: 12,
            vps_id: 3,
            hook,
            rule_id: 9,
            verdict,
            pid: 100,
            tgid: 99,
            comm: c,
        };
        // SAFETY: Event is plain old data without padding.
        unsafe {
            std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<Event>()).to_vec()
        }
    }

    #[test]
    fn decodes_a_denial() {
        let ev =
            KsalEvent::decode(&record(Hook::FileOpen as u32, verdict::DENIED, b"cat")).unwrap();
        assert_eq!(ev.hook, "file_open");
        assert_eq!(ev.verdict, Verdict::Denied);
        assert_eq!(ev.comm, "cat");
        assert_eq!(
            (ev.vps_id, ev.cgroup_id, ev.rule_id, ev.pid),
            (3, 77, 9, 100)
        );
    }

    #[test]
    fn log_keeps_recent_events_and_counts_all() {
        let log = EventLog::new(2);
        for _ in 0..3 {
            log.record(
                KsalEvent::decode(&record(Hook::FileOpen as u32, verdict::DENIED, b"cat")).unwrap(),
            );
        }
        let kept = log.after(0, Duration::ZERO);
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(log.after(3, Duration::from_millis(10)), vec![]);
        assert_eq!(log.last_seq(), 3);
        let counts = log.counts();
        assert_eq!(
            counts.get(&(3, "file_open".to_owned(), 9, Verdict::Denied)),
            Some(&3)
        );
    }

    #[test]
    fn a_destroyed_vps_leaves_no_events_or_counts_behind() {
        let log = EventLog::new(8);
        let mut other =
            KsalEvent::decode(&record(Hook::Device as u32, verdict::DENIED, b"sh")).unwrap();
        other.vps_id = 4;
        log.record(other);
        log.record(
            KsalEvent::decode(&record(Hook::FileOpen as u32, verdict::DENIED, b"cat")).unwrap(),
        );
        log.forget(3);
        let kept = log.after(0, Duration::ZERO);
        assert_eq!(
            kept.iter().map(|e| e.event.vps_id).collect::<Vec<_>>(),
            vec![4]
        );
        assert_eq!(
            log.counts().keys().map(|k| k.0).collect::<Vec<_>>(),
            vec![4]
        );
    }

    #[test]
    fn a_command_name_chosen_by_the_vps_arrives_escaped() {
        let ev = KsalEvent::decode(&record(
            Hook::Device as u32,
            verdict::DENIED,
            b"\x1b[2Jx\ny",
        ))
        .unwrap();
        assert_eq!(ev.comm, "\\x1b[2Jx\\x0ay");
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains(r#""comm":"\\x1b[2Jx\\x0ay""#), "{json}");
    }

    #[test]
    fn names_unknown_hooks_and_rejects_short_records_and_unknown_verdicts() {
        let ev = KsalEvent::decode(&record(42, verdict::AUDITED, b"0123456789abcdef")).unwrap();
        assert_eq!(
            (ev.hook.as_str(), ev.verdict),
            ("hook#42", Verdict::Audited)
        );
        assert_eq!(ev.comm, "0123456789abcdef");
        assert!(KsalEvent::decode(&record(42, 7, b"x")).is_none());
        assert!(KsalEvent::decode(&[0u8; 8]).is_none());
    }
}
