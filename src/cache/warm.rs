//! The warm-up: every body of the catalog rendered from one scan ([`crate::pg::scan`]) and put
//! in the cache before the instance reports ready, so GETs are hits from the first request.
//!
//! With `--shard I/N` an instance renders only the bodies of the products it holds, and the
//! answers of the questions it holds ([`crate::shard`]); it scans the whole catalog all the
//! same (the scan is ordered by product, and a question's answers come with its product).
//!
//! Priority, when the catalog is larger than the budget: products in id order (give or take
//! the few in flight: several threads render them, one a core), and for each
//! product its detail, styles, related ids, reviews meta, reviews (both orders), questions and
//! the answers of each of its questions; then the first pages of the products list. The
//! warm-up stops adding entries when the cache is nine tenths full, leaving room for the
//! on-demand fills that serve the rest: the server degrades, it never refuses.
//!
//! The scan reads one snapshot, so a change committed after it must not be overwritten by the
//! scan's older rows. While a warm-up runs the cache records every key it invalidates, under
//! the same lock the warm-up takes to insert; the warm-up skips a recorded key (the next
//! request fills it fresh), and a later invalidation removes what it inserted. A change to
//! everything (a bulk load) stops the warm-up; its caller starts another.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Config;

use super::store::Precomputed;
use super::{CatalogSize, Key, ResponseCache};
use crate::domain::ReviewOrder;
use crate::pg::fence::Lsn;
use crate::pg::scan::{CatalogScan, ProductRows, Snapshot};
use crate::pg::DbError;
use crate::render::compress::{self, DictionaryKind};
use crate::render::products::{render_product, render_product_list, render_related, render_styles};
use crate::render::qa::{render_answer_list, render_question_list};
use crate::render::reviews::{render_meta, render_review_orders};
use crate::render::shared_codes::{self, CodesKind, SymbolCounts};
use crate::render::{Compaction, PhotosByOwner, Rendered, SharedList};
use crate::shard::Shard;

/// Pages of `GET /products` warmed, at the default count.
const PRODUCT_PAGES: usize = 20;
/// The contract's default `count`.
const PAGE_SIZE: usize = crate::domain::DEFAULT_COUNT as usize;

/// The kinds of body, for the bytes-by-kind report.
pub const KINDS: [&str; 8] = [
    "products_page",
    "product",
    "styles",
    "related",
    "reviews",
    "reviews_meta",
    "questions",
    "answers",
];

fn kind(key: &Key) -> Option<usize> {
    Some(match key {
        Key::ProductsPage { .. } => 0,
        Key::Product(_) => 1,
        Key::Styles(_) => 2,
        Key::Related(_) => 3,
        Key::Reviews { .. } => 4,
        Key::ReviewsMeta(_) => 5,
        Key::Questions(_) => 6,
        Key::Answers(_) => 7,
        Key::Cart(_) => return None,
    })
}

/// The warm-up's progress, for `/readyz`, `/metrics` and the log.
#[derive(Debug, Default)]
pub struct WarmupStatus {
    /// Whether a warm-up has completed (or stopped at the budget) since the instance started.
    pub first_done: AtomicBool,
    pub running: AtomicBool,
    pub products_done: AtomicU64,
    pub products_total: AtomicU64,
    pub entries: AtomicU64,
    /// Milliseconds the last complete warm-up took.
    pub last_ms: AtomicU64,
    /// Bytes of the bodies put in the cache by the last warm-up, by [`KINDS`].
    pub bytes: [AtomicU64; 8],
    pub completed: AtomicU64,
}

/// How a warm-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmupOutcome {
    /// Every body of the catalog is in the cache.
    Complete,
    /// The cache reached its warm-up share of the budget; the rest is served on demand.
    BudgetFull,
    /// Everything changed meanwhile (a bulk load): the warm-up must start over.
    Interrupted,
}

/// Why [`ResponseCache::insert_warm`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarmStop {
    BudgetFull,
    Interrupted,
}

/// Products read ahead of the renderers.
const READ_AHEAD: usize = 256;

/// Renders every body of the catalog from one scan of `database` into `cache`, in the
/// warming record `generation` ([`ResponseCache::begin_warmup`]), begun before the scan's
/// source was chosen. With `replayed_to`, `database` is a standby that must have replayed
/// the primary's log that far ([`Snapshot::take`]). Progress is logged every
/// `progress_period`.
pub(crate) async fn warm(
    cache: &Arc<ResponseCache>,
    database: &Config,
    replayed_to: Option<Lsn>,
    status: &Arc<WarmupStatus>,
    generation: u64,
    progress_period: Duration,
) -> Result<WarmupOutcome, DbError> {
    status.running.store(true, Ordering::Release);
    let outcome = scan_into(
        cache,
        database,
        replayed_to,
        status,
        generation,
        progress_period,
    )
    .await;
    cache.end_warmup();
    status.running.store(false, Ordering::Release);
    outcome
}

