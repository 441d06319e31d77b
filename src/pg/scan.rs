//! The catalog scan behind the warm-up: every row a cached body needs, read in product-id order
//! from a few ordered sequential reads — one per table or join, not one query per resource —
//! and handed out product by product.
//!
//! The scan runs in `REPEATABLE READ` transactions on a few connections that share one
//! snapshot (exported by the first, imported by the others), so every product's rows come from
//! one snapshot, and PostgreSQL sorts the big joins on several backends at once. Each read is a
//! cursor fetched a chunk at a time, so memory stays bounded whatever the catalog's size. The
//! columns and orders are those of the keyed queries in [`super::read`], so the bodies
//! rendered from them are byte-identical to a fill.

use std::collections::VecDeque;

use std::sync::Arc;

use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Config, Row, Statement};

use super::fence::Lsn;
use super::read::{
    AnswerRow, CharacteristicRow, FeatureRow, MetaCountRow, PhotoRow, PhotoUrlRow, ProductRow,
    QuestionRow, ReviewRow, SkuRow, StyleRow, Timestamp,
};
use super::DbError;

/// Rows fetched per round trip from each read.
const CHUNK: i32 = 2000;

/// Connections the reads are spread over, all in one snapshot: PostgreSQL sorts the big
/// joins before a read's first row, and on one backend those sorts ran one after another
/// (about a minute at full scale before the first product).
const CONNECTIONS: usize = 3;

/// How long a read of the scan waits for a table's lock before the scan gives up, releasing
/// every lock it holds, and the warm-up starts over. The scan's reads hold their tables' locks
/// on several connections: when a bulk load or a migration queues an exclusive lock behind one
/// of them, a read not yet opened on another connection queues behind the load, which waits
/// for the first connection's transaction, which waits (in this process, where PostgreSQL
/// cannot see it) for that read. PostgreSQL's deadlock check never ends that wait; this does.
const LOCK_TIMEOUT: &str = "1s";

/// Starts a scan transaction: repeatable read, read-only, in the exported snapshot `shared`
/// if given, and waiting for a lock no longer than [`LOCK_TIMEOUT`].
fn begin(shared: Option<&str>) -> String {
    let snapshot = shared
        .map(|name| format!("SET TRANSACTION SNAPSHOT '{name}'; "))
        .unwrap_or_default();
    format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {snapshot}\
         SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    )
}

/// The reads, each ordered by product id first.
const READS: [&str; 13] = [
    "SELECT id, name, slogan, description, category, default_price::text FROM products ORDER BY id",
    "SELECT product_id, feature, value FROM features ORDER BY product_id, id",
    "SELECT product_id, id, name, original_price::text, sale_price::text, default_style
       FROM styles ORDER BY product_id, id",
    "SELECT s.product_id, p.style_id, p.url, p.thumbnail_url
       FROM styles s JOIN photos p ON p.style_id = s.id ORDER BY s.product_id, p.style_id, p.id",
    "SELECT s.product_id, k.style_id, k.id, k.size, k.quantity
       FROM styles s JOIN skus k ON k.style_id = s.id ORDER BY s.product_id, k.style_id, k.id",
    "SELECT product_id, related_product_id FROM related ORDER BY product_id, id",
    "SELECT product_id, id, rating, summary, recommend, response, body, date, reviewer_name,
            helpfulness
       FROM reviews WHERE NOT reported ORDER BY product_id, helpfulness DESC, date DESC, id DESC",
    "SELECT r.product_id, p.review_id, p.id, p.url
       FROM reviews r JOIN reviews_photos p ON p.review_id = r.id
      WHERE NOT r.reported ORDER BY r.product_id, p.review_id, p.id",
    "SELECT product_id, rating, recommend, count(*) FROM reviews WHERE NOT reported
      GROUP BY product_id, rating, recommend ORDER BY product_id",
    // Each characteristic's mean read beside it, as the keyed query reads it, so that the rows
    // stream in product order: the whole table aggregated at once (19 million ratings at full
    // scale) kept every read of the scan waiting about 14 s for its first row.
    concat!(
        "SELECT c.product_id, c.id, c.name, ",
        characteristic_mean!(),
        " FROM characteristics c ORDER BY c.product_id, c.id"
    ),
    "SELECT product_id, id, body, date, asker_name, helpfulness, reported FROM questions
      ORDER BY product_id, helpfulness DESC, date DESC, id DESC",
    "SELECT q.product_id, a.question_id, a.id, a.body, a.date, a.answerer_name, a.helpfulness
       FROM questions q JOIN answers a ON a.question_id = q.id AND NOT a.reported
      ORDER BY q.product_id, a.question_id, a.helpfulness DESC, a.date DESC, a.id DESC",
    "SELECT q.product_id, p.answer_id, p.id, p.url
       FROM questions q
       JOIN answers a ON a.question_id = q.id AND NOT a.reported
       JOIN answers_photos p ON p.answer_id = a.id
      ORDER BY q.product_id, p.answer_id, p.id",
];

