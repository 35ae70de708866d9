//! The repository's aggregate cache: each aggregate's state and version, kept between
//! commands, least recently used first out, bounded by entries and by bytes.
//!
//! Every aggregate has a slot with an async lock. A command holds its aggregate's lock
//! from loading to appending, so commands on one aggregate in one process run one
//! after another (single flight) instead of racing each other to a conflict. The
//! cache is never trusted for correctness: a command appends with the version its
//! state is at, and the store refuses it if another writer got there first; the
//! repository then reads only the events it missed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use tokio::sync::Mutex as AsyncMutex;

use super::Loaded;
use crate::backend::Waiters;
use crate::stream::StreamId;

/// How a repository keeps aggregates in memory between commands
/// ([`Repository::with_cache`](super::Repository::with_cache)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Most aggregates kept (default 10,000).
    pub max_entries: usize,
    /// Most bytes kept, as the repository weighs its aggregates (default 64 MiB; see
    /// [`Repository::weigh_with`](super::Repository::weigh_with)).
    pub max_bytes: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_entries: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// What the cache holds of one aggregate: its state once loaded, and the lock its
/// commands take turns on.
pub(super) struct Slot<A> {
    pub(super) loaded: AsyncMutex<Option<Loaded<A>>>,
    /// The commands waiting for the turn.
    pub(super) waiters: Arc<Waiters>,
    /// Bytes this slot counts for in the cache's total.
    weight: AtomicUsize,
}

/// A command's turn on an aggregate: its slot's lock, held until the turn drops, when
/// the state left in [`held`](Turn::held) is weighed into the cache, or the slot
/// released if there is none. Dropping it is also what happens to a command that panics
/// or whose future is dropped midway: the slot never stays locked or counted.
pub(super) struct Turn<'c, A> {
    cache: &'c Cache<A>,
    stream: &'c StreamId,
    slot: &'c Arc<Slot<A>>,
    weigh: fn(&A) -> usize,
    pub(super) held: tokio::sync::MutexGuard<'c, Option<Loaded<A>>>,
}

impl<A> Drop for Turn<'_, A> {
    fn drop(&mut self) {
        if !self.cache.keeps {
            *self.held = None;
        }
        match self.held.as_ref() {
            Some(loaded) => self.cache.weigh(self.stream, self.slot, (self.weigh)(&loaded.state)),
            None => self.cache.release(self.stream, self.slot),
        }
    }
}

/// The cache of one repository (shared by its clones).
pub(super) struct Cache<A> {
    options: CacheOptions,
    /// Whether states are kept between commands; without, slots live only while
    /// commands use them, for single flight.
    keeps: bool,
    entries: Mutex<Entries<A>>,
}

struct Entries<A> {
    slots: LruCache<StreamId, Arc<Slot<A>>>,
    bytes: usize,
}

impl<A> Cache<A> {
    /// A cache that keeps states within `options`' bounds.
    pub(super) fn new(options: CacheOptions) -> Self {
        Self::with(options, true)
    }

    /// Slots for single flight only: no state outlives its command.
    pub(super) fn single_flight() -> Self {
        let unbounded = CacheOptions {
            max_entries: usize::MAX,
            max_bytes: usize::MAX,
        };
        Self::with(unbounded, false)
    }

