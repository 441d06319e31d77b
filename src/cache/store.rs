//! Where the cache keeps its entries: the precomputed catalog in slots indexed by id, which a
//! read reaches without taking any lock, and the on-demand cache (quick_cache) for the rest.
//!
//! The catalog is a fixed array of `arc-swap` slots per kind of body, sized by the largest
//! product and question ids when a warm-up opens it: a whole body's slot holds it as one
//! allocation ([`Kept`]), a list's slot the [`ItemList`] itself. A hit there is two atomic loads (and a
//! reference count for a reader that keeps the body); a refresh swaps a slot's body for a new
//! one, so a reader gets the old body or the new one and never waits. `benches/hit_path.rs`
//! measured the slot against quick_cache's hit (72 ns against 152 ns a lookup;
//! docs/benchmarks.md).
//! Catalog entries are never
//! evicted: the warm-up fills the catalog in priority order up to nine tenths of the budget,
//! and the on-demand cache, with the remaining tenth (or what the catalog leaves once the
//! warm-up is done), holds what did not fit, products created since, products pages and carts.
//! Without a catalog (`--precompute none`, or after a reset until the next warm-up) the
//! on-demand cache has the whole budget.
//!
//! The catalog's bodies are compacted by whoever puts them in (`--compress`,
//! [`Rendered::compacted_as`]): whole bodies gzip-compressed, sent as they are to clients that
//! accept gzip (or, dense, packed against a dictionary), and lists packed.
//!
//! A key lives in one place at a time: a body put in the catalog is removed from the
//! on-demand cache (which also cancels a fill of it in flight), and a body put in for a key the
//! catalog has a slot for goes to the catalog while the catalog's share of the budget lasts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwapAny, ArcSwapOption, RefCnt};

use super::Key;
use crate::domain::ReviewOrder;
use crate::render::kept::{self, Kept};
use crate::render::{ItemList, Rendered, RenderedRef, SharedList};

/// What an on-demand entry costs besides its body: its key and bookkeeping.
const ENTRY_OVERHEAD: u64 = 72;

/// What a catalog slot holds a whole body (or a 404) in.
type BodySlot = ArcSwapAny<Option<Kept>>;

/// What a catalog slot holds a list in.
type ListSlot = ArcSwapAny<Option<SharedList>>;

/// What a whole body in the catalog costs besides its bytes: its slot's pointer and the head
/// in front of the bytes.
const KEPT_OVERHEAD: u64 = (std::mem::size_of::<BodySlot>() + kept::HEAD_BYTES) as u64;

/// The catalog's share of the budget, in tenths.
const CATALOG_TENTHS: u64 = 9;

#[derive(Clone)]
pub(crate) struct Weigher;

impl quick_cache::Weighter<Key, Rendered> for Weigher {
    fn weight(&self, key: &Key, value: &Rendered) -> u64 {
        weight(key, value)
    }
}

fn weight(key: &Key, value: &Rendered) -> u64 {
    ENTRY_OVERHEAD + (key.weight() + value.weight()) as u64
}

/// What a catalog entry weighs: its slot holds no key. A list's slot holds the list's own box,
/// which the list's weight counts already ([`Rendered::weight`]): the slot adds its pointer.
/// A whole body is kept with its head ([`kept_weight`]).
fn catalog_weight(value: &Rendered) -> u64 {
    const SLOT: u64 = std::mem::size_of::<ListSlot>() as u64;
    match value {
        Rendered::List(_) => SLOT + value.weight() as u64,
        _ => KEPT_OVERHEAD + value.weight() as u64,
    }
}

/// What a whole body's slot holds weighs, as [`catalog_weight`] weighed the body put in.
fn kept_weight(body: &Kept) -> u64 {
    KEPT_OVERHEAD + kept::bytes(body).len() as u64
}

#[derive(Clone, Default)]
pub(crate) struct EvictionCounter(Arc<AtomicU64>);

impl quick_cache::Lifecycle<Key, Rendered> for EvictionCounter {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Key, _value: Rendered) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type OnDemand = quick_cache::sync::Cache<
    Key,
    Rendered,
    Weigher,
    quick_cache::DefaultHashBuilder,
    EvictionCounter,
>;

/// A fill's claim on a key missing from both places: insert through it, or drop it.
pub(crate) type FillGuard<'a> = quick_cache::sync::PlaceholderGuard<
    'a,
    Key,
    Rendered,
    Weigher,
    quick_cache::DefaultHashBuilder,
    EvictionCounter,
>;

/// The kinds of body the catalog holds, one slot array each.
pub(crate) const SLOT_KINDS: usize = 8;

/// The slot arrays of a product's reviews in each order.
pub(crate) const REVIEWS_HELPFUL: usize = 4;
pub(crate) const REVIEWS_NEWEST: usize = 5;

/// The slot array and index of `key`'s body, if the catalog can hold it.
fn slot_of(key: &Key) -> Option<(usize, i64)> {
    Some(match *key {
        Key::Product(id) => (0, id),
        Key::Styles(id) => (1, id),
        Key::Related(id) => (2, id),
        Key::ReviewsMeta(id) => (3, id),
        Key::Reviews {
            product_id,
            order: ReviewOrder::Helpful,
        } => (REVIEWS_HELPFUL, product_id),
        Key::Reviews {
            product_id,
            order: ReviewOrder::Newest,
        } => (REVIEWS_NEWEST, product_id),
        Key::Questions(id) => (6, id),
        Key::Answers(id) => (7, id),
        Key::ProductsPage { .. } | Key::Cart(_) => return None,
    })
}

