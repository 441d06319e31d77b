//! Every write of the API, each one SQL statement with parameters only.
//!
//! A single statement is its own transaction, so a review with its photos and ratings is
//! written whole or not at all — and, unlike an explicit BEGIN/COMMIT, a single statement can
//! share a pooled connection with other requests' pipelined queries. Each function returns the
//! changes it made and its transaction's id, which the caller applies to its own cache before
//! answering (the change feed carries the same changes to every instance, this one included,
//! which knows them by the id).

use crate::domain::{Change, Mark};
use tokio_postgres::Statement;

use super::pool::Pool;
use super::read::Statements;
use super::DbError;

/// What a write changed, and the transaction that changed it (as change_log's rows from its
/// triggers name it: the change feed brings the same changes back with this id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub changes: Vec<Change>,
    pub xid: Option<i64>,
    /// A POST that an earlier attempt of the same request made: nothing was written.
    pub repeated: bool,
}

impl Written {
    fn by(row: &tokio_postgres::Row, xid_column: usize, changes: Vec<Change>) -> Written {
        Written {
            changes,
            xid: row.try_get(xid_column).ok(),
            repeated: false,
        }
    }

    /// What a POST's statement returned: the new row's id, or 1 (NULL where an earlier attempt
    /// of the request claimed its retry key, and this one wrote nothing), then the
    /// transaction's id where the log has the write. A retry still reports `changes`: what
    /// the first attempt changed, so that this instance refreshes it before answering, and the
    /// writer's next read has the write (all but a new question's answers, whose id a retry
    /// does not learn: the feed refreshes them). It reports no transaction, since its own
    /// wrote nothing for the feed to bring back.
    fn posted(row: &tokio_postgres::Row, changes: Vec<Change>) -> Written {
        match row.try_get::<_, Option<i64>>(0) {
            Ok(None) => Written {
                changes,
                xid: None,
                repeated: true,
            },
            _ => Written::by(row, 1, changes),
        }
    }
}