async fn scan_into(
    cache: &Arc<ResponseCache>,
    database: &Config,
    replayed_to: Option<Lsn>,
    status: &Arc<WarmupStatus>,
    generation: u64,
    progress_period: Duration,
) -> Result<WarmupOutcome, DbError> {
    let started = Instant::now();
    status.products_done.store(0, Ordering::Relaxed);
    status.entries.store(0, Ordering::Relaxed);
    for b in &status.bytes {
        b.store(0, Ordering::Relaxed);
    }
    tracing::info!("warm-up started: one scan of the catalog, every body rendered");
    let progress = ProgressLog::start(Arc::clone(status), started, progress_period);
    let snapshot = Snapshot::take(database, replayed_to).await?;
    let size = CatalogSize {
        products: snapshot.products,
        max_product_id: snapshot.max_product_id,
        questions: snapshot.questions,
        max_question_id: snapshot.max_question_id,
    };
    status
        .products_total
        .store(snapshot.products.max(0) as u64, Ordering::Relaxed);
    // The catalog held so far is dropped only once the scan is open: a scan that cannot start
    // leaves what the instance had.
    let mut scan = CatalogScan::open(snapshot, database).await?;
    cache.open_catalog(size);
    let mut first_products = Vec::with_capacity(PRODUCT_PAGES * PAGE_SIZE);
    // Rendering and compressing are most of a warm-up's work: threads of their own do them
    // while this task reads and decodes the next products.
    let (rows_tx, rows_rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    let renderers = Arc::new(Renderers::new(rows_rx));
    let threads: Vec<_> = (0..renderer_threads())
        .map(|i| {
            let (cache, status) = (Arc::clone(cache), Arc::clone(status));
            let renderers = Arc::clone(&renderers);
            tokio::task::spawn_blocking(move || renderers.render_into(i == 0, &cache, &status))
        })
        .collect();
    drop(renderers);
    let mut scanned = Ok(());
    loop {
        let rows = match scan.next().await {
            Ok(Some(rows)) => rows,
            Ok(None) => break,
            Err(e) => {
                scanned = Err(e);
                break;
            }
        };
        if first_products.len() < PRODUCT_PAGES * PAGE_SIZE {
            first_products.push(rows.product.clone());
        }
        if rows_tx.send(rows).await.is_err() {
            break; // the renderers stopped: the budget is spent, or everything changed
        }
    }
    drop(rows_tx);
    let mut rendered = Ok(());
    for thread in threads {
        let stopped = match thread.await {
            Ok(stopped) => stopped,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(WarmStop::Interrupted), // the runtime is shutting down
        };
        // An interruption outranks the budget: the warm-up must start over.
        if stopped.is_err() && rendered != Err(WarmStop::Interrupted) {
            rendered = stopped;
        }
    }
    // Stopped here, so that no progress line can follow the summary.
    drop(progress);
    scanned?;
    let mut outcome = match rendered {
        Ok(()) => WarmupOutcome::Complete,
        Err(WarmStop::BudgetFull) => WarmupOutcome::BudgetFull,
        Err(WarmStop::Interrupted) => return Ok(WarmupOutcome::Interrupted),
    };
    if outcome == WarmupOutcome::Complete {
        let pages = first_products
            .chunks(PAGE_SIZE)
            .enumerate()
            .map(|(page, products)| {
                let key = Key::ProductsPage {
                    generation,
                    limit: PAGE_SIZE as i64,
                    offset: (page * PAGE_SIZE) as i64,
                };
                (key, Rendered::Json(render_product_list(products)))
            })
            .collect();
        match cache.insert_warm(pages, status) {
            Ok(()) => {}
            Err(WarmStop::BudgetFull) => outcome = WarmupOutcome::BudgetFull,
            Err(WarmStop::Interrupted) => return Ok(WarmupOutcome::Interrupted),
        }
    }
    cache.store.settle_budget();
    let ms = started.elapsed().as_millis() as u64;
    status.last_ms.store(ms, Ordering::Relaxed);
    status.completed.fetch_add(1, Ordering::Relaxed);
    let by_kind: Vec<String> = KINDS
        .iter()
        .zip(&status.bytes)
        .map(|(k, b)| format!("{k} {} KB", b.load(Ordering::Relaxed) >> 10))
        .collect();
    tracing::info!(
        outcome = if outcome == WarmupOutcome::Complete {
            "complete"
        } else {
            "stopped at the cache budget"
        },
        products = status.products_done.load(Ordering::Relaxed),
        of = scan.products,
        entries = status.entries.load(Ordering::Relaxed),
        seconds = ms as f64 / 1000.0,
        bytes_by_kind = %by_kind.join(", "),
        "warm-up done"
    );
    Ok(outcome)
}

/// Logs a warm-up's progress every period until dropped: the products rendered so far, or,
/// before the first, that the scan waits for the database's first rows. PostgreSQL sorts the
/// catalog's largest tables before it sends a row (about half a minute at full scale), and a
/// start that long must not be a silent one.
struct ProgressLog(tokio::task::JoinHandle<()>);

impl ProgressLog {
    fn start(status: Arc<WarmupStatus>, started: Instant, period: Duration) -> ProgressLog {
        // (An interval of zero would panic.)
        let period = period.max(Duration::from_millis(1));
        ProgressLog(tokio::spawn(async move {
            let first = tokio::time::Instant::now() + period;
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let seconds = started.elapsed().as_secs();
                let products = status.products_done.load(Ordering::Relaxed);
                if products == 0 {
                    tracing::info!(seconds, "warm-up waits for the database's first rows");
                    continue;
                }
                let bytes: u64 = status.bytes.iter().map(|b| b.load(Ordering::Relaxed)).sum();
                tracing::info!(
                    products,
                    of = status.products_total.load(Ordering::Relaxed),
                    entries = status.entries.load(Ordering::Relaxed),
                    mb = bytes >> 20,
                    seconds,
                    "warm-up in progress"
                );
            }
        }))
    }
}