/// A review with the microseconds of its date, to order the `newest` list exactly.
#[derive(Debug, Clone)]
pub struct ScannedReview {
    pub row: ReviewRow,
    pub date_us: i64,
}

/// A question (reported ones too: their answers are still served by `/answers`).
#[derive(Debug, Clone)]
pub struct ScannedQuestion {
    pub row: QuestionRow,
    pub reported: bool,
}

/// Every row the cached bodies of one product need.
#[derive(Debug, Clone)]
pub struct ProductRows {
    pub product: ProductRow,
    pub features: Vec<FeatureRow>,
    pub styles: Vec<StyleRow>,
    pub photos: Vec<PhotoRow>,
    pub skus: Vec<SkuRow>,
    pub related: Vec<i64>,
    /// Visible reviews in `helpful` order.
    pub reviews: Vec<ScannedReview>,
    pub review_photos: Vec<PhotoUrlRow>,
    pub meta_counts: Vec<MetaCountRow>,
    pub characteristics: Vec<CharacteristicRow>,
    /// Every question, in question order.
    pub questions: Vec<ScannedQuestion>,
    /// Visible answers of every question, grouped by question id (ascending), each group in
    /// answer order.
    pub answers: Vec<AnswerRow>,
    pub answer_photos: Vec<PhotoUrlRow>,
}

/// One read: a cursor on one of the scan's connections, the rows fetched but not yet handed
/// out, and the next chunk, asked for already.
struct Read {
    client: Arc<Client>,
    /// `FETCH` of the next chunk from the read's cursor.
    fetch: Statement,
    rows: VecDeque<Row>,
    next: Option<Fetch>,
    done: bool,
}

/// A `FETCH` under way in a task of its own, so that PostgreSQL reads the next chunk while the
/// scan hands out this one (with the renderers waiting on the scan, and it on each chunk, a
/// full-scale warm-up left the two cores about a seventh idle; docs/benchmarks.md, Warm-up).
/// Dropped with its scan, the task is aborted; a `FETCH` already sent still runs to its end on the
/// server, and the connection closes after it.
struct Fetch(tokio::task::JoinHandle<Result<Vec<Row>, tokio_postgres::Error>>);

impl Drop for Fetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Read {
    /// Asks for the next chunk, unless it has been asked for or the cursor is at its end.
    fn prefetch(&mut self) {
        if self.next.is_none() && !self.done {
            let (client, fetch) = (Arc::clone(&self.client), self.fetch.clone());
            self.next = Some(Fetch(tokio::spawn(async move {
                client.query(&fetch, &[]).await
            })));
        }
    }

    /// Takes the next chunk when every fetched row has been handed out, and asks for the one
    /// after it.
    async fn refill(&mut self) -> Result<(), DbError> {
        if self.rows.is_empty() && !self.done {
            self.prefetch();
            let Some(fetch) = self.next.as_mut() else {
                return Ok(());
            };
            // Taken only once it has arrived: a refill dropped while it waits loses no rows.
            let fetched = (&mut fetch.0).await;
            self.next = None;
            let chunk = match fetched {
                Ok(chunk) => chunk.map_err(DbError::query("scanning the catalog"))?,
                // An error, not a panic re-raised here: the warm-up then joins its renderers
                // before it ends, as after any failed read.
                Err(e) => {
                    return Err(DbError::Unavailable(format!(
                        "a fetch of the catalog scan did not finish: {e}"
                    )))
                }
            };
            self.done = chunk.len() < CHUNK as usize;
            self.rows.extend(chunk);
            self.prefetch();
        }
        Ok(())
    }

    /// Rows for `product_id` (the read's first column), in order. Rows of products before it
    /// cannot exist (every read is ordered by product id and the products read leads).
    async fn take(&mut self, product_id: i64) -> Result<Vec<Row>, DbError> {
        let mut taken = Vec::new();
        loop {
            self.refill().await?;
            match self.rows.front() {
                Some(row) if row.get::<_, i64>(0) < product_id => {
                    self.rows.pop_front();
                }
                Some(row) if row.get::<_, i64>(0) == product_id => {
                    taken.extend(self.rows.pop_front());
                }
                Some(_) => return Ok(taken),
                None if self.done => return Ok(taken),
                None => {}
            }
        }
    }
}

