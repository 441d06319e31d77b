//! The response cache: finished bodies keyed by resource, with a byte budget.
//!
//! A hit is a lookup (a catalog slot, or a hash lookup on demand) and the body where it lies,
//! copied out or cloned by reference count: no database work and no serialization. A miss is
//! filled once however many requests wait for it (quick_cache's placeholder guards make
//! concurrent misses on one key share one database trip); an entry
//! invalidated while its fill is in flight is not inserted, so a fill can never resurrect data
//! older than the invalidation. Eviction is quick_cache's S3-FIFO-like policy, which keeps the
//! hot set when a scan of cold keys passes through.

pub mod fill;
pub mod invalidate;
pub mod key;
pub mod refresh;
pub mod snapshot;
pub mod store;
pub mod sweep;
pub mod warm;

use std::sync::atomic::{AtomicU64, Ordering};

pub use fill::fill;
pub use key::Key;
pub use store::CatalogSize;

use store::Store;

use crate::pg::database::Database;
use crate::pg::DbError;
use crate::render::{Compaction, Rendered, RenderedRef};
use crate::stripes::Counters;

/// [`ResponseCache`]'s lookups counters.
const HITS: usize = 0;
const MISSES: usize = 1;

/// Counters for /metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    /// Entries and bytes of the precomputed catalog (part of `entries` and `bytes`).
    pub catalog_entries: u64,
    pub catalog_bytes: u64,
    /// Stale entries re-rendered and swapped in after a change.
    pub refreshed: u64,
    /// Refreshes under way.
    pub refreshes_pending: u64,
    /// Renders of a product's review lists after helpful votes alone that reused the items
    /// held, reading only what the lists sort by (one a later change superseded included).
    pub revoted: u64,
    /// Those of `revoted` that read the sort keys of the reviews voted on alone, not every
    /// review's.
    pub revoted_by_review: u64,
    /// Renders of a product's questions list after answers alone that reused the items held,
    /// reading only those questions' answers and what the list is ordered by (one a later
    /// change superseded included).
    pub reanswered: u64,
    /// Those of `reanswered` that read one question's sort key alone, not every question's,
    /// and replaced its item where it is (or left the list as it is, where it does not show
    /// the question).
    pub reanswered_in_place: u64,
    /// Changes the feed brought back from this instance's own writes, already refreshed.
    pub own_changes_skipped: u64,
    /// Entries the anti-entropy sweep re-rendered.
    pub swept: u64,
    /// Entries the sweep found different from a fresh render that no change had replaced: each
    /// one is a bug (or a write that bypassed the triggers).
    pub drift: u64,
}

/// How much of the first lists (or whole bodies) a warm-up samples to train a dictionary on:
/// about 800 products' lists at full scale (more measured no better; 2,000 products, 11 MB, trained in
/// a third of a second and packed within 1% of this).
pub const DEFAULT_DICTIONARY_SAMPLE_BYTES: usize = 4 << 20;

pub struct ResponseCache {
    store: Store,
    compaction: Compaction,
    /// How many bytes of each kind a warm-up samples to train a dictionary on (0: none).
    dictionary_sample_bytes: usize,
    /// The part of the catalog this instance precomputes (None: all of it).
    shard: Option<crate::shard::Shard>,
    /// Hits and misses ([`HITS`], [`MISSES`]): counted on every read, so striped.
    lookups: Counters,
    products_generation: AtomicU64,
    /// How many products there are, counted in the generation it names: a page past the last
    /// product is answered without the database (and one count serves every such page).
    products_total: tokio::sync::Mutex<Option<(u64, i64)>>,
    products_counted: AtomicU64,
    swept: AtomicU64,
    drift: AtomicU64,
    /// Where stale entries go to be re-rendered (see [`refresh`]); None: they are dropped.
    refresh_tx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Key>>>,
    /// The keys whose refresh is under way, with the number of their latest change.
    refreshing: std::sync::Mutex<std::collections::HashMap<Key, refresh::Pending>>,
    refresh_numbers: AtomicU64,
    refreshed: AtomicU64,
    revoted: AtomicU64,
    revoted_by_review: AtomicU64,
    reanswered: AtomicU64,
    reanswered_in_place: AtomicU64,
    refresh_done: tokio::sync::Notify,
    /// What was invalidated since a warm-up began (see [`warm`]); None when none runs.
    warming: std::sync::Mutex<Option<Invalidated>>,
    warming_on: std::sync::atomic::AtomicBool,
    /// This instance's recent writes, which the feed need not refresh again.
    own_writes: invalidate::OwnWrites,
    own_changes_skipped: AtomicU64,
    /// Times the cache was emptied (counted before it is): a snapshot written meanwhile is
    /// thrown away.
    clears: AtomicU64,
    /// Set while a restored catalog is not yet brought current by the change feed: reads
    /// then go to the database (see [`snapshot`]).
    restoring: std::sync::atomic::AtomicBool,
}

/// Keys invalidated while a warm-up runs.
#[derive(Default)]
struct Invalidated {
    keys: std::collections::HashSet<Key>,
    everything: bool,
}