/// The id a POST claims in `applied_requests` for its `Idempotency-Key`: the key, after a
/// digest of the request it came with (`request`: its target, its caller, its body as sent).
/// A balancer's or a client's retry, the same request again, is recognised and made once;
/// another request under the same key (a client that reuses keys) is a request of its own,
/// never lost.
pub fn post_claim(key: &str, request: &[&[u8]]) -> String {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    for part in request {
        // Each part's length first, so that no two different splits of the bytes collide.
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    format!("post {} {key}", crate::cart_key::hex(&digest.finalize()))
}

/// A review as the client sent it, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    pub product_id: i64,
    pub rating: i16,
    pub summary: String,
    pub body: String,
    pub recommend: bool,
    pub name: String,
    pub email: String,
    pub photos: Vec<String>,
    /// (characteristic id, value 1–5)
    pub characteristics: Vec<(i64, i16)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewQuestion {
    pub product_id: i64,
    pub body: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAnswer {
    pub body: String,
    pub name: String,
    pub email: String,
    pub photos: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewInteraction {
    pub element: String,
    pub widget: String,
    pub time: String,
}

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The id in the path does not exist (404).
    #[error("not found")]
    NotFound,
    /// The body refers to something that does not exist or does not belong (422).
    #[error("invalid entries")]
    Invalid,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Maps a foreign-key violation (the referenced row is missing) to `missing`.
fn on_missing(missing: WriteError) -> impl FnOnce(DbError) -> WriteError {
    move |e| match &e {
        DbError::Failed(source)
            if source.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
        {
            missing
        }
        _ => WriteError::Db(e),
    }
}

/// Stores a review with its photos and ratings, once per `claim` (see [`post_claim`]).
pub async fn add_review(
    pool: &Pool,
    r: &NewReview,
    claim: Option<&str>,
) -> Result<Written, WriteError> {
    let (ids, values): (Vec<i64>, Vec<i16>) = r.characteristics.iter().copied().unzip();
    let row = pool
        .run(|c| async move {
            c.client
                .query_opt(
                    &c.statements.add_review,
                    &[
                        &r.product_id,
                        &r.rating,
                        &r.summary,
                        &r.body,
                        &r.recommend,
                        &r.name,
                        &r.email,
                        &r.photos,
                        &ids,
                        &values,
                        &claim,
                    ],
                )
                .await
        })
        .await
        .map_err(on_missing(WriteError::Invalid))?;
    // No row: a characteristic id that is not the product's.
    let row = row.ok_or(WriteError::Invalid)?;
    Ok(Written::posted(&row, vec![Change::Reviews(r.product_id)]))
}

pub async fn mark_review(
    pool: &Pool,
    id: i64,
    mark: Mark,
    retry_key: Option<&str>,
) -> Result<Written, WriteError> {
    let row = mark_row(pool, ("review", id), mark, retry_key, |s| {
        (&s.review_helpful, &s.review_report)
    })
    .await?;
    let product_id = row.get(0);
    let change = match mark {
        Mark::Helpful => Change::ReviewVotes {
            product: product_id,
            review: Some(id),
        },
        // A reported review leaves the meta's counts and means.
        Mark::Report => Change::Reviews(product_id),
    };
    Ok(Written::by(&row, 1, vec![change]))
}

/// Runs the helpful or the report statement that `pick` names for one row of `what`; NotFound
/// when no row has that id. A helpful vote is counted once per `retry_key` (the request's
/// `Idempotency-Key`, the same on a retry, scoped by its caller) and row: a client that sends
/// one key with every request loses no vote on another row. Returns the statement's
/// RETURNING row.
async fn mark_row(
    pool: &Pool,
    (what, id): (&str, i64),
    mark: Mark,
    retry_key: Option<&str>,
    pick: fn(&Statements) -> (&Statement, &Statement),
) -> Result<tokio_postgres::Row, WriteError> {
    let retry_key = retry_key.map(|r| format!("{what} {id} {r}"));
    let retry_key = retry_key.as_deref();
    let row = pool
        .run(|c| async move {
            let (helpful, report) = pick(&c.statements);
            match mark {
                Mark::Helpful => c.client.query_opt(helpful, &[&id, &retry_key]).await,
                Mark::Report => c.client.query_opt(report, &[&id]).await,
            }
        })
        .await?;
    row.ok_or(WriteError::NotFound)
}

/// Stores a question, once per `claim` (see [`post_claim`]).
pub async fn add_question(
    pool: &Pool,
    q: &NewQuestion,
    claim: Option<&str>,
) -> Result<Written, WriteError> {
    let row = pool
        .run(|c| async move {
            c.client
                .query_one(
                    &c.statements.add_question,
                    &[&q.product_id, &q.body, &q.name, &q.email, &claim],
                )
                .await
        })
        .await
        .map_err(on_missing(WriteError::Invalid))?;
    // The new question's answers exist from now on: a 404 held for its id (asked for before
    // the question was made) is stale, and the writer's next read must not get it. A retry
    // reads no id (NULL), and leaves that 404 to the feed.
    let mut changes = vec![Change::Questions(q.product_id)];
    changes.extend(row.try_get::<_, i64>(0).ok().map(Change::Answers));
    Ok(Written::posted(&row, changes))
}

pub async fn mark_question(
    pool: &Pool,
    id: i64,
    mark: Mark,
    retry_key: Option<&str>,
) -> Result<Written, WriteError> {
    let row = mark_row(pool, ("question", id), mark, retry_key, |s| {
        (&s.question_helpful, &s.question_report)
    })
    .await?;
    Ok(Written::by(&row, 1, vec![Change::Questions(row.get(0))]))
}

/// Stores an answer with its photos, once per `claim` (see [`post_claim`]).
pub async fn add_answer(
    pool: &Pool,
    question_id: i64,
    a: &NewAnswer,
    claim: Option<&str>,
) -> Result<Written, WriteError> {
    let row = pool
        .run(|c| async move {
            c.client
                .query_opt(
                    &c.statements.add_answer,
                    &[&question_id, &a.body, &a.name, &a.email, &a.photos, &claim],
                )
                .await
        })
        .await
        .map_err(on_missing(WriteError::NotFound))?;
    // No row: the question is gone (an earlier attempt answered it, and it was deleted since).
    let row = row.ok_or(WriteError::NotFound)?;
    let product_id: i64 = row.try_get(2).map_err(DbError::from_query)?;
    Ok(Written::posted(
        &row,
        vec![
            Change::Answers(question_id),
            Change::QuestionAnswers {
                product: product_id,
                question: question_id,
            },
        ],
    ))
}

pub async fn mark_answer(
    pool: &Pool,
    id: i64,
    mark: Mark,
    retry_key: Option<&str>,
) -> Result<Written, WriteError> {
    let row = mark_row(pool, ("answer", id), mark, retry_key, |s| {
        (&s.answer_helpful, &s.answer_report)
    })
    .await?;
    Ok(Written::by(
        &row,
        2,
        vec![
            Change::Answers(row.get(0)),
            Change::QuestionAnswers {
                product: row.get(1),
                question: row.get(0),
            },
        ],
    ))
}

/// Moves every cart stored under a key that does not match `final_keys` (a PostgreSQL regular
/// expression) and that `rekey` maps to another key, to that key, adding its counts to any
/// cart already there (several old keys may map to one: a caller's token and its digest);
/// one statement, so all or nothing. The log's trigger records old keys hashed (migration 4),
/// so a token moved here does not reach the log. Returns how many carts moved.
pub async fn rekey_carts(
    pool: &Pool,
    final_keys: &'static str,
    rekey: impl Fn(&str) -> Option<String>,
) -> Result<usize, DbError> {
    let stored = pool
        .run(|c| async move {
            c.client
                .query(
                    "SELECT DISTINCT session FROM cart_items WHERE session !~ $1",
                    &[&final_keys],
                )
                .await
        })
        .await?;
    let (old, new): (Vec<String>, Vec<String>) = stored
        .iter()
        .filter_map(|row| {
            let key: String = row.get(0);
            rekey(&key).map(|rekeyed| (key, rekeyed))
        })
        .unzip();
    let moved = old.len();
    if moved > 0 {
        pool.run(|c| async move {
            c.client
                .execute(
                    "WITH pairs AS (SELECT * FROM unnest($1::text[], $2::text[]) AS p(old, new)),
                     moved AS (
                         DELETE FROM cart_items c USING pairs p WHERE c.session = p.old
                         RETURNING p.new AS session, c.sku_id, c.count, c.updated_at)
                     INSERT INTO cart_items (session, sku_id, count, updated_at)
                     SELECT session, sku_id, LEAST(sum(count), 2147483647)::integer, max(updated_at)
                       FROM moved GROUP BY session, sku_id
                     ON CONFLICT (session, sku_id) DO UPDATE
                     SET count = LEAST(cart_items.count::bigint + EXCLUDED.count, 2147483647)::integer,
                         updated_at = greatest(cart_items.updated_at, EXCLUDED.updated_at)",
                    &[&old, &new],
                )
                .await
        })
        .await?;
    }
    Ok(moved)
}

/// Adds one of `sku_id` to the cart stored under `cart_key` (see `cart_key`: never a token),
/// once per `claim` (see [`post_claim`]).
pub async fn add_to_cart(
    pool: &Pool,
    cart_key: &str,
    sku_id: i64,
    claim: Option<&str>,
) -> Result<Written, WriteError> {
    let row = pool
        .run(|c| async move {
            c.client
                .query_one(&c.statements.add_to_cart, &[&cart_key, &sku_id, &claim])
                .await
        })
        .await
        .map_err(on_missing(WriteError::Invalid))?;
    Ok(Written::posted(
        &row,
        vec![Change::Cart(cart_key.to_owned())],
    ))
}

/// Logs an interaction, once per `claim` (see [`post_claim`]).
pub async fn add_interaction(
    pool: &Pool,
    i: &NewInteraction,
    claim: Option<&str>,
) -> Result<Written, WriteError> {
    let row = pool
        .run(|c| async move {
            c.client
                .query_one(
                    &c.statements.add_interaction,
                    &[&i.element, &i.widget, &i.time, &claim],
                )
                .await
        })
        .await?;
    // Nothing a read shows changed, and the log has no interactions (nor the row a
    // transaction id).
    Ok(Written::posted(&row, Vec::new()))
}