    fn with(options: CacheOptions, keeps: bool) -> Self {
        Cache {
            options,
            keeps,
            entries: Mutex::new(Entries {
                slots: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries<A>> {
        // Nothing leaves the entries half-changed across a panic.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slot of `stream`, made the most recently used; a new, empty one when the
    /// cache had none.
    pub(super) fn slot(&self, stream: &StreamId) -> Arc<Slot<A>> {
        let mut entries = self.entries();
        if let Some(slot) = entries.slots.get(stream) {
            return slot.clone();
        }
        let weight = key_weight(stream);
        let slot = Arc::new(Slot {
            loaded: AsyncMutex::new(None),
            waiters: Arc::default(),
            weight: AtomicUsize::new(weight),
        });
        entries.slots.put(stream.clone(), slot.clone());
        entries.bytes += weight;
        self.evict(&mut entries);
        slot
    }

    /// Records that `slot` of `stream` now weighs `state` bytes besides its key, and
    /// evicts what no longer fits. A slot evicted meanwhile counts no more.
    pub(super) fn weigh(&self, stream: &StreamId, slot: &Arc<Slot<A>>, state: usize) {
        let weight = key_weight(stream) + state;
        let mut entries = self.entries();
        let current = entries.slots.peek(stream).is_some_and(|held| Arc::ptr_eq(held, slot));
        if !current {
            return;
        }
        let before = slot.weight.swap(weight, Ordering::Relaxed);
        entries.bytes = entries.bytes - before + weight;
        self.evict(&mut entries);
    }

    /// Waits for the turn on `stream`'s slot (single flight). A command that has to
    /// wait calls `waits` first, and counts among the slot's waiters meanwhile.
    pub(super) async fn turn<'c>(
        &'c self,
        stream: &'c StreamId,
        slot: &'c Arc<Slot<A>>,
        weigh: fn(&A) -> usize,
        waits: impl FnOnce(),
    ) -> Turn<'c, A> {
        let held = match slot.loaded.try_lock() {
            Ok(held) => held,
            Err(_) => {
                let _waiting = slot.waiters.join();
                waits();
                slot.loaded.lock().await
            }
        };
        Turn {
            cache: self,
            stream,
            slot,
            weigh,
            held,
        }
    }

    /// Drops `stream`'s slot, which holds no state, unless other commands wait on it
    /// (they would otherwise find a new slot beside this one).
    pub(super) fn release(&self, stream: &StreamId, slot: &Arc<Slot<A>>) {
        let mut entries = self.entries();
        let held = entries.slots.peek(stream).is_some_and(|held| Arc::ptr_eq(held, slot));
        // Two references: the cache's and the caller's.
        if held && Arc::strong_count(slot) == 2 {
            entries.slots.pop(stream);
            entries.bytes -= slot.weight.load(Ordering::Relaxed);
        }
    }

    /// Drops least recently used slots until the bounds hold, keeping the most recent
    /// one whatever it weighs. A command holding an evicted slot finishes on it; the
    /// next command on that aggregate loads it again.
    fn evict(&self, entries: &mut Entries<A>) {
        while entries.slots.len() > 1
            && (entries.slots.len() > self.options.max_entries || entries.bytes > self.options.max_bytes)
        {
            match entries.slots.pop_lru() {
                Some((_, slot)) => entries.bytes -= slot.weight.load(Ordering::Relaxed),
                None => break,
            }
        }
    }

    /// Aggregates and bytes held now.
    #[cfg(test)]
    pub(super) fn size(&self) -> (usize, usize) {
        let entries = self.entries();
        (entries.slots.len(), entries.bytes)
    }
}

/// What a slot costs besides its aggregate's state: its key and bookkeeping.
fn key_weight(stream: &StreamId) -> usize {
    stream.as_str().len() + 96
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> StreamId {
        StreamId::new(format!("acct-{n}")).expect("id")
    }

    #[test]
    fn least_recently_used_goes_first_within_both_bounds() {
        let cache: Cache<u64> = Cache::new(CacheOptions {
            max_entries: 3,
            max_bytes: usize::MAX,
        });
        let slots: Vec<_> = (0..3).map(|n| cache.slot(&id(n))).collect();
        let again = cache.slot(&id(0));
        assert!(Arc::ptr_eq(&again, &slots[0]), "a held aggregate is found again");
        cache.slot(&id(3));
        // acct-1 was the least recently used.
        assert!(!Arc::ptr_eq(&cache.slot(&id(1)), &slots[1]), "acct-1 was not evicted");
        assert_eq!(cache.size().0, 3);

        let cache: Cache<u64> = Cache::new(CacheOptions {
            max_entries: 100,
            max_bytes: 1_500,
        });
        let heavy = cache.slot(&id(0));
        cache.weigh(&id(0), &heavy, 600);
        let light = cache.slot(&id(1));
        cache.weigh(&id(1), &light, 300);
        assert_eq!(cache.size(), (2, key_weight(&id(0)) + 600 + key_weight(&id(1)) + 300));
        cache.weigh(&id(1), &light, 900);
        let (entries, bytes) = cache.size();
        assert_eq!(
            (entries, bytes),
            (1, key_weight(&id(1)) + 900),
            "the bytes bound evicts the least recently used"
        );
        assert!(Arc::ptr_eq(&cache.slot(&id(1)), &light));
        cache.weigh(&id(0), &heavy, 10_000);
        assert_eq!(
            cache.size().1,
            key_weight(&id(1)) + 900,
            "an evicted slot counts no more"
        );
        cache.release(&id(1), &light);
        assert_eq!(cache.size(), (0, 0));

        // Without keeping, a slot lives while commands use it.
        let cache: Cache<u64> = Cache::single_flight();
        let first = cache.slot(&id(0));
        let waiting = cache.slot(&id(0));
        assert!(Arc::ptr_eq(&first, &waiting), "commands on one aggregate share a slot");
        cache.release(&id(0), &first);
        assert_eq!(cache.size().0, 1, "released while another command waits on it");
        drop(first);
        cache.release(&id(0), &waiting);
        assert_eq!(cache.size(), (0, 0));
    }

    /// A command that finds its aggregate free does not wait; one that does is
    /// announced once and counts among the slot's waiters until it has the turn, or
    /// is given up.
    #[tokio::test]
    async fn only_a_command_that_waits_is_announced_and_counted() {
        let cache: Cache<u64> = Cache::new(CacheOptions::default());
        let announced = AtomicUsize::new(0);
        let announce = || {
            announced.fetch_add(1, Ordering::SeqCst);
        };
        let stream = id(0);
        let slot = cache.slot(&stream);
        let waiting = || slot.waiters.count();
        let first = cache.turn(&stream, &slot, |_| 8, announce).await;
        assert_eq!(
            (announced.load(Ordering::SeqCst), waiting()),
            (0, 0),
            "a free aggregate"
        );

        let mut second = Box::pin(cache.turn(&stream, &slot, |_| 8, announce));
        assert!(futures::poll!(second.as_mut()).is_pending());
        let mut third = Box::pin(cache.turn(&stream, &slot, |_| 8, announce));
        assert!(futures::poll!(third.as_mut()).is_pending());
        assert_eq!((announced.load(Ordering::SeqCst), waiting()), (2, 2), "two wait");
        drop(third);
        assert_eq!(waiting(), 1, "a command given up no longer waits");

        drop(first);
        let second = second.await;
        assert_eq!(
            (announced.load(Ordering::SeqCst), waiting()),
            (2, 0),
            "the turn passed on"
        );
        drop(second);
    }
}