impl Drop for ProgressLog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many threads render a warm-up's products: one a core. One renderer kept a core about
/// four fifths busy on a 2-core machine, the scan and PostgreSQL sharing the other
/// (docs/benchmarks.md, Warm-up); on more cores the scan feeds several.
fn renderer_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_RENDERERS))
}

/// Past this many renderers they would wait for the scan, which one task reads and decodes.
const MAX_RENDERERS: usize = 8;

/// What a warm-up's renderer threads share: the products the scan hands over, whether the
/// first renderer has trained the dictionaries and shared codes, and whether one of them has
/// stopped.
///
/// The first renderer renders alone until it has trained the dictionaries its compaction
/// packs against and the shared codes it gzips in, as the only renderer did: they are trained
/// on the first products in id order, everything before is compacted without them and
/// everything after with them, so a warm-up's dictionary and codes and where they start do
/// not depend on how threads were scheduled. That takes the first 4 MB of lists and 512 KiB of
/// each kind with a code (about 2,000 products' meta bodies), under a second at full scale. A
/// kind the first [`MAX_CODE_TRAINING_PRODUCTS`] have too little of gets no code; a catalog
/// with less than a dictionary's sample of lists trains none, and its first renderer renders
/// it alone.
struct Renderers<T> {
    rows: std::sync::Mutex<tokio::sync::mpsc::Receiver<T>>,
    trained: std::sync::Mutex<bool>,
    trained_changed: std::sync::Condvar,
    stopped: AtomicBool,
    /// How many times a renderer has gone to wait, for a product or for the first: a test
    /// waits on this rather than on the clock.
    #[cfg(test)]
    waits: std::sync::atomic::AtomicUsize,
}

impl<T> Renderers<T> {
    fn new(rows: tokio::sync::mpsc::Receiver<T>) -> Renderers<T> {
        Renderers {
            rows: std::sync::Mutex::new(rows),
            trained: std::sync::Mutex::new(false),
            trained_changed: std::sync::Condvar::new(),
            stopped: AtomicBool::new(false),
            #[cfg(test)]
            waits: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The next product the scan hands over; None once it ends or a renderer has stopped.
    fn next(&self) -> Option<T> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        #[cfg(test)]
        self.waits.fetch_add(1, Ordering::SeqCst);
        let rows = self.rows.lock().ok()?.blocking_recv()?;
        // A renderer may have stopped while this one waited: the warm-up takes no more.
        (!self.stopped.load(Ordering::Relaxed)).then_some(rows)
    }

    /// Lets the renderers after the first start.
    fn open(&self) {
        if let Ok(mut trained) = self.trained.lock() {
            *trained = true;
        }
        self.trained_changed.notify_all();
    }

    /// Waits until the first renderer has trained the dictionaries, or has stopped.
    fn wait_for_the_first(&self) {
        #[cfg(test)]
        self.waits.fetch_add(1, Ordering::SeqCst);
        let Ok(trained) = self.trained.lock() else {
            return;
        };
        let _trained = self
            .trained_changed
            .wait_while(trained, |trained| !*trained);
    }

    /// Hands the products the scan hands over to `render`, taking turns with the other
    /// renderers, until the scan ends or one of them stops. `render` says whether it is still
    /// training (the `first` renderer's, while it has dictionaries or codes to train: until
    /// then the others wait), or why the warm-up takes no more.
    fn take_turns(
        &self,
        first: bool,
        mut training: bool,
        mut render: impl FnMut(T) -> Result<bool, WarmStop>,
    ) -> Result<(), WarmStop> {
        let _exit = OnExit {
            renderers: self,
            first,
        };
        match first {
            true if !training => self.open(),
            true => {}
            false => self.wait_for_the_first(),
        }
        while let Some(rows) = self.next() {
            match render(rows) {
                Ok(still_training) => {
                    if training && !still_training {
                        training = false;
                        self.open();
                    }
                }
                Err(stop) => {
                    self.stopped.store(true, Ordering::Relaxed);
                    return Err(stop);
                }
            }
        }
        Ok(())
    }
}

impl Renderers<ProductRows> {
    /// Renders the products the scan hands over into the catalog, in the order it reads them
    /// (give or take the products other renderers hold), until the scan ends or the catalog
    /// stops taking them. The `first` renderer trains the dictionaries and shared codes while
    /// the others wait.
    fn render_into(
        &self,
        first: bool,
        cache: &ResponseCache,
        status: &WarmupStatus,
    ) -> Result<(), WarmStop> {
        let (mut trainers, mut coders) = match first {
            true => (
                DictionaryTrainer::for_cache(cache),
                CodesTrainer::for_cache(cache),
            ),
            false => (Vec::new(), Vec::new()),
        };
        let training = !trainers.is_empty() || !coders.is_empty();
        let mut products = 0;
        self.take_turns(first, training, |rows| {
            let bodies = bodies(&rows, cache.compaction, cache.shard);
            products += 1;
            let still_training = sample(&mut trainers, &mut coders, &bodies, products);
            cache.insert_warm(bodies, status)?;
            status.products_done.fetch_add(1, Ordering::Relaxed);
            Ok(still_training)
        })
    }
}

/// A renderer's way out, however it leaves: a panic stops the others at their next product
/// (the scan stops once they have all left, and the warm-up re-raises the panic), and the
/// first renderer lets the others go on if it leaves before it has trained the dictionaries
/// and codes.
struct OnExit<'a, T> {
    renderers: &'a Renderers<T>,
    first: bool,
}