/// The key of slot `index` of array `kind`.
pub(crate) fn key_of(kind: usize, index: usize) -> Key {
    let id = index as i64;
    match kind {
        0 => Key::Product(id),
        1 => Key::Styles(id),
        2 => Key::Related(id),
        3 => Key::ReviewsMeta(id),
        REVIEWS_HELPFUL => Key::Reviews {
            product_id: id,
            order: ReviewOrder::Helpful,
        },
        REVIEWS_NEWEST => Key::Reviews {
            product_id: id,
            order: ReviewOrder::Newest,
        },
        6 => Key::Questions(id),
        _ => Key::Answers(id),
    }
}

/// The first slot array of lists: from here on a slot holds the list's [`ItemList`] itself,
/// not a [`Rendered`] around it. That is one allocation (64 bytes) fewer a list, of 6.5
/// million at full scale.
const FIRST_LIST_KIND: usize = REVIEWS_HELPFUL;

/// The precomputed catalog's slots: whole bodies (and 404s) by kind, then lists by kind.
struct Catalog {
    bodies: [Box<[BodySlot]>; FIRST_LIST_KIND],
    lists: [Box<[ListSlot]>; SLOT_KINDS - FIRST_LIST_KIND],
    /// Dropped with the catalog: a test's way to see which thread frees it.
    #[cfg(test)]
    freed_with: std::sync::Mutex<Option<tests::Tattletale>>,
}

impl Catalog {
    fn slot(&self, key: &Key) -> Option<Slot<'_>> {
        let (kind, id) = slot_of(key)?;
        let index = usize::try_from(id).ok()?;
        match kind.checked_sub(FIRST_LIST_KIND) {
            None => self.bodies[kind].get(index).map(Slot::Body),
            Some(list) => self.lists[list].get(index).map(Slot::List),
        }
    }

    /// How many slots array `kind` has.
    fn len(&self, kind: usize) -> usize {
        match kind.checked_sub(FIRST_LIST_KIND) {
            None => self.bodies[kind].len(),
            Some(list) => self.lists[list].len(),
        }
    }
}

/// The one empty list a warm-up or a restore puts in every empty list's slot: a fifth of the
/// catalog's lists are empty at full scale (a question with no answers, a product with no
/// reviews or questions), and each would otherwise hold a box of its own. A refresh puts in a
/// box of its own, so that an empty list replaced and then emptied again is a new value
/// ([`Rendered::is_same_value`]): the sweep must not take a list emptied again for the one
/// it judged.
static EMPTY_LIST: std::sync::LazyLock<SharedList> =
    std::sync::LazyLock::new(|| SharedList::new(ItemList::default()));

/// An entry read out by [`Store::peek_held`]: a catalog body with a count on what its slot
/// holds (which tells it from a body refreshed into the slot since) and a copy to read, or a
/// list or an on-demand entry, cloned.
#[derive(Debug)]
pub(crate) enum Held {
    Shared { kept: Kept, body: Rendered },
    Cloned(Rendered),
}

impl std::ops::Deref for Held {
    type Target = Rendered;

    fn deref(&self) -> &Rendered {
        match self {
            Held::Shared { body, .. } => body,
            Held::Cloned(body) => body,
        }
    }
}