/// A scan of the whole catalog, product by product, from one snapshot.
pub struct CatalogScan {
    reads: Vec<Read>,
    /// Products in the snapshot (for progress).
    pub products: i64,
    pub max_product_id: i64,
    pub questions: i64,
    pub max_question_id: i64,
}

/// The snapshot a scan reads, taken, with the sizes of the catalog in it.
pub struct Snapshot {
    /// The connection whose transaction exported it.
    first: Client,
    name: String,
    pub products: i64,
    pub max_product_id: i64,
    pub questions: i64,
    pub max_question_id: i64,
}

impl Snapshot {
    /// Takes the snapshot on a connection of the scan's own to `database`, and counts the
    /// products and questions in it. A change committed from here on is not in the scan.
    ///
    /// With `replayed_to`, `database` is a standby that must have replayed the primary's log
    /// up to that position: read before the snapshot is taken, so the snapshot has at least
    /// that much.
    pub async fn take(database: &Config, replayed_to: Option<Lsn>) -> Result<Snapshot, DbError> {
        let first = super::connect(database).await?;
        if let Some(needed) = replayed_to {
            let replayed: Option<PgLsn> = first
                .query_one("SELECT pg_last_wal_replay_lsn()", &[])
                .await
                .map_err(DbError::query("asking a replica how far it has replayed"))?
                .get(0);
            let replayed = replayed.map(u64::from).unwrap_or(0);
            if !super::fence::caught_up(replayed, needed) {
                return Err(DbError::Unavailable(format!(
                    "the replica has replayed to {}, short of {} (restarted? or not the server \
                     its watcher asked)",
                    PgLsn::from(replayed),
                    PgLsn::from(needed)
                )));
            }
        }
        first
            .batch_execute(&begin(None))
            .await
            .map_err(DbError::query("starting the catalog scan"))?;
        // The first query takes the snapshot every read then shares.
        let counts = first
            .query_one(
                "SELECT pg_export_snapshot(), count(*), coalesce(max(id), 0), \
                        (SELECT count(*) FROM questions), \
                        (SELECT coalesce(max(id), 0) FROM questions) \
                 FROM products",
                &[],
            )
            .await
            .map_err(DbError::query("counting products and questions"))?;
        let name: String = counts.get(0);
        // PostgreSQL names snapshots in hex digits and dashes; nothing else goes into SQL.
        if !name.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(DbError::Unavailable(format!(
                "unexpected snapshot name {name:?}"
            )));
        }
        Ok(Snapshot {
            first,
            name,
            products: counts.get(1),
            max_product_id: counts.get(2),
            questions: counts.get(3),
            max_question_id: counts.get(4),
        })
    }
}

impl CatalogScan {
    /// Opens the reads of `snapshot`: on its connection and more of the scan's own to
    /// `database`, which import the snapshot; each declares a cursor for its share of the
    /// reads. Every read's first chunk is asked for at once, so that PostgreSQL sorts on
    /// every connection together.
    pub async fn open(snapshot: Snapshot, database: &Config) -> Result<CatalogScan, DbError> {
        let name = &snapshot.name;
        let mut clients = vec![Arc::new(snapshot.first)];
        for _ in 1..CONNECTIONS {
            let client = super::connect(database).await?;
            client
                .batch_execute(&begin(Some(name)))
                .await
                .map_err(DbError::query("sharing the catalog scan's snapshot"))?;
            clients.push(Arc::new(client));
        }
        let mut reads = Vec::with_capacity(READS.len());
        for (i, sql) in READS.iter().enumerate() {
            let client = Arc::clone(&clients[i % CONNECTIONS]);
            client
                .batch_execute(&format!("DECLARE scan_{i} NO SCROLL CURSOR FOR {sql}"))
                .await
                .map_err(DbError::query("opening the catalog scan"))?;
            let fetch = client
                .prepare(&format!("FETCH {CHUNK} FROM scan_{i}"))
                .await
                .map_err(DbError::query("preparing the catalog scan"))?;
            reads.push(Read {
                client,
                fetch,
                rows: VecDeque::new(),
                next: None,
                done: false,
            });
        }
        futures_util::future::try_join_all(reads.iter_mut().map(Read::refill)).await?;
        Ok(CatalogScan {
            reads,
            products: snapshot.products,
            max_product_id: snapshot.max_product_id,
            questions: snapshot.questions,
            max_question_id: snapshot.max_question_id,
        })
    }