impl<T> Drop for OnExit<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.renderers.stopped.store(true, Ordering::Relaxed);
        }
        if self.first {
            self.renderers.open();
        }
    }
}

/// Collects the first lists (or whole bodies) a warm-up renders and, once it has enough,
/// trains the process's dictionary of that kind on them ([`compress`]'s module docs):
/// everything of that kind packed from then on is packed against it. What was rendered
/// before stays as it was compacted (lists deflated, whole bodies gzip).
struct DictionaryTrainer {
    kind: DictionaryKind,
    target_bytes: usize,
    samples: Vec<Vec<u8>>,
    sampled_bytes: usize,
}

impl DictionaryTrainer {
    /// The trainers `cache`'s warm-up needs: one for each kind of dictionary its compaction
    /// packs against, if it samples at all and the process has none of that kind yet (one
    /// trained by an earlier warm-up, or restored, is kept).
    fn for_cache(cache: &ResponseCache) -> Vec<DictionaryTrainer> {
        let kinds = [
            (DictionaryKind::Lists, cache.compaction.packs_lists()),
            (
                DictionaryKind::Bodies,
                cache.compaction == Compaction::Dense,
            ),
        ];
        kinds
            .into_iter()
            .filter(|&(kind, packs)| {
                packs && cache.dictionary_sample_bytes > 0 && compress::dictionary(kind).is_none()
            })
            .map(|(kind, _)| DictionaryTrainer {
                kind,
                target_bytes: cache.dictionary_sample_bytes,
                samples: Vec::new(),
                sampled_bytes: 0,
            })
            .collect()
    }

    /// Samples one product's `bodies` of this trainer's kind (a list reordered over another
    /// is the same items once more, and is left out); trains once there are enough. Whether
    /// the trainer is done.
    fn sampled(&mut self, bodies: &[(Key, Rendered)]) -> bool {
        for (_, body) in bodies {
            let sample = match (self.kind, body) {
                (DictionaryKind::Lists, Rendered::List(list)) => {
                    list.own_items().map(|items| items.into_owned())
                }
                (DictionaryKind::Lists, _) => None,
                // A list or a 404 has no plain body.
                (DictionaryKind::Bodies, body) => body.plain().map(Vec::from),
            };
            if let Some(sample) = sample.filter(|s| !s.is_empty()) {
                self.sampled_bytes += sample.len();
                self.samples.push(sample);
            }
        }
        if self.sampled_bytes < self.target_bytes {
            return false;
        }
        let started = Instant::now();
        let samples = std::mem::take(&mut self.samples);
        // zstd wants samples many times the dictionary's size; a small catalog gets a smaller
        // dictionary.
        let max_bytes = compress::DICTIONARY_MAX_BYTES.min(self.sampled_bytes / 4);
        let kind = self.kind.name();
        match compress::train_dictionary(&samples, max_bytes) {
            Some(dictionary) => match compress::install_dictionary(self.kind, &dictionary) {
                Ok(()) => tracing::info!(
                    kind,
                    samples = samples.len(),
                    sampled_kb = self.sampled_bytes >> 10,
                    dictionary_kb = dictionary.len() >> 10,
                    ms = started.elapsed().as_millis() as u64,
                    "dictionary trained; packing against it from here"
                ),
                // Another warm-up installed one meanwhile: packing is against that.
                Err(e) => tracing::debug!(cause = %e, "dictionary not installed"),
            },
            None => tracing::warn!(
                kind,
                samples = samples.len(),
                sampled_kb = self.sampled_bytes >> 10,
                "no dictionary could be trained; packing as before it"
            ),
        }
        true
    }
}