/// Frees `catalog` once no one else holds it: readers that loaded it before it was swapped
/// out let go within a response's time.
fn free_when_unheld(mut catalog: Arc<Catalog>) {
    let mut pause = std::time::Duration::from_micros(100);
    loop {
        match Arc::try_unwrap(catalog) {
            Ok(unheld) => return drop(unheld),
            Err(held) => catalog = held,
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// One slot of the catalog, of either sort.
#[derive(Clone, Copy)]
enum Slot<'a> {
    Body(&'a BodySlot),
    List(&'a ListSlot),
}

impl Slot<'_> {
    /// The body held, if any.
    fn load(self) -> Option<Rendered> {
        match self {
            Slot::Body(slot) => slot.load().as_ref().map(kept::to_rendered),
            Slot::List(slot) => slot.load_full().map(Rendered::List),
        }
    }

    /// The body held, if any, with a count on what the slot holds ([`Store::peek_held`]).
    fn held(self) -> Option<Held> {
        match self {
            Slot::Body(slot) => slot.load_full().map(|kept| Held::Shared {
                body: kept::to_rendered(&kept),
                kept,
            }),
            Slot::List(slot) => slot.load_full().map(|l| Held::Cloned(Rendered::List(l))),
        }
    }

    /// Whether the slot can hold `body`: a list's slot holds lists only (the 404 of a
    /// question that does not exist is kept on demand), a whole body's slot anything else.
    fn fits(self, body: &Rendered) -> bool {
        matches!(body, Rendered::List(_)) == matches!(self, Slot::List(_))
    }

    /// Puts `body` in (one that does not fit empties the slot: callers check
    /// [`Slot::fits`] first); returns the catalog weight of what was there.
    fn swap(self, body: Option<Rendered>) -> Option<u64> {
        match self {
            Slot::Body(slot) => slot
                .swap(body.as_ref().and_then(kept::keep))
                .map(|old| kept_weight(&old)),
            Slot::List(slot) => {
                let list = match body {
                    Some(Rendered::List(list)) => Some(list),
                    _ => None,
                };
                slot.swap(list)
                    .map(|old| catalog_weight(&Rendered::List(old)))
            }
        }
    }

    /// Empties the slot if `f` says so of its body; returns the emptied body's weight.
    fn take_if(self, f: impl Fn(&Rendered) -> bool) -> Option<u64> {
        match self {
            Slot::Body(slot) => take(slot, |now| {
                f(&kept::to_rendered(now)).then(|| kept_weight(now))
            }),
            Slot::List(slot) => take(slot, |list| {
                let body = Rendered::List(SharedList::clone(list));
                f(&body).then(|| catalog_weight(&body))
            }),
        }
    }

    /// Empties the slot if it still holds the very allocation `body` ([`Store::peek_held`]);
    /// returns the emptied body's weight.
    fn take_if_box(self, body: &Kept) -> Option<u64> {
        match self {
            Slot::Body(slot) => take(slot, |now| {
                kept::is_same(now, body).then(|| kept_weight(now))
            }),
            Slot::List(_) => None,
        }
    }

    /// Whether the slot holds a body.
    fn is_filled(self) -> bool {
        match self {
            Slot::Body(slot) => slot.load().is_some(),
            Slot::List(slot) => slot.load().is_some(),
        }
    }

    /// The catalog weight of what the slot holds (0 when empty).
    fn held_weight(self) -> u64 {
        match self {
            Slot::Body(slot) => slot.load().as_ref().map_or(0, kept_weight),
            Slot::List(slot) => slot
                .load_full()
                .map_or(0, |list| catalog_weight(&Rendered::List(list))),
        }
    }
}

/// Empties `slot` if `weigh_if` gives its value a weight, and it is still that value; returns
/// that weight.
fn take<P: RefCnt>(
    slot: &ArcSwapAny<Option<P>>,
    weigh_if: impl Fn(&P) -> Option<u64>,
) -> Option<u64> {
    let current = slot.load_full();
    let weight = weigh_if(current.as_ref()?)?;
    let previous = slot.compare_and_swap(&current, None);
    let same = matches!((&*previous, &current), (Some(a), Some(b)) if P::as_ptr(a) == P::as_ptr(b));
    same.then_some(weight)
}

/// The most slots an array gets per row of its table: ids far sparser than that are served
/// from the on-demand cache rather than given memory they would mostly leave empty.
const SLOTS_PER_ROW: u64 = 4;

/// How many slots to give ids up to `max_id` of a table of `rows` rows.
fn slot_count(max_id: i64, rows: i64) -> usize {
    let wanted = u64::try_from(max_id).map_or(0, |m| m.saturating_add(1));
    let allowed = u64::try_from(rows)
        .unwrap_or(0)
        .saturating_mul(SLOTS_PER_ROW)
        .saturating_add(1024);
    usize::try_from(wanted.min(allowed)).unwrap_or(0)
}

/// The sizes of the tables a catalog is opened for.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogSize {
    pub products: i64,
    pub max_product_id: i64,
    pub questions: i64,
    pub max_question_id: i64,
}

/// What became of a body offered to the catalog.
pub(crate) enum Precomputed {
    Stored,
    /// The catalog has no slot for the key (no catalog, a products page or a cart, or an id
    /// past the slots): the body is handed back.
    NoSlot(Key, Rendered),
    /// The catalog's share of the budget is spent.
    Full,
}

impl Precomputed {
    #[cfg(test)]
    fn stored(&self) -> bool {
        matches!(self, Precomputed::Stored)
    }
}

pub(crate) struct Store {
    on_demand: OnDemand,
    evictions: EvictionCounter,
    catalog: ArcSwapOption<Catalog>,
    catalog_entries: AtomicU64,
    catalog_bytes: AtomicU64,
    capacity: u64,
}

impl Store {
    pub(crate) fn new(capacity_bytes: u64) -> Store {
        let evictions = EvictionCounter::default();
        let estimated_items = (capacity_bytes / 2048).clamp(1024, 10_000_000) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated_items)
            .weight_capacity(capacity_bytes)
            .build()
            .unwrap_or_else(|_| unreachable!("both required options are set"));
        Store {
            on_demand: OnDemand::with_options(
                options,
                Weigher,
                Default::default(),
                evictions.clone(),
            ),
            evictions,
            catalog: ArcSwapOption::empty(),
            catalog_entries: AtomicU64::new(0),
            catalog_bytes: AtomicU64::new(0),
            capacity: capacity_bytes,
        }
    }

    /// The catalog's body for `key`, if it holds one: no lock, no wait.
    fn catalog_body(&self, key: &Key) -> Option<Rendered> {
        let catalog = self.catalog.load();
        catalog.as_ref()?.slot(key)?.load()
    }

    /// The body for `key`, or a guard through which the caller fills it (other requests for
    /// the key wait for that fill).
    pub(crate) async fn get_or_guard(&self, key: &Key) -> Result<Rendered, FillGuard<'_>> {
        if let Some(body) = self.catalog_body(key) {
            return Ok(body);
        }
        self.on_demand.get_value_or_guard_async(key).await
    }

    /// Calls `f` with the body for `key` if it is held now (no fill, no wait: a fill in flight
    /// is a miss), borrowed where it lies: a catalog body is not copied out of its slot, nor
    /// is a count taken on it.
    pub(crate) fn with_held<R>(
        &self,
        key: &Key,
        f: impl FnOnce(RenderedRef<'_>) -> R,
    ) -> Option<R> {
        {
            let catalog = self.catalog.load();
            match catalog.as_ref().and_then(|c| c.slot(key)) {
                Some(Slot::Body(slot)) => {
                    if let Some(body) = slot.load().as_ref() {
                        return Some(f(RenderedRef::Kept(body)));
                    }
                }
                Some(Slot::List(slot)) => {
                    if let Some(list) = slot.load().as_deref() {
                        return Some(f(RenderedRef::List(list)));
                    }
                }
                None => {}
            }
        }
        let entry = self.on_demand.get(key)?;
        Some(f(RenderedRef::from(&entry)))
    }

    pub(crate) fn peek(&self, key: &Key) -> Option<Rendered> {
        self.catalog_body(key).or_else(|| self.on_demand.peek(key))
    }

    /// The body for `key` for a reader that keeps it a while (the sweep, the snapshot): a
    /// catalog body with a count on what its slot holds, which tells it from what a refresh
    /// puts in later, and a copy to read (dropped with it: such a reader reads every body in
    /// turn); an on-demand entry cloned.
    pub(crate) fn peek_held(&self, key: &Key) -> Option<Held> {
        let catalog = self.catalog.load();
        let held = catalog.as_ref().and_then(|c| c.slot(key)?.held());
        // An empty slot's key may be held on demand (past the catalog's share, a 404).
        held.or_else(|| self.on_demand.peek(key).map(Held::Cloned))
    }

    /// Whether the catalog has a slot for `key`: a body put in for it goes there, compacted,
    /// while the catalog's share of the budget lasts.
    pub(crate) fn has_slot(&self, key: &Key) -> bool {
        let catalog = self.catalog.load();
        catalog.as_ref().and_then(|c| c.slot(key)).is_some()
    }

    /// Whether either place holds a body for `key` (a catalog body is not copied to tell).
    pub(crate) fn contains_key(&self, key: &Key) -> bool {
        let catalog = self.catalog.load();
        let in_catalog = catalog
            .as_ref()
            .and_then(|c| c.slot(key))
            .is_some_and(Slot::is_filled);
        // An empty slot's key may be held on demand (past the catalog's share, a 404).
        in_catalog || self.on_demand.contains_key(key)
    }

    /// Puts `body` in for `key`: in the catalog if it has the key's slot and its share of the
    /// budget takes the new body (a body refreshed into a slot a failed render emptied goes
    /// back there), in the on-demand cache otherwise. The caller compacts what may go to the
    /// catalog ([`Rendered::compacted`]); nothing is compressed here, under the callers' locks.
    pub(crate) fn insert(&self, key: Key, body: Rendered) {
        let catalog = self.catalog.load();
        if let Some(slot) = catalog.as_ref().and_then(|c| c.slot(&key)) {
            let (body, weight) = weigh(body);
            let after = self.catalog_bytes.load(Ordering::Relaxed) + weight;
            if slot.fits(&body) && after.saturating_sub(slot.held_weight()) <= self.catalog_room() {
                self.replace_in_catalog(slot, Some((body, weight)));
                self.on_demand.remove(&key);
                return;
            }
            // Grown past the catalog's share, or a list's 404: the key moves to the on-demand
            // cache.
            self.replace_in_catalog(slot, None);
            self.on_demand.insert(key, body);
            return;
        }
        self.on_demand.insert(key, body);
    }

    /// Puts a warm-up's `body` (compacted by the caller) in the catalog, if it can take it.
    pub(crate) fn insert_precomputed(&self, key: Key, body: Rendered) -> Precomputed {
        let catalog = self.catalog.load();
        let Some(slot) = catalog
            .as_ref()
            .and_then(|c| c.slot(&key))
            .filter(|slot| slot.fits(&body))
        else {
            return Precomputed::NoSlot(key, body);
        };
        // An empty list as the one shared box.
        let body = match body {
            Rendered::List(list) if list.is_empty() => {
                Rendered::List(SharedList::clone(&EMPTY_LIST))
            }
            other => other,
        };
        let (body, weight) = weigh(body);
        if self.catalog_bytes.load(Ordering::Relaxed) + weight > self.catalog_share() {
            return Precomputed::Full;
        }
        self.replace_in_catalog(slot, Some((body, weight)));
        // One place at a time (and a fill of it in flight must not land).
        self.on_demand.remove(&key);
        Precomputed::Stored
    }

    fn catalog_share(&self) -> u64 {
        self.capacity / 10 * CATALOG_TENTHS
    }

    /// What the catalog may hold now: the budget less what the on-demand cache was given (a
    /// tenth during a warm-up, what the catalog left once it is done), so that the two
    /// together stay within the budget.
    fn catalog_room(&self) -> u64 {
        self.capacity.saturating_sub(self.on_demand.capacity())
    }

    /// Stores `new` in `slot` (or empties it), keeping the catalog's counts.
    fn replace_in_catalog(&self, slot: Slot<'_>, new: Option<(Rendered, u64)>) {
        let (new, added) = match new {
            Some((body, weight)) => (Some(body), weight),
            None => (None, 0),
        };
        let added_entry = u64::from(new.is_some());
        let old = slot.swap(new);
        self.account(old, added, added_entry);
    }

    /// Counts `added_bytes` and `added_entries` in, and an entry of weight `old` out.
    fn account(&self, old: Option<u64>, added_bytes: u64, added_entries: u64) {
        let (old_bytes, old_entries) = match old {
            Some(weight) => (weight, 1),
            None => (0, 0),
        };
        // Saturating: a catalog dropped meanwhile (its counts reset) must not wrap them.
        let update = |counter: &AtomicU64, add: u64, sub: u64| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some((n + add).saturating_sub(sub))
            });
        };
        update(&self.catalog_bytes, added_bytes, old_bytes);
        update(&self.catalog_entries, added_entries, old_entries);
    }

    pub(crate) fn remove(&self, key: &Key) {
        let catalog = self.catalog.load();
        if let Some(slot) = catalog.as_ref().and_then(|c| c.slot(key)) {
            self.replace_in_catalog(slot, None);
        }
        self.on_demand.remove(key);
    }

    /// Removes `key`'s entry if `f` says so of it; returns whether it did.
    pub(crate) fn remove_if(&self, key: &Key, f: impl Fn(&Rendered) -> bool) -> bool {
        let catalog = self.catalog.load();
        if let Some(slot) = catalog.as_ref().and_then(|c| c.slot(key)) {
            if let Some(weight) = slot.take_if(&f) {
                self.account(Some(weight), 0, 0);
                return true;
            }
        }
        self.on_demand.remove_if(key, |now| f(now)).is_some()
    }

    /// Removes `key`'s entry if it is still the very value `held` ([`Store::peek_held`]);
    /// returns whether it did. A catalog body is told by what its slot holds (one allocation
    /// each), so that a 404 replaced by
    /// another 404 is not taken for the one read; an entry cloned is told as
    /// [`Rendered::is_same_value`] tells it.
    pub(crate) fn remove_if_still(&self, key: &Key, held: &Held) -> bool {
        let Held::Shared { kept: body, .. } = held else {
            return self.remove_if(key, |now| now.is_same_value(held));
        };
        let catalog = self.catalog.load();
        let taken = catalog
            .as_ref()
            .and_then(|c| c.slot(key)?.take_if_box(body));
        if taken.is_some() {
            self.account(taken, 0, 0);
        }
        taken.is_some()
    }

    /// Opens an empty catalog for tables of `size` (dropping any catalog held), and hands
    /// the on-demand cache the remaining tenth of the budget.
    pub(crate) fn open_catalog(&self, size: CatalogSize) {
        let products = slot_count(size.max_product_id, size.products);
        let questions = slot_count(size.max_question_id, size.questions);
        let bodies = std::array::from_fn(|_| empty_slots(products));
        let lists = std::array::from_fn(|list| {
            let kind = FIRST_LIST_KIND + list;
            empty_slots(if kind == 7 { questions } else { products })
        });
        self.drop_catalog();
        self.on_demand
            .set_capacity(self.capacity - self.catalog_share());
        self.catalog.store(Some(Arc::new(Catalog {
            bodies,
            lists,
            #[cfg(test)]
            freed_with: Default::default(),
        })));
    }

    /// Gives the on-demand cache what the catalog leaves of the budget (at least a tenth):
    /// once a warm-up has filled the catalog, for as long as it holds.
    pub(crate) fn settle_budget(&self) {
        let catalog = self
            .catalog_bytes
            .load(Ordering::Relaxed)
            .min(self.catalog_share());
        if self.catalog.load().is_some() {
            self.on_demand.set_capacity(self.capacity - catalog);
        }
    }

    /// Drops the catalog; the on-demand cache gets the whole budget back. Freeing millions of
    /// bodies takes a while: a thread of its own does it, not the caller's, and not a reader's
    /// (a lane hit holds the catalog while it writes its response; were its count the last,
    /// a request's worker would free the catalog).
    fn drop_catalog(&self) {
        if let Some(old) = self.catalog.swap(None) {
            let _ = std::thread::Builder::new()
                .name("atelier-drop-catalog".into())
                .spawn(move || free_when_unheld(old));
        }
        self.catalog_entries.store(0, Ordering::Relaxed);
        self.catalog_bytes.store(0, Ordering::Relaxed);
        self.on_demand.set_capacity(self.capacity);
    }

    pub(crate) fn clear(&self) {
        self.drop_catalog();
        self.on_demand.clear();
    }

    /// Lets go of the catalog without freeing it, for a process about to exit: freeing a
    /// full-scale catalog's ten million bodies one by one kept a stopped instance alive for
    /// another 5 s (docs/benchmarks.md, Warm-up), memory the exit hands back at once. Reads
    /// after it miss, as after [`Store::clear`].
    pub(crate) fn abandon_catalog_for_exit(&self) {
        std::mem::forget(self.catalog.swap(None));
        self.catalog_entries.store(0, Ordering::Relaxed);
        self.catalog_bytes.store(0, Ordering::Relaxed);
    }

    /// The keys of every entry held now (a snapshot; entries come and go meanwhile).
    pub(crate) fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.on_demand.iter().map(|(key, _)| key).collect();
        if let Some(catalog) = self.catalog.load().as_ref() {
            for (kind, slots) in catalog.bodies.iter().enumerate() {
                keys.extend(filled(slots).map(|index| key_of(kind, index)));
            }
            for (list, slots) in catalog.lists.iter().enumerate() {
                keys.extend(filled(slots).map(|index| key_of(FIRST_LIST_KIND + list, index)));
            }
        }
        keys
    }

    /// How many slots each array of the catalog has; None without a catalog.
    pub(crate) fn slot_counts(&self) -> Option<[usize; SLOT_KINDS]> {
        let catalog = self.catalog.load();
        let catalog = catalog.as_ref()?;
        Some(std::array::from_fn(|kind| catalog.len(kind)))
    }

    /// The pages of the products list the on-demand cache holds, in generation `generation`.
    pub(crate) fn products_pages(&self, generation: u64) -> Vec<(i64, i64, Rendered)> {
        self.on_demand
            .iter()
            .filter_map(|(key, body)| match key {
                Key::ProductsPage {
                    generation: g,
                    limit,
                    offset,
                } if g == generation => Some((limit, offset, body)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn entries(&self) -> u64 {
        self.on_demand.len() as u64 + self.catalog_entries.load(Ordering::Relaxed)
    }

    pub(crate) fn catalog_entries(&self) -> u64 {
        self.catalog_entries.load(Ordering::Relaxed)
    }

    /// Bytes held (bodies plus per-entry overhead), in both places.
    pub(crate) fn bytes(&self) -> u64 {
        self.on_demand.weight() + self.catalog_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn catalog_bytes(&self) -> u64 {
        self.catalog_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.0.load(Ordering::Relaxed)
    }
}

fn empty_slots<P: RefCnt>(len: usize) -> Box<[ArcSwapAny<Option<P>>]> {
    (0..len).map(|_| ArcSwapAny::new(None)).collect()
}

/// The indexes of the slots that hold something.
fn filled<P: RefCnt>(slots: &[ArcSwapAny<Option<P>>]) -> impl Iterator<Item = usize> + '_ {
    (0..slots.len()).filter(|&i| slots[i].load().is_some())
}

fn weigh(body: Rendered) -> (Rendered, u64) {
    let w = catalog_weight(&body);
    (body, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A body of its own allocation (a value distinct from every other).
    fn body(text: &str) -> Rendered {
        Rendered::Json(Bytes::from(text.as_bytes().to_vec()))
    }

    fn catalog_store() -> Store {
        let store = Store::new(1 << 20);
        store.open_catalog(CatalogSize {
            products: 10,
            max_product_id: 10,
            questions: 10,
            max_question_id: 10,
        });
        store
    }

    #[test]
    fn a_precomputed_body_lives_in_the_catalog_only_and_is_replaced_there() {
        let store = catalog_store();
        store.on_demand.insert(Key::Product(3), body("old"));
        assert!(store
            .insert_precomputed(Key::Product(3), body("warm"))
            .stored());
        assert!(
            store.on_demand.peek(&Key::Product(3)).is_none(),
            "one place"
        );
        assert_eq!(store.peek(&Key::Product(3)), Some(body("warm")));
        store.insert(Key::Product(3), body("fresh"));
        assert_eq!(store.catalog_body(&Key::Product(3)), Some(body("fresh")));
        assert!(store.on_demand.peek(&Key::Product(3)).is_none());
        assert_eq!(store.catalog_entries(), 1);
        assert_eq!(store.catalog_bytes(), catalog_weight(&body("fresh")));
        store.remove(&Key::Product(3));
        assert_eq!(store.peek(&Key::Product(3)), None);
        assert_eq!((store.catalog_entries(), store.catalog_bytes()), (0, 0));
    }

    #[test]
    fn a_held_peek_shares_a_catalog_body_and_finds_what_an_empty_slot_left_on_demand() {
        let store = catalog_store();
        assert!(store
            .insert_precomputed(Key::Product(3), body("warm"))
            .stored());
        let seen = store.peek(&Key::Product(3)).expect("held");
        match (
            store.peek_held(&Key::Product(3)),
            store.peek_held(&Key::Product(3)),
        ) {
            // What the slot holds both times, not a copy of it.
            (Some(Held::Shared { kept: one, body }), Some(Held::Shared { kept: two, .. })) => {
                assert!(kept::is_same(&one, &two) && body == seen);
            }
            other => panic!("{other:?}"),
        }
        // A question that is gone: its 404 is kept on demand, its slot empty.
        store.insert(Key::Answers(2), Rendered::NotFound);
        assert!(matches!(
            store.peek_held(&Key::Answers(2)).as_deref(),
            Some(Rendered::NotFound)
        ));
        assert!(store.peek_held(&Key::Answers(4)).is_none());
    }

    #[test]
    fn a_catalog_abandoned_for_exit_is_gone_from_reads_and_never_freed() {
        let store = catalog_store();
        assert!(store
            .insert_precomputed(Key::Product(3), body("warm"))
            .stored());
        let catalog = Arc::downgrade(&store.catalog.load_full().expect("opened"));
        store.abandon_catalog_for_exit();
        assert_eq!(store.peek(&Key::Product(3)), None);
        assert_eq!((store.catalog_entries(), store.catalog_bytes()), (0, 0));
        drop(store);
        assert!(catalog.upgrade().is_some(), "left for the exit to free");
    }

    /// Says, when dropped, which thread dropped it.
    pub(super) struct Tattletale(Arc<std::sync::Mutex<Option<String>>>);

    impl Drop for Tattletale {
        fn drop(&mut self) {
            let thread = std::thread::current().name().map(str::to_owned);
            *self.0.lock().unwrap() = thread;
        }
    }

    #[test]
    fn a_catalog_a_reader_holds_when_it_is_dropped_is_freed_on_the_drop_thread() {
        let store = catalog_store();
        let freed_by = Arc::new(std::sync::Mutex::new(None));
        let catalog = store.catalog.load_full().expect("opened");
        *catalog.freed_with.lock().unwrap() = Some(Tattletale(Arc::clone(&freed_by)));
        drop(catalog);
        assert!(store
            .insert_precomputed(Key::Product(3), body("warm"))
            .stored());
        store.with_held(&Key::Product(3), |_| {
            store.clear();
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(freed_by.lock().unwrap().is_none(), "not freed while held");
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while freed_by.lock().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            freed_by.lock().unwrap().as_deref(),
            Some("atelier-drop-catalog")
        );
    }

    #[test]
    fn keys_the_catalog_cannot_hold_go_on_demand() {
        let store = catalog_store();
        // Past the slots, a products page, a cart: on demand.
        assert!(!store
            .insert_precomputed(Key::Product(1 << 40), body("x"))
            .stored());
        assert!(!store
            .insert_precomputed(Key::Product(-1), body("x"))
            .stored());
        assert!(!store
            .insert_precomputed(Key::Cart("t".into()), body("x"))
            .stored());
        store.insert(Key::Product(1 << 40), body("filled"));
        assert!(store.catalog_body(&Key::Product(1 << 40)).is_none());
        assert_eq!(store.peek(&Key::Product(1 << 40)), Some(body("filled")));
        // A key with a slot goes to the catalog, while its share of the budget lasts.
        store.insert(Key::Product(4), body("refreshed"));
        assert_eq!(
            store.catalog_body(&Key::Product(4)),
            Some(body("refreshed"))
        );
        let mut keys = store.keys();
        keys.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(keys, vec![Key::Product(1 << 40), Key::Product(4)]);
    }

    #[test]
    fn a_list_is_held_as_itself_and_a_lists_404_on_demand() {
        let store = catalog_store();
        let mut builder = crate::render::ItemListBuilder::default();
        builder.next_item().extend_from_slice(br#"{"answer_id":1}"#);
        builder.end_item();
        let list = SharedList::new(builder.finish());
        let key = Key::Answers(2);
        assert!(store
            .insert_precomputed(key.clone(), Rendered::List(SharedList::clone(&list)))
            .stored());
        // The very list put in comes out: the slot holds it, with no box around it.
        match store.catalog_body(&key) {
            Some(Rendered::List(held)) => assert!(SharedList::ptr_eq(&held, &list)),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.catalog_entries(), 1);
        let weight = catalog_weight(&Rendered::List(SharedList::clone(&list)));
        // The slot's pointer, the list's box and what it holds: the box is not counted twice.
        assert_eq!(
            weight,
            8 + (std::mem::size_of::<ItemList>() + 8 + list.weight()) as u64
        );
        assert_eq!(store.catalog_bytes(), weight);
        assert_eq!(store.keys(), vec![key.clone()]);
        // A question that is gone: its 404 is kept on demand, and the slot emptied.
        store.insert(key.clone(), Rendered::NotFound);
        assert!(store.catalog_body(&key).is_none());
        assert_eq!(store.peek(&key), Some(Rendered::NotFound));
        assert_eq!((store.catalog_entries(), store.catalog_bytes()), (0, 0));
        assert!(matches!(
            store.insert_precomputed(Key::Questions(3), Rendered::NotFound),
            Precomputed::NoSlot(..)
        ));
        // Empty lists, in whatever order, share one box when a warm-up puts them in; one a
        // refresh puts in is a new value.
        let empty = SharedList::new(crate::render::ItemListBuilder::default().finish());
        let reordered =
            SharedList::new(ItemList::reordered(&empty, Vec::new()).expect("no items, no order"));
        for (id, list) in [(5, empty), (6, reordered)] {
            assert!(store
                .insert_precomputed(Key::Answers(id), Rendered::List(list))
                .stored());
        }
        match (
            store.catalog_body(&Key::Answers(5)),
            store.catalog_body(&Key::Answers(6)),
        ) {
            (Some(Rendered::List(a)), Some(Rendered::List(b))) => {
                assert!(SharedList::ptr_eq(&a, &b) && a.is_empty())
            }
            other => panic!("{other:?}"),
        }
        store.insert(
            Key::Answers(6),
            Rendered::List(SharedList::new(ItemList::default())),
        );
        match (
            store.catalog_body(&Key::Answers(5)),
            store.catalog_body(&Key::Answers(6)),
        ) {
            (Some(a), Some(b)) => assert!(!a.is_same_value(&b) && a == b),
            other => panic!("{other:?}"),
        }
        for id in [5, 6] {
            assert!(store.remove_if(&Key::Answers(id), |_| true));
        }
        // And a list taken out only if the test says so.
        store.insert(key.clone(), Rendered::List(SharedList::clone(&list)));
        assert!(!store.remove_if(&key, |_| false));
        assert!(store.remove_if(&key, |b| matches!(b, Rendered::List(_))));
        assert!(store.peek(&key).is_none());
        assert_eq!((store.catalog_entries(), store.catalog_bytes()), (0, 0));
    }

    #[test]
    fn the_catalog_stops_at_its_share_and_a_clear_returns_the_budget() {
        let store = Store::new(10_000);
        store.open_catalog(CatalogSize {
            products: 100,
            max_product_id: 100,
            ..Default::default()
        });
        assert_eq!(store.on_demand.capacity(), 1_000);
        // Bytes that do not compress, so that the catalog keeps them as they are.
        let mut state = 1u32;
        let noise: Vec<u8> = (0..4_000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 24) as u8
            })
            .collect();
        let big = Rendered::Json(Bytes::from(noise));
        assert!(store
            .insert_precomputed(Key::Styles(1), big.clone())
            .stored());
        assert!(store
            .insert_precomputed(Key::Styles(2), big.clone())
            .stored());
        assert!(
            !store.insert_precomputed(Key::Styles(3), big).stored(),
            "past 9/10"
        );
        store.clear();
        assert_eq!(store.peek(&Key::Styles(1)), None);
        assert_eq!(store.on_demand.capacity(), 10_000);
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn a_refresh_stays_within_the_catalogs_share_and_refills_an_emptied_slot() {
        let store = Store::new(10_000);
        store.open_catalog(CatalogSize {
            products: 100,
            max_product_id: 100,
            ..Default::default()
        });
        assert!(store
            .insert_precomputed(Key::Styles(1), body(&"a".repeat(3_000)))
            .stored());
        // A refresh whose body grew past the share moves the key to the on-demand cache (which
        // cannot hold one that big either: the next read fills it).
        store.insert(Key::Styles(1), body(&"b".repeat(9_000)));
        assert_eq!(store.catalog_body(&Key::Styles(1)), None);
        assert_eq!(store.catalog_bytes(), 0);
        // One that fits goes back into its slot, and leaves the on-demand cache.
        store.insert(Key::Styles(1), body("small again"));
        assert_eq!(
            store.catalog_body(&Key::Styles(1)),
            Some(body("small again"))
        );
        assert!(store.on_demand.peek(&Key::Styles(1)).is_none());
        assert!(store.catalog_bytes() <= store.catalog_share());

        // Once the warm-up is done, the on-demand cache has what the catalog left, and the
        // catalog cannot grow back into it.
        store.settle_budget();
        let held = store.catalog_bytes();
        // (quick_cache splits a capacity among its shards, rounding each share down.)
        assert!(
            store.catalog_room() < held + 100,
            "{}",
            store.catalog_room()
        );
        store.insert(Key::Styles(1), body(&"c".repeat(2_000)));
        assert_eq!(store.catalog_body(&Key::Styles(1)), None, "no room left");
        assert!(store.bytes() <= 10_000);
    }

    #[test]
    fn remove_if_removes_only_the_value_it_was_asked_about() {
        let store = catalog_store();
        assert!(store
            .insert_precomputed(Key::Product(2), body("a"))
            .stored());
        let seen = store.peek(&Key::Product(2)).expect("held");
        store.insert(Key::Product(2), body("b"));
        // The catalog's slot is asked about what it holds now (a copy of it: a catalog body is
        // told from another by what its slot holds, `remove_if_still`).
        assert!(!store.remove_if(&Key::Product(2), |now| *now == seen));
        assert!(store.remove_if(&Key::Product(2), |now| *now == body("b")));
        assert_eq!(store.peek(&Key::Product(2)), None);
        assert_eq!(store.catalog_entries(), 0);
    }

    #[test]
    fn a_catalog_404_replaced_by_another_404_is_not_the_one_read() {
        let store = catalog_store();
        let key = Key::Product(2);
        assert!(store
            .insert_precomputed(key.clone(), Rendered::NotFound)
            .stored());
        let seen = store.peek_held(&key).expect("held");
        // A refresh puts in a 404 of its own: equal, but not the value the sweep judged.
        store.insert(key.clone(), Rendered::NotFound);
        assert!(!store.remove_if_still(&key, &seen));
        assert_eq!(store.catalog_entries(), 1);
        let now = store.peek_held(&key).expect("held");
        assert!(store.remove_if_still(&key, &now));
        assert_eq!(store.peek(&key), None);
        assert_eq!(store.catalog_entries(), 0);
    }

    #[test]
    fn a_catalog_body_refreshed_into_the_same_bytes_is_not_the_one_read_and_weighs_as_put_in() {
        use crate::render::compress::{self, DictionaryKind};
        use crate::render::Compaction;
        compress::test_dictionary(DictionaryKind::Bodies);
        let plain = || Rendered::Json(Bytes::from(compress::tests::product(2)));
        let store = catalog_store();
        let key = Key::Product(2);
        for body in [
            plain(),
            plain().compacted(None),
            plain().compacted_as(Compaction::Dense, None),
            Rendered::NotFound,
        ] {
            assert!(store.insert_precomputed(key.clone(), body.clone()).stored());
            assert_eq!(store.catalog_bytes(), catalog_weight(&body), "{body:?}");
            let seen = store.peek_held(&key).expect("held");
            assert_eq!(*seen, body);
            // A refresh puts in the same bytes again: an equal body, not the value read.
            store.insert(key.clone(), body.clone());
            assert_eq!(store.catalog_bytes(), catalog_weight(&body));
            assert!(!store.remove_if_still(&key, &seen));
            let now = store.peek_held(&key).expect("held");
            assert!(store.remove_if_still(&key, &now));
            assert_eq!((store.catalog_entries(), store.catalog_bytes()), (0, 0));
            assert!(!store.contains_key(&key));
        }
    }

    #[test]
    fn a_list_does_not_go_in_a_whole_bodys_slot_nor_a_body_in_a_lists() {
        let store = catalog_store();
        let list = Rendered::List(SharedList::new(crate::render::ItemList::default()));
        assert!(!store
            .insert_precomputed(Key::Product(2), list.clone())
            .stored());
        assert!(!store
            .insert_precomputed(Key::Answers(2), body("a"))
            .stored());
        assert_eq!(store.catalog_entries(), 0);
    }

    #[test]
    fn sparse_ids_get_bounded_slots() {
        assert_eq!(slot_count(99, 100), 100);
        assert_eq!(slot_count(0, 0), 1);
        assert_eq!(slot_count(-5, 3), 0);
        assert_eq!(slot_count(i64::MAX, 10), 1064);
    }
}