    /// The next product's rows, or None at the end of the catalog.
    pub async fn next(&mut self) -> Result<Option<ProductRows>, DbError> {
        let [products, features, styles, photos, skus, related, reviews, review_photos, counts, characteristics, questions, answers, answer_photos] =
            &mut self.reads[..]
        else {
            return Err(DbError::Unavailable("the catalog scan lost a read".into()));
        };
        products.refill().await?;
        let Some(p) = products.rows.pop_front() else {
            return Ok(None);
        };
        let id: i64 = p.get(0);
        let product = ProductRow {
            id,
            name: p.get(1),
            slogan: p.get(2),
            description: p.get(3),
            category: p.get(4),
            default_price: p.get(5),
        };
        let rows = ProductRows {
            product,
            features: (features.take(id).await?.iter())
                .map(|r| FeatureRow {
                    feature: r.get(1),
                    value: r.get(2),
                })
                .collect(),
            styles: (styles.take(id).await?.iter())
                .map(|r| StyleRow {
                    id: r.get(1),
                    name: r.get(2),
                    original_price: r.get(3),
                    sale_price: r.get(4),
                    default: r.get(5),
                })
                .collect(),
            photos: (photos.take(id).await?.iter())
                .map(|r| PhotoRow {
                    style_id: r.get(1),
                    url: r.get(2),
                    thumbnail_url: r.get(3),
                })
                .collect(),
            skus: (skus.take(id).await?.iter())
                .map(|r| SkuRow {
                    style_id: r.get(1),
                    id: r.get(2),
                    size: r.get(3),
                    quantity: r.get(4),
                })
                .collect(),
            related: (related.take(id).await?.iter()).map(|r| r.get(1)).collect(),
            reviews: (reviews.take(id).await?.iter())
                .map(|r| {
                    let date = date(r, 7)?;
                    Ok(ScannedReview {
                        row: ReviewRow {
                            id: r.get(1),
                            rating: r.get(2),
                            summary: r.get(3),
                            recommend: r.get(4),
                            response: r.get(5),
                            body: r.get(6),
                            date_ms: date.millis(),
                            reviewer_name: r.get(8),
                            helpfulness: r.get(9),
                        },
                        date_us: date.micros(),
                    })
                })
                .collect::<Result<_, DbError>>()?,
            review_photos: photo_urls(review_photos.take(id).await?),
            meta_counts: (counts.take(id).await?.iter())
                .map(|r| MetaCountRow {
                    rating: r.get(1),
                    recommend: r.get(2),
                    count: r.get(3),
                })
                .collect(),
            characteristics: (characteristics.take(id).await?.iter())
                .map(|r| CharacteristicRow {
                    id: r.get(1),
                    name: r.get(2),
                    mean: r.get(3),
                })
                .collect(),
            questions: (questions.take(id).await?.iter())
                .map(|r| {
                    Ok(ScannedQuestion {
                        row: QuestionRow {
                            id: r.get(1),
                            body: r.get(2),
                            date_ms: date(r, 3)?.millis(),
                            asker_name: r.get(4),
                            helpfulness: r.get(5),
                        },
                        reported: r.get(6),
                    })
                })
                .collect::<Result<_, DbError>>()?,
            answers: (answers.take(id).await?.iter())
                .map(|r| {
                    Ok(AnswerRow {
                        question_id: r.get(1),
                        id: r.get(2),
                        body: r.get(3),
                        date_ms: date(r, 4)?.millis(),
                        answerer_name: r.get(5),
                        helpfulness: r.get(6),
                    })
                })
                .collect::<Result<_, DbError>>()?,
            answer_photos: photo_urls(answer_photos.take(id).await?),
        };
        Ok(Some(rows))
    }
}

/// Column `i` of `row`, a date; an error for one no body can show (an infinite date).
fn date(row: &Row, i: usize) -> Result<Timestamp, DbError> {
    row.try_get(i).map_err(DbError::query("reading a date"))
}

fn photo_urls(rows: Vec<Row>) -> Vec<PhotoUrlRow> {
    rows.iter()
        .map(|r| PhotoUrlRow {
            owner_id: r.get(1),
            id: r.get(2),
            url: r.get(3),
        })
        .collect()
}