/// How much of the first bodies of a kind a warm-up counts to train that kind's shared code
/// on (or the dictionary sample's size, if smaller): about 1,200 products' product bodies,
/// 2,000 products' meta bodies at full scale. Symbol counts settle long before a dictionary's
/// sample would.
const CODES_SAMPLE_BYTES: usize = 512 << 10;

/// Counts the symbols of the first gzip bodies of one kind (whole bodies, or lists' lead
/// pages) a warm-up renders and, once it has counted enough, trains the process's shared code
/// of that kind on them ([`shared_codes`]): every body of that kind gzipped from then on is
/// written in it. What was rendered before stays a whole gzip member.
struct CodesTrainer {
    kind: CodesKind,
    target_bytes: usize,
    counts: SymbolCounts,
    sampled_bytes: usize,
}

impl CodesTrainer {
    /// The trainers `cache`'s warm-up needs: one for each kind of gzip body with a code of
    /// its own that its compaction keeps (whole bodies unless dense or plain, lead pages with
    /// `all`), if it samples at all and the process has no code of that kind yet (one trained
    /// by an earlier warm-up, or restored, is kept).
    fn for_cache(cache: &ResponseCache) -> Vec<CodesTrainer> {
        let keeps = |kind: CodesKind| match kind {
            CodesKind::ReviewsLead | CodesKind::QuestionsLead => {
                cache.compaction == Compaction::All
            }
            _ => matches!(cache.compaction, Compaction::All | Compaction::Bodies),
        };
        let target_bytes = cache.dictionary_sample_bytes.min(CODES_SAMPLE_BYTES);
        CodesKind::ALL
            .into_iter()
            .filter(|&kind| keeps(kind) && target_bytes > 0 && shared_codes::codes(kind).is_none())
            .map(|kind| CodesTrainer {
                kind,
                target_bytes,
                counts: SymbolCounts::default(),
                sampled_bytes: 0,
            })
            .collect()
    }

    /// Counts one product's body of this trainer's kind; trains once there are enough. Whether
    /// the trainer is done.
    fn sampled(&mut self, bodies: &[(Key, Rendered)]) -> bool {
        for (key, body) in bodies {
            if key.codes_kind() != Some(self.kind) {
                continue;
            }
            // A 404 has no plain body, nor a list without a lead page of its own (the newest
            // reviews, reordered over the helpful ones, whose lead page is counted once).
            let plain = match body {
                Rendered::List(list) => list.kept_lead_page().and_then(|lead| lead.plain()),
                body => body.plain().map(Vec::from),
            };
            if let Some(plain) = plain {
                self.counts.add(&plain);
                self.sampled_bytes += plain.len();
            }
        }
        if self.sampled_bytes < self.target_bytes {
            return false;
        }
        let kind = self.kind.name();
        match shared_codes::install(self.kind, &self.counts.lengths()) {
            Ok(()) => tracing::info!(
                kind,
                samples = self.counts.bodies(),
                sampled_kb = self.sampled_bytes >> 10,
                prefix_bytes = shared_codes::prefix(Some(self.kind)).map_or(0, <[u8]>::len),
                "shared code trained; gzipping in it from here"
            ),
            // Another warm-up installed one meanwhile: bodies are written in that.
            Err(e) => tracing::debug!(cause = %e, "shared code not installed"),
        }
        true
    }
}

/// How many products the first renderer renders alone, at most, to train the shared codes: a
/// kind the first products have too little of (a catalog with few questions, say) gets no
/// code, rather than keep the other renderers waiting through the whole catalog. At full scale
/// every code is trained within the first 2,000 products.
const MAX_CODE_TRAINING_PRODUCTS: u64 = 20_000;

/// Has the trainers still training sample the `products`-th product's `bodies`: those done
/// drop out, and code trainers give up at [`MAX_CODE_TRAINING_PRODUCTS`]. Whether any is
/// still training.
fn sample(
    trainers: &mut Vec<DictionaryTrainer>,
    coders: &mut Vec<CodesTrainer>,
    bodies: &[(Key, Rendered)],
    products: u64,
) -> bool {
    trainers.retain_mut(|trainer| !trainer.sampled(bodies));
    coders.retain_mut(|coder| !coder.sampled(bodies));
    if products >= MAX_CODE_TRAINING_PRODUCTS {
        for coder in coders.drain(..) {
            tracing::info!(
                kind = coder.kind.name(),
                samples = coder.counts.bodies(),
                sampled_kb = coder.sampled_bytes >> 10,
                products,
                "no shared code: too few bodies of this kind in the first products; gzipping them whole"
            );
        }
    }
    !trainers.is_empty() || !coders.is_empty()
}

