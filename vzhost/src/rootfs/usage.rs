//! How much a VPS without a disk limit uses: found by walking its layer,
//! which is too slow for a request (400k files take seconds), so one
//! background thread walks and a cache per disk keeps the figures. A read
//! returns the cached figure at once and asks for a new walk when it is
//! older than [`FRESH`] (one walk per disk at a time); only the first read
//! of a disk waits for a figure, at most [`FIRST_WAIT`], and only when no
//! other walk is queued before its own. Disks with a limit are never
//! walked: their quota or image says what they use.
use std::{
    collections::{HashMap, VecDeque},
    io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use nix::sys::stat::Mode;

use super::walk;

/// A figure younger than this is not walked again.
pub const FRESH: Duration = Duration::from_secs(2);
/// How long the first read of a disk waits for its first walk.
pub const FIRST_WAIT: Duration = Duration::from_millis(300);

type Measure = Box<dyn Fn(&Path) -> io::Result<u64> + Send + Sync>;

/// Figures per disk, and the walks asked for.
pub struct UsageCache {
    state: Mutex<State>,
    /// A walk was asked for.
    asked: Condvar,
    /// A walk finished.
    measured: Condvar,
    measure: Measure,
}

#[derive(Default)]
struct State {
    known: HashMap<PathBuf, Known>,
    queue: VecDeque<PathBuf>,
    walker: bool,
}

#[derive(Default)]
struct Known {
    bytes: Option<u64>,
    at: Option<Instant>,
    /// A walk is asked for and not done.
    queued: bool,
    /// That walk has not begun: the disk is in the queue.
    in_queue: bool,
}

impl UsageCache {
    pub fn new(measure: Measure) -> Self {
        Self {
            state: Mutex::default(),
            asked: Condvar::new(),
            measured: Condvar::new(),
            measure,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The figure of `disk`: the cached one, or after a first walk.
    pub fn usage(&'static self, disk: &Path) -> Option<u64> {
        let mut st = self.lock();
        let state = &mut *st;
        let known = state.known.entry(disk.to_owned()).or_default();
        if known.at.is_none_or(|t| t.elapsed() >= FRESH) && !known.queued {
            known.queued = true;
            known.in_queue = true;
            state.queue.push_back(disk.to_owned());
            self.ensure_walker(state);
            self.asked.notify_one();
        }
        let waiting = |st: &mut State| {
            st.known
                .get(disk)
                .is_some_and(|k| k.bytes.is_none() && k.queued)
        };
        // Behind other walks, even a first read does not wait: a scrape of
        // many new VPSs waits for one walk at most.
        // (Asked without a scan of the queue: a scrape asks for thousands.)
        let in_queue = st.known.get(disk).is_some_and(|k| k.in_queue);
        let next = !in_queue || st.queue.front().is_some_and(|d| d == disk);
        if next && waiting(&mut st) {
            st = self
                .measured
                .wait_timeout_while(st, FIRST_WAIT, waiting)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.known.get(disk).and_then(|k| k.bytes)
    }

    /// Drop what is known of `disk`.
    pub fn forget(&self, disk: &Path) {
        self.lock().known.remove(disk);
    }

    fn ensure_walker(&'static self, state: &mut State) {
        if state.walker {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("disk-usage".into())
            .spawn(|| self.walk_forever());
        match spawned {
            Ok(_) => state.walker = true,
            Err(e) => tracing::warn!("cannot start the disk usage walker: {e}"),
        }
    }

    fn walk_forever(&self) {
        let mut st = self.lock();
        loop {
            let Some(disk) = st.queue.pop_front() else {
                st = self.asked.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            if let Some(k) = st.known.get_mut(&disk) {
                k.in_queue = false;
            }
            drop(st);
            let measured = (self.measure)(&disk);
            st = self.lock();
            if let Some(k) = st.known.get_mut(&disk) {
                k.queued = false;
                k.at = Some(Instant::now());
                match measured {
                    Ok(bytes) => k.bytes = Some(bytes),
                    Err(e) => tracing::debug!(disk = %disk.display(), "disk usage walk: {e}"),
                }
            }
            self.measured.notify_all();
        }
    }
}

static LAYERS: LazyLock<UsageCache> = LazyLock::new(|| {
    UsageCache::new(Box::new(|dir| {
        let fd = nix::fcntl::open(dir, walk::OPEN_DIR, Mode::empty())?;
        walk::tree_bytes(fd.as_fd())
    }))
});

/// Bytes under `disk`, walked in the background.
pub fn walked(disk: &Path) -> Option<u64> {
    LAYERS.usage(disk)
}

/// Forget `disk` (destroyed).
pub fn forget(disk: &Path) {
    LAYERS.forget(disk);
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    fn cache(delay: Duration) -> (&'static UsageCache, Arc<AtomicUsize>) {
        let walks = Arc::new(AtomicUsize::new(0));
        let counted = walks.clone();
        let cache = Box::leak(Box::new(UsageCache::new(Box::new(move |_| {
            std::thread::sleep(delay);
            Ok(1000 + counted.fetch_add(1, Ordering::SeqCst) as u64)
        }))));
        (cache, walks)
    }

    #[test]
    fn the_first_read_waits_for_a_quick_walk_then_reads_are_cached() {
        let (cache, walks) = cache(Duration::ZERO);
        let disk = Path::new("/vps/a/disk");
        assert_eq!(cache.usage(disk), Some(1000));
        assert_eq!(cache.usage(disk), Some(1000));
        assert_eq!(
            walks.load(Ordering::SeqCst),
            1,
            "a fresh figure is not walked again"
        );
    }

    #[test]
    fn a_slow_walk_never_holds_a_read_up() {
        let (cache, walks) = cache(Duration::from_secs(2));
        let disk = Path::new("/vps/big/disk");
        let started = Instant::now();
        assert_eq!(cache.usage(disk), None, "no figure yet");
        assert_eq!(cache.usage(disk), None);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(cache.usage(disk), Some(1000));
        assert_eq!(
            walks.load(Ordering::SeqCst),
            1,
            "one walk at a time per disk"
        );
    }

    #[test]
    fn a_first_read_behind_other_walks_does_not_wait() {
        let (cache, _) = cache(Duration::from_secs(1));
        let started = Instant::now();
        for n in 0..10 {
            cache.usage(&PathBuf::from(format!("/vps/{n}/disk")));
        }
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn an_old_figure_is_returned_at_once_and_walked_again() {
        let (cache, walks) = cache(Duration::from_millis(500));
        let disk = Path::new("/vps/b/disk");
        cache.usage(disk);
        std::thread::sleep(FRESH + Duration::from_millis(600));
        let started = Instant::now();
        assert_eq!(cache.usage(disk), Some(1000), "the old figure, at once");
        assert!(started.elapsed() < Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(cache.usage(disk), Some(1001));
        assert_eq!(walks.load(Ordering::SeqCst), 2);
        cache.forget(disk);
        assert!(cache.lock().known.is_empty());
    }
}