impl ResponseCache {
    /// A cache holding up to `capacity_bytes` of bodies and keys, its catalog compacted as far
    /// as [`Compaction::All`] goes.
    pub fn new(capacity_bytes: u64) -> ResponseCache {
        ResponseCache::with_compaction(capacity_bytes, Compaction::All)
    }

    /// A cache holding up to `capacity_bytes`, its catalog compacted as far as `compaction`
    /// goes.
    pub fn with_compaction(capacity_bytes: u64, compaction: Compaction) -> ResponseCache {
        ResponseCache {
            compaction,
            dictionary_sample_bytes: DEFAULT_DICTIONARY_SAMPLE_BYTES,
            shard: None,
            store: Store::new(capacity_bytes),
            lookups: Counters::new(2),
            products_generation: AtomicU64::new(0),
            products_total: tokio::sync::Mutex::new(None),
            products_counted: AtomicU64::new(0),
            swept: AtomicU64::new(0),
            drift: AtomicU64::new(0),
            refresh_tx: std::sync::Mutex::new(None),
            refreshing: std::sync::Mutex::new(Default::default()),
            refresh_numbers: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
            revoted: AtomicU64::new(0),
            revoted_by_review: AtomicU64::new(0),
            reanswered: AtomicU64::new(0),
            reanswered_in_place: AtomicU64::new(0),
            refresh_done: tokio::sync::Notify::new(),
            warming: std::sync::Mutex::new(None),
            warming_on: std::sync::atomic::AtomicBool::new(false),
            own_writes: Default::default(),
            own_changes_skipped: AtomicU64::new(0),
            clears: AtomicU64::new(0),
            restoring: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same cache, its warm-up sampling `bytes` of lists (and, dense, of whole bodies) to
    /// train the process's dictionaries on, if it has none yet (0: none is trained; one
    /// restored with a snapshot, or trained by another cache of the process, is still used).
    pub fn with_dictionary_sample(mut self, bytes: usize) -> ResponseCache {
        self.dictionary_sample_bytes = bytes;
        self
    }

    /// The same cache, precomputing only the products and questions `shard` holds.
    pub fn sharded(mut self, shard: Option<crate::shard::Shard>) -> ResponseCache {
        self.shard = shard;
        self
    }

    /// Runs `f` with the warm-up's record of invalidations, if a warm-up runs, holding the lock
    /// the warm-up inserts under: an invalidation is either recorded before the warm-up's
    /// insert of that key (which then skips it), or removes what it inserted.
    fn while_warming<T>(&self, f: impl FnOnce(Option<&mut Invalidated>) -> T) -> T {
        if !self.warming_on.load(Ordering::SeqCst) {
            return f(None);
        }
        match self.warming.lock() {
            Ok(mut guard) => f(guard.as_mut()),
            Err(_) => f(None),
        }
    }

    /// The key of one page of the products list, in the list's current generation.
    pub fn products_page_key(&self, limit: i64, offset: i64) -> Key {
        Key::ProductsPage {
            generation: self.products_generation.load(Ordering::Acquire),
            limit,
            offset,
        }
    }

    /// How many products there are in the products list's current generation, counted once
    /// per generation (concurrent callers wait for the one count, at most as long as a read
    /// may take: while the database is down, they must not count one after another).
    pub async fn products_total(&self, db: &Database) -> Result<i64, DbError> {
        let mut known = tokio::time::timeout(db.read_limit(), self.products_total.lock())
            .await
            .map_err(|_| {
                DbError::Unavailable("timed out waiting for a count of the products".into())
            })?;
        let generation = self.products_generation.load(Ordering::Acquire);
        if let Some((counted_in, total)) = *known {
            if counted_in == generation {
                return Ok(total);
            }
        }
        let total = db
            .read(|pool| pool.run(|c| async move { crate::pg::read::product_count(&c).await }))
            .await?;
        self.products_counted.fetch_add(1, Ordering::Relaxed);
        // Counted in `generation`: a product change since started another, and the next
        // caller counts again.
        *known = Some((generation, total));
        Ok(total)
    }

    /// How many times the products have been counted (see [`Self::products_total`]).
    pub fn products_counted(&self) -> u64 {
        self.products_counted.load(Ordering::Relaxed)
    }

    /// The keys of every entry now in the cache (a snapshot; entries come and go meanwhile).
    pub fn keys(&self) -> Vec<Key> {
        self.store.keys()
    }

    /// The entry for `key`, if the cache holds one, without filling it or counting a hit.
    pub fn peek(&self, key: &Key) -> Option<Rendered> {
        self.store.peek(key)
    }

    /// Whether `key` is one a request could look up now (a products page of the current
    /// generation, or any other key).
    pub fn is_current(&self, key: &Key) -> bool {
        match key {
            Key::ProductsPage { generation, .. } => {
                *generation == self.products_generation.load(Ordering::Acquire)
            }
            _ => true,
        }
    }

    /// Makes every cached page of the products list (and every fill of one in flight)
    /// unreachable.
    fn next_products_generation(&self) {
        self.products_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// What `f` makes of the entry for `key`, borrowed where it lies, if the cache holds it
    /// now, counted as a hit; `None` (counting nothing, `f` not called) when it does not, or
    /// while a restored catalog may still be behind the feed: the caller then asks
    /// [`Self::get`], which counts the miss. For a reader that copies the entry's bytes out:
    /// a catalog entry is not cloned.
    pub fn hit_with<R>(&self, key: &Key, f: impl FnOnce(RenderedRef<'_>) -> R) -> Option<R> {
        if self.restoring.load(Ordering::Acquire) {
            return None;
        }
        let made = self.store.with_held(key, f)?;
        self.lookups.add(HITS, 1);
        Some(made)
    }

    /// The entry for `key`, filling it from the database on a miss.
    ///
    /// A request waiting for another's fill of the same key waits at most as long as a read may
    /// take ([`Database::read_limit`]): when the database is down, a queue of waiters must not
    /// retry one after another.
    pub async fn get(&self, key: &Key, db: &Database) -> Result<Rendered, DbError> {
        if self.restoring.load(Ordering::Acquire) {
            // A restored body may predate changes the feed has not replayed yet.
            self.lookups.add(MISSES, 1);
            return db.read(|pool| fill(key, pool)).await;
        }
        let lookup = crate::task::within(db.read_limit(), self.store.get_or_guard(key))
            .await
            .map_err(|_| {
                DbError::Unavailable("timed out waiting for a fill of the same resource".into())
            })?;
        match lookup {
            Ok(entry) => {
                self.lookups.add(HITS, 1);
                Ok(entry)
            }
            Err(guard) => {
                self.lookups.add(MISSES, 1);
                // On error the guard is dropped unfilled and a waiting request tries again.
                let entry = db.read(|pool| fill(key, pool)).await?;
                let _ = guard.insert(entry.clone());
                Ok(entry)
            }
        }
    }

    /// Puts a rendered entry in the cache (replacing any): in the catalog if it has the key's
    /// slot and room for it, in the on-demand cache otherwise. Nothing is compacted here.
    pub fn insert(&self, key: Key, entry: Rendered) {
        self.store.insert(key, entry);
    }

    /// Opens an empty precomputed catalog for tables of `size`, dropping any held: what a
    /// warm-up does first. Public for benches.
    pub fn open_catalog(&self, size: CatalogSize) {
        self.store.open_catalog(size);
    }

    /// Puts `body` in the precomputed catalog as a warm-up does, outside of any warm-up;
    /// false if the catalog cannot take it. Public for benches.
    pub fn precompute(&self, key: Key, body: Rendered) -> bool {
        let body = self.compact(&key, body);
        matches!(
            self.store.insert_precomputed(key, body),
            store::Precomputed::Stored
        )
    }

    /// `key`'s `body` compacted for the catalog, as far as this cache's [`Compaction`] goes.
    pub(crate) fn compact(&self, key: &Key, body: Rendered) -> Rendered {
        // A list still to pack takes as they are the runs the body it replaces holds of the
        // same items; nothing else has a use for that body.
        let previous = match &body {
            Rendered::List(list) if !list.is_compacted() => self.store.peek(key),
            _ => None,
        };
        body.compacted_over(
            self.compaction,
            key.frame(),
            key.codes_kind(),
            previous.as_ref(),
        )
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.clears.fetch_add(1, Ordering::AcqRel);
        self.while_warming(|warming| {
            if let Some(w) = warming {
                w.everything = true;
            }
            // A refresh that read before now must not swap its body into the emptied cache.
            self.abandon_refreshes();
            self.store.clear();
            // Everything may have changed (a bulk load): the products list too, and its count.
            self.next_products_generation();
        });
    }

    /// Lets go of the precomputed catalog without freeing its memory: for a process about to
    /// exit, and for nothing else (the memory is never freed). Counted as an emptying, so that
    /// a snapshot still being written (a periodic one that began during the drain) is thrown
    /// away rather than renamed over the good one with the bodies it no longer finds left out.
    pub fn abandon_catalog_for_exit(&self) {
        self.clears.fetch_add(1, Ordering::AcqRel);
        self.store.abandon_catalog_for_exit();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.lookups.sum(HITS),
            misses: self.lookups.sum(MISSES),
            evictions: self.store.evictions(),
            entries: self.store.entries(),
            bytes: self.store.bytes(),
            capacity_bytes: self.store.capacity(),
            catalog_entries: self.store.catalog_entries(),
            catalog_bytes: self.store.catalog_bytes(),
            refreshed: self.refreshed.load(Ordering::Relaxed),
            own_changes_skipped: self.own_changes_skipped.load(Ordering::Relaxed),
            revoted: self.revoted.load(Ordering::Relaxed),
            revoted_by_review: self.revoted_by_review.load(Ordering::Relaxed),
            reanswered: self.reanswered.load(Ordering::Relaxed),
            reanswered_in_place: self.reanswered_in_place.load(Ordering::Relaxed),
            refreshes_pending: self.refreshes_pending() as u64,
            swept: self.swept.load(Ordering::Relaxed),
            drift: self.drift.load(Ordering::Relaxed),
        }
    }
}