/// Every cached body of one product, in the warm-up's priority order, compacted for the
/// catalog (here, before the warm-up takes the lock it inserts under).
fn bodies(
    rows: &ProductRows,
    compaction: Compaction,
    shard: Option<Shard>,
) -> Vec<(Key, Rendered)> {
    rendered(rows, compaction, shard)
        .into_iter()
        .map(|(key, body)| match key {
            // Compacted as they were rendered, so that both orders share one buffer.
            Key::Reviews { .. } => (key, body),
            _ => {
                let (frame, codes) = (key.frame(), key.codes_kind());
                (key, body.compacted_over(compaction, frame, codes, None))
            }
        })
        .collect()
}

/// The bodies of one product this instance precomputes: all of them, or with `shard` those of
/// a product it holds, and the answers of each question it holds (whatever its product's).
fn rendered(
    rows: &ProductRows,
    compaction: Compaction,
    shard: Option<Shard>,
) -> Vec<(Key, Rendered)> {
    let holds = |id: i64| shard.is_none_or(|s| s.holds(id));
    let id = rows.product.id;
    let mut out = Vec::with_capacity(8 + rows.questions.len());
    // Grouped once for the questions list and every question's answers.
    let answer_photos = PhotosByOwner::new(&rows.answer_photos);
    if holds(id) {
        product_bodies(rows, &answer_photos, compaction, &mut out);
    }
    for q in &rows.questions {
        if !holds(q.row.id) {
            continue;
        }
        let answers = answers_of(&rows.answers, q.row.id);
        out.push((
            Key::Answers(q.row.id),
            Rendered::List(SharedList::new(render_answer_list(answers, &answer_photos))),
        ));
    }
    out
}

/// The bodies keyed by the product's id.
fn product_bodies(
    rows: &ProductRows,
    answer_photos: &PhotosByOwner<'_>,
    compaction: Compaction,
    out: &mut Vec<(Key, Rendered)>,
) {
    let id = rows.product.id;
    out.push((
        Key::Product(id),
        Rendered::Json(render_product(&rows.product, &rows.features)),
    ));
    out.push((
        Key::Styles(id),
        Rendered::Json(render_styles(id, &rows.styles, &rows.photos, &rows.skus)),
    ));
    out.push((
        Key::Related(id),
        Rendered::Json(render_related(&rows.related)),
    ));
    out.push((
        Key::ReviewsMeta(id),
        Rendered::Json(render_meta(id, &rows.meta_counts, &rows.characteristics)),
    ));
    // The reviews are rendered once, in the helpful order the scan reads them in, compacted
    // here (as far as the policy goes) so that both orders share the buffer.
    let helpful: Vec<_> = rows.reviews.iter().map(|r| r.row.clone()).collect();
    let dates_us: Vec<_> = rows.reviews.iter().map(|r| r.date_us).collect();
    let (helpful, newest) = render_review_orders(
        id,
        &helpful,
        &dates_us,
        &rows.review_photos,
        compaction,
        None,
    );
    out.push((
        Key::Reviews {
            product_id: id,
            order: ReviewOrder::Helpful,
        },
        Rendered::List(helpful),
    ));
    out.push((
        Key::Reviews {
            product_id: id,
            order: ReviewOrder::Newest,
        },
        Rendered::List(newest),
    ));
    let visible: Vec<_> = rows
        .questions
        .iter()
        .filter(|q| !q.reported)
        .map(|q| q.row.clone())
        .collect();
    out.push((
        Key::Questions(id),
        Rendered::List(SharedList::new(render_question_list(
            &visible,
            &rows.answers,
            answer_photos,
        ))),
    ));
}

/// The answers of `question_id` in `answers` (grouped by question id, ascending).
fn answers_of(
    answers: &[crate::pg::read::AnswerRow],
    question_id: i64,
) -> &[crate::pg::read::AnswerRow] {
    let start = answers.partition_point(|a| a.question_id < question_id);
    let end = answers.partition_point(|a| a.question_id <= question_id);
    &answers[start..end]
}

impl ResponseCache {
    /// Starts recording invalidated keys for a warm-up; returns the products-list generation
    /// its pages belong to.
    pub(crate) fn begin_warmup(&self) -> u64 {
        if let Ok(mut w) = self.warming.lock() {
            *w = Some(Default::default());
        }
        self.warming_on.store(true, Ordering::SeqCst);
        self.products_generation.load(Ordering::SeqCst)
    }

    pub(crate) fn end_warmup(&self) {
        self.warming_on.store(false, Ordering::SeqCst);
        if let Ok(mut w) = self.warming.lock() {
            *w = None;
        }
    }

    /// Inserts a warm-up's bodies, skipping every key invalidated since the warm-up began.
    pub(crate) fn insert_warm(
        &self,
        entries: Vec<(Key, Rendered)>,
        status: &WarmupStatus,
    ) -> Result<(), WarmStop> {
        let Ok(guard) = self.warming.lock() else {
            return Err(WarmStop::Interrupted);
        };
        let Some(invalidated) = guard.as_ref() else {
            return Err(WarmStop::Interrupted);
        };
        if invalidated.everything {
            return Err(WarmStop::Interrupted);
        }
        for (key, body) in entries {
            if invalidated.keys.contains(&key) {
                continue;
            }
            let bytes = body.weight() as u64;
            let k = kind(&key);
            match self.store.insert_precomputed(key, body) {
                Precomputed::Stored => {}
                Precomputed::NoSlot(key, body) => self.store.insert(key, body),
                Precomputed::Full => return Err(WarmStop::BudgetFull),
            }
            if let Some(k) = k {
                status.bytes[k].fetch_add(bytes, Ordering::Relaxed);
            }
            status.entries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::{ProgressLog, Renderers, WarmStop, WarmupStatus};

    #[test]
    fn a_kind_too_rare_in_the_first_products_gets_no_code_and_ends_the_wait() {
        use super::{sample, CodesTrainer, MAX_CODE_TRAINING_PRODUCTS};
        use crate::cache::Key;
        use crate::render::shared_codes::{CodesKind, SymbolCounts};
        use crate::render::Rendered;
        let mut coders = vec![CodesTrainer {
            kind: CodesKind::QuestionsLead,
            target_bytes: 1 << 10,
            counts: SymbolCounts::default(),
            sampled_bytes: 0,
        }];
        // Products with no questions: nothing to count.
        let bodies = vec![(
            Key::Product(1),
            Rendered::Json(bytes::Bytes::from_static(b"{\"id\":1}")),
        )];
        for products in 1..MAX_CODE_TRAINING_PRODUCTS {
            assert!(sample(&mut Vec::new(), &mut coders, &bodies, products));
        }
        assert!(!sample(
            &mut Vec::new(),
            &mut coders,
            &bodies,
            MAX_CODE_TRAINING_PRODUCTS
        ));
        assert!(coders.is_empty(), "given up");
    }

    fn renderers() -> (tokio::sync::mpsc::Sender<u32>, Arc<Renderers<u32>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        (tx, Arc::new(Renderers::new(rx)))
    }

    /// Waits (up to ten seconds) until `done` says so.
    fn until(what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until a renderer has stopped the warm-up.
    fn until_stopped(renderers: &Renderers<u32>) {
        until("no renderer stopped", || {
            renderers.stopped.load(Ordering::Relaxed)
        });
    }

    /// Waits until the renderers have gone to wait `n` times in all.
    fn until_waits(renderers: &Renderers<u32>, n: usize) {
        until("the renderers did not go to wait", || {
            renderers.waits.load(Ordering::SeqCst) >= n
        });
    }

    /// A renderer's outcome, or None if it has not left within ten seconds.
    fn outcome(
        thread: JoinHandle<()>,
        done: &mpsc::Receiver<Result<(), WarmStop>>,
    ) -> Option<Result<(), WarmStop>> {
        let outcome = done.recv_timeout(Duration::from_secs(10)).ok();
        if outcome.is_some() {
            let _ = thread.join();
        }
        outcome
    }

    #[test]
    fn a_renderer_waiting_for_a_product_when_another_stops_drops_it() {
        let (tx, renderers) = renderers();
        let rendered = Arc::new(Mutex::new(Vec::new()));
        let (holding, held) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let (done_tx, done) = mpsc::channel();
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (renderers, rendered) = (Arc::clone(&renderers), Arc::clone(&rendered));
                let (holding, released, done_tx) =
                    (holding.clone(), Arc::clone(&released), done_tx.clone());
                std::thread::spawn(move || {
                    let outcome = renderers.take_turns(i == 0, false, |item| {
                        if item == 1 {
                            // The budget fills with this product, once the other renderer is
                            // waiting for the next.
                            let _ = holding.send(());
                            let _ = released.lock().map(|r| r.recv());
                            return Err(WarmStop::BudgetFull);
                        }
                        rendered.lock().unwrap().push(item);
                        Ok(false)
                    });
                    let _ = done_tx.send(outcome);
                })
            })
            .collect();
        tx.blocking_send(1).unwrap();
        held.recv_timeout(Duration::from_secs(10)).unwrap();
        // Each renderer has gone for a product (the second after waiting for the first): the
        // other is past its check for a stop.
        until_waits(&renderers, 3);
        release.send(()).unwrap();
        until_stopped(&renderers);
        tx.blocking_send(2).unwrap();
        drop(tx);
        let mut outcomes: Vec<_> = threads.into_iter().map(|t| outcome(t, &done)).collect();
        outcomes.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(outcomes, [Some(Err(WarmStop::BudgetFull)), Some(Ok(()))]);
        assert_eq!(
            *rendered.lock().unwrap(),
            [] as [u32; 0],
            "a product received after the budget filled was rendered"
        );
    }

    #[test]
    fn a_first_renderer_that_panics_while_training_lets_the_others_go_and_stops_them() {
        let (tx, renderers) = renderers();
        let rendered = Arc::new(Mutex::new(Vec::new()));
        let first = {
            let renderers = Arc::clone(&renderers);
            std::thread::spawn(move || {
                renderers.take_turns(true, true, |item| -> Result<bool, WarmStop> {
                    panic!("rendering product {item} failed")
                })
            })
        };
        let (done_tx, done) = mpsc::channel();
        let other = {
            let (renderers, rendered) = (Arc::clone(&renderers), Arc::clone(&rendered));
            std::thread::spawn(move || {
                let outcome = renderers.take_turns(false, false, |item| {
                    rendered.lock().unwrap().push(item);
                    Ok(false)
                });
                let _ = done_tx.send(outcome);
            })
        };
        tx.blocking_send(1).unwrap();
        assert!(first.join().is_err(), "the first renderer did not panic");
        tx.blocking_send(2).unwrap();
        drop(tx);
        assert_eq!(
            outcome(other, &done),
            Some(Ok(())),
            "the other renderer still waits for the first to train"
        );
        assert_eq!(
            *rendered.lock().unwrap(),
            [] as [u32; 0],
            "a product was rendered after a renderer panicked"
        );
    }

    #[test]
    fn the_others_wait_until_the_first_has_trained() {
        let (tx, renderers) = renderers();
        let by_renderer = Arc::new(Mutex::new(Vec::new()));
        let (holding, held) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (renderers, by_renderer) = (Arc::clone(&renderers), Arc::clone(&by_renderer));
                let (holding, released) = (holding.clone(), Arc::clone(&released));
                std::thread::spawn(move || {
                    renderers.take_turns(i == 0, i == 0, |item| {
                        by_renderer.lock().unwrap().push(("start", item, i));
                        if item == 1 {
                            let _ = holding.send(());
                            let _ = released.lock().map(|r| r.recv());
                        }
                        by_renderer.lock().unwrap().push(("end", item, i));
                        // Trained after the second product.
                        Ok(item < 2)
                    })
                })
            })
            .collect();
        tx.blocking_send(1).unwrap();
        held.recv_timeout(Duration::from_secs(10)).unwrap();
        // While the first renders its first product, the other waits for it to train.
        until_waits(&renderers, 2);
        tx.blocking_send(2).unwrap();
        release.send(()).unwrap();
        for item in 3..10 {
            tx.blocking_send(item).unwrap();
        }
        drop(tx);
        for thread in threads {
            assert_eq!(thread.join().unwrap(), Ok(()));
        }
        let by_renderer = by_renderer.lock().unwrap();
        assert_eq!(by_renderer.len(), 18);
        assert_eq!(
            by_renderer[..4],
            [
                ("start", 1, 0),
                ("end", 1, 0),
                ("start", 2, 0),
                ("end", 2, 0)
            ],
            "the other renderer began before the first had trained: {by_renderer:?}"
        );
    }

    /// Log lines written by this thread's events: a current-thread runtime's tasks run on it.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn with(&self, needle: &str) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .filter(|l| l.contains(needle))
                .map(String::from)
                .collect()
        }

        /// Waits (up to ten seconds) until `n` lines mention `needle`.
        async fn until(&self, needle: &str, n: usize) {
            let started = Instant::now();
            while self.with(needle).len() < n {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "fewer than {n} lines say {needle:?}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_warm_up_says_it_waits_for_the_database_until_its_first_product_then_counts_them() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let status = Arc::new(WarmupStatus::default());
        status.products_total.store(7, Ordering::Relaxed);
        let period = Duration::from_millis(10);
        let progress = ProgressLog::start(Arc::clone(&status), Instant::now(), period);

        let waiting = "waits for the database's first rows";
        lines.until(waiting, 2).await;
        assert!(lines.with("in progress").is_empty());

        status.products_done.store(3, Ordering::Relaxed);
        status.entries.store(30, Ordering::Relaxed);
        status.bytes[2].store(3 << 20, Ordering::Relaxed);
        lines.until("warm-up in progress", 1).await;
        let line = &lines.with("warm-up in progress")[0];
        for field in ["products=3", "of=7", "entries=30", "mb=3"] {
            assert!(line.contains(field), "{field} missing from {line}");
        }

        // Dropped with the warm-up: nothing more is logged.
        drop(progress);
        tokio::task::yield_now().await;
        let logged = lines.with("warm-up").len();
        tokio::time::sleep(period * 5).await;
        assert_eq!(lines.with("warm-up").len(), logged);
    }
}
