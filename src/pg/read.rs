//! The queries behind every GET (and the write statements of pg::write), prepared once per
//! pooled connection.
//!
//! Each resource is read in one round trip: either one query, or several issued together on
//! one connection (tokio-postgres pipelines them). Every query walks an index in the order it
//! returns rows (see sql/0001_schema.sql), and reported rows are never read. Dates come back as
//! PostgreSQL keeps them ([`Timestamp`]) and prices as text (`140.00`), the form the renderer
//! writes.

use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, Error, Statement};

use super::pool::Conn;
use super::DbError;
use crate::domain::ReviewOrder;

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        /// The prepared read statements of one connection.
        pub struct Statements { $(pub $name: Statement,)* }

        impl Statements {
            /// Prepares every statement, pipelined: one round trip in all.
            pub async fn prepare(client: &Client) -> Result<Statements, DbError> {
                let sql = [$($sql,)*];
                let prepared = futures_util::future::try_join_all(sql.iter().map(|s| client.prepare(s)))
                    .await
                    .map_err(DbError::from_query)?;
                let mut prepared = prepared.into_iter();
                let mut next = || prepared.next().ok_or_else(|| DbError::Unavailable("statement count mismatch".into()));
                Ok(Statements { $($name: next()?,)* })
            }
        }
    };
}

/// A helpful vote on a row of `$table` (`$1` its id), counted once per retry key (`$2`, the
/// request's `Idempotency-Key` with the row's name, or NULL): a retry of a vote already
/// counted finds its key in `applied_requests` (migration 6) and changes nothing, yet still
/// returns the row. A key is recorded only for a row that exists: a vote for an unknown id
/// (a 404) writes nothing. Returns `$returning`, then the transaction's id.
macro_rules! counted_once {
    ($table:literal, $returning:literal) => {
        concat!(
            "WITH counted AS (INSERT INTO applied_requests (id)
                              SELECT $2::text FROM ",
            $table,
            " WHERE id = $1 AND $2::text IS NOT NULL
                              ON CONFLICT (id) DO NOTHING RETURNING 1)
             UPDATE ",
            $table,
            " SET helpfulness = CASE
                 WHEN $2::text IS NULL OR EXISTS (SELECT 1 FROM counted)
                 THEN LEAST(helpfulness, 2147483646) + 1 ELSE helpfulness END
              WHERE id = $1
             RETURNING ",
            $returning,
            ", pg_current_xact_id()::text::int8"
        )
    };
}

/// The date a new review, question or answer is written with: now, to the millisecond. Loaded
/// rows are dated to the millisecond and bodies show no finer, so two rows written within one
/// millisecond tie on the date and go by id, as the contract's orders say, rather than by
/// microseconds no client sees.
macro_rules! to_the_millisecond {
    () => {
        "date_trunc('milliseconds', now())"
    };
}

/// The CTE (`claimed`) with which a POST claims its retry key (`$key`, see
/// `pg::write::post_claim`, or NULL) in `applied_requests`, `$when` (the clause that ends in
/// `WHERE` or `AND`) the request is valid. A key already claimed, by an earlier attempt of the
/// same request, is not claimed again (a concurrent attempt waits for the first to commit or
/// roll back), and [`unclaimed!`] then keeps the write from being made twice.
macro_rules! claimed_once {
    ($key:literal, $when:literal) => {
        concat!(
            " claimed AS (INSERT INTO applied_requests (id) SELECT ",
            $key,
            "::text ",
            $when,
            " ",
            $key,
            "::text IS NOT NULL ON CONFLICT (id) DO NOTHING RETURNING 1), "
        )
    };
}

/// The condition under which a POST with the retry key `$key` makes its write: it has no key,
/// or its [`claimed_once!`] claimed the key now.
macro_rules! unclaimed {
    ($key:literal) => {
        concat!(
            "(",
            $key,
            "::text IS NULL OR EXISTS (SELECT 1 FROM claimed))"
        )
    };
}

statements! {
    products_page = "SELECT id, name, slogan, description, category, default_price::text
                       FROM products ORDER BY id LIMIT $1 OFFSET $2";
    products_after = "SELECT id, name, slogan, description, category, default_price::text
                        FROM products WHERE id > $2 ORDER BY id LIMIT $1";
    product = "SELECT id, name, slogan, description, category, default_price::text
                 FROM products WHERE id = $1";
    product_exists = "SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)";
    features = "SELECT feature, value FROM features WHERE product_id = $1 ORDER BY id";
    styles = "SELECT id, name, original_price::text, sale_price::text, default_style
                FROM styles WHERE product_id = $1 ORDER BY id";
    photos = "SELECT p.style_id, p.url, p.thumbnail_url
                FROM styles s JOIN photos p ON p.style_id = s.id
               WHERE s.product_id = $1 ORDER BY p.style_id, p.id";
    skus = "SELECT k.style_id, k.id, k.size, k.quantity
              FROM styles s JOIN skus k ON k.style_id = s.id
             WHERE s.product_id = $1 ORDER BY k.style_id, k.id";
    related = "SELECT related_product_id FROM related WHERE product_id = $1 ORDER BY id";
    reviews_helpful = "SELECT id, rating, summary, recommend, response, body, date, reviewer_name, helpfulness
           FROM reviews WHERE product_id = $1 AND NOT reported
          ORDER BY helpfulness DESC, date DESC, id DESC";
    reviews_newest = "SELECT id, rating, summary, recommend, response, body, date, reviewer_name, helpfulness
           FROM reviews WHERE product_id = $1 AND NOT reported
          ORDER BY date DESC, id DESC";
    // What the two orders sort by, and nothing else: the index holds every column, so a
    // product's thousands of reviews are read without their text (a vote's refresh).
    review_keys = "SELECT id, helpfulness, date FROM reviews WHERE product_id = $1 AND NOT reported
          ORDER BY helpfulness DESC, date DESC, id DESC";
    // After votes on some reviews alone: their sort keys, of those still visible. By primary
    // key: `product_id + 0` keeps the planner off the product's index, which a prepared
    // statement's generic plan otherwise scans whole, filtering by id (0.19 ms against
    // 0.007 ms for a product with 4,400 reviews; docs/benchmarks.md, What a write costs).
    review_keys_of = "SELECT id, helpfulness, date FROM reviews
                       WHERE id = ANY($1) AND product_id + 0 = $2 AND NOT reported";
    review_photos = "SELECT p.review_id, p.id, p.url
                       FROM reviews r JOIN reviews_photos p ON p.review_id = r.id
                      WHERE r.product_id = $1 AND NOT r.reported ORDER BY p.review_id, p.id";
    meta_counts = "SELECT rating, recommend, count(*) FROM reviews
                    WHERE product_id = $1 AND NOT reported GROUP BY rating, recommend";
    // The mean as `characteristic_mean!` (src/pg/mod.rs) defines it, as the scan reads it.
    meta_characteristics = concat!(
        "SELECT c.id, c.name, ",
        characteristic_mean!(),
        " FROM characteristics c WHERE c.product_id = $1 ORDER BY c.id"
    );
    questions = "SELECT id, body, date, asker_name, helpfulness
           FROM questions WHERE product_id = $1 AND NOT reported
          ORDER BY helpfulness DESC, date DESC, id DESC";
    question_answers = "SELECT a.question_id, a.id, a.body, a.date, a.answerer_name, a.helpfulness
           FROM questions q JOIN answers a ON a.question_id = q.id AND NOT a.reported
          WHERE q.product_id = $1 AND NOT q.reported
          ORDER BY a.question_id, a.helpfulness DESC, a.date DESC, a.id DESC";
    question_answer_photos = "SELECT p.answer_id, p.id, p.url
                                FROM questions q
                                JOIN answers a ON a.question_id = q.id AND NOT a.reported
                                JOIN answers_photos p ON p.answer_id = a.id
                               WHERE q.product_id = $1 AND NOT q.reported
                               ORDER BY p.answer_id, p.id";
    // A product's questions list after answers alone changed: what orders and heads its
    // items (all in the index), and the answers of the questions whose answers changed.
    question_keys = "SELECT id, helpfulness, date FROM questions WHERE product_id = $1 AND NOT reported
          ORDER BY helpfulness DESC, date DESC, id DESC";
    // After one question's answers alone changed, where the list is replaced in place: that
    // question's key alone, if it is still the product's and visible; by primary key, as
    // `review_keys_of`.
    question_key_of = "SELECT id, helpfulness, date FROM questions
                        WHERE id = $1 AND product_id + 0 = $2 AND NOT reported";
    answers_of_questions = "SELECT question_id, id, body, date, answerer_name, helpfulness
           FROM answers WHERE question_id = ANY($1) AND NOT reported ORDER BY question_id, id";
    answer_photos_of_questions = "SELECT p.answer_id, p.id, p.url
                       FROM answers a JOIN answers_photos p ON p.answer_id = a.id
                      WHERE a.question_id = ANY($1) AND NOT a.reported ORDER BY p.answer_id, p.id";
    question_exists = "SELECT EXISTS (SELECT 1 FROM questions WHERE id = $1)";
    answers = "SELECT question_id, id, body, date, answerer_name, helpfulness
           FROM answers WHERE question_id = $1 AND NOT reported
          ORDER BY helpfulness DESC, date DESC, id DESC";
    answer_photos = "SELECT p.answer_id, p.id, p.url
                       FROM answers a JOIN answers_photos p ON p.answer_id = a.id
                      WHERE a.question_id = $1 AND NOT a.reported ORDER BY p.answer_id, p.id";
    cart = "SELECT sku_id, count FROM cart_items WHERE session = $1 ORDER BY sku_id";

    // Writes (see pg::write): one statement each, so each is atomic on its own. Each returns
    // its transaction's id, as the triggers log it in change_log.xid.
    add_review = concat!(
        "WITH valid AS (
              SELECT (SELECT count(*) FROM characteristics
                       WHERE product_id = $1 AND id = ANY ($9::int8[])) = cardinality($9::int8[]) AS ok),",
        claimed_once!("$11", "FROM valid WHERE ok AND"),
        "review AS (
              INSERT INTO reviews (product_id, rating, summary, body, recommend, reviewer_name, reviewer_email, date)
              SELECT $1, $2, $3, $4, $5, $6, $7, ", to_the_millisecond!(), " FROM valid WHERE ok AND ", unclaimed!("$11"), "
              RETURNING id),
          photos AS (
              INSERT INTO reviews_photos (review_id, url)
              SELECT review.id, url FROM review, unnest($8::text[]) WITH ORDINALITY AS p(url, n) ORDER BY n),
          ratings AS (
              INSERT INTO characteristic_reviews (characteristic_id, review_id, value)
              SELECT c, review.id, v FROM review, unnest($9::int8[], $10::int2[]) AS r(c, v))
          SELECT (SELECT id FROM review), pg_current_xact_id()::text::int8 FROM valid WHERE ok"
    );
    review_helpful = counted_once!("reviews", "product_id");
    review_report = "UPDATE reviews SET reported = true WHERE id = $1 RETURNING product_id, pg_current_xact_id()::text::int8";
    add_question = concat!(
        "WITH", claimed_once!("$5", "WHERE"),
        "question AS (
              INSERT INTO questions (product_id, body, asker_name, asker_email, date)
              SELECT $1, $2, $3, $4, ", to_the_millisecond!(), " WHERE ", unclaimed!("$5"), "
              RETURNING id)
          SELECT (SELECT id FROM question), pg_current_xact_id()::text::int8"
    );
    question_helpful = counted_once!("questions", "product_id");
    question_report = "UPDATE questions SET reported = true WHERE id = $1 RETURNING product_id, pg_current_xact_id()::text::int8";
    add_answer = concat!(
        "WITH", claimed_once!("$6", "WHERE"),
        "answer AS (
              INSERT INTO answers (question_id, body, answerer_name, answerer_email, date)
              SELECT $1, $2, $3, $4, ", to_the_millisecond!(), " WHERE ", unclaimed!("$6"), " RETURNING id),
          photos AS (
              INSERT INTO answers_photos (answer_id, url)
              SELECT answer.id, url FROM answer, unnest($5::text[]) WITH ORDINALITY AS p(url, n) ORDER BY n)
          SELECT (SELECT id FROM answer), pg_current_xact_id()::text::int8, product_id
            FROM questions WHERE id = $1"
    );
    answer_helpful = counted_once!(
        "answers",
        "question_id, (SELECT product_id FROM questions q WHERE q.id = answers.question_id)"
    );
    answer_report = "UPDATE answers SET reported = true WHERE id = $1
                     RETURNING question_id, (SELECT product_id FROM questions q WHERE q.id = answers.question_id), pg_current_xact_id()::text::int8";
    add_to_cart = concat!(
        "WITH", claimed_once!("$3", "WHERE"),
        "added AS (
              INSERT INTO cart_items (session, sku_id, count)
              SELECT $1, $2, 1 WHERE ", unclaimed!("$3"), "
              ON CONFLICT (session, sku_id)
              DO UPDATE SET count = LEAST(cart_items.count, 2147483646) + 1, updated_at = now()
              RETURNING 1::int8)
          SELECT (SELECT * FROM added), pg_current_xact_id()::text::int8"
    );
    add_interaction = concat!(
        "WITH", claimed_once!("$4", "WHERE"),
        "added AS (
              INSERT INTO interactions (element, widget, time)
              SELECT $1, $2, $3 WHERE ", unclaimed!("$4"), " RETURNING 1::int8)
          SELECT (SELECT * FROM added)"
    );
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub id: i64,
    pub name: Option<String>,
    pub slogan: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub default_price: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureRow {
    pub feature: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StyleRow {
    pub id: i64,
    pub name: Option<String>,
    pub original_price: Option<String>,
    pub sale_price: Option<String>,
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoRow {
    pub style_id: i64,
    pub url: Option<String>,
    pub thumbnail_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuRow {
    pub style_id: i64,
    pub id: i64,
    pub size: Option<String>,
    pub quantity: i32,
}

/// A date no body can show: `±infinity`, or past the last microsecond an `i64` counts from
/// 1970. The bulk loader and the API never write one; a row written by hand can.
#[derive(Debug, thiserror::Error)]
#[error("a date no body can show (infinite, or past the year 294,000)")]
pub struct UnrenderableDate;

/// A `timestamptz` as microseconds since the Unix epoch, read from the form PostgreSQL sends
/// (microseconds since 2000-01-01): exact, and cheaper than having the database compute
/// `extract(epoch …)` for every row (a third of the read of a long list of reviews, measured).
/// `±infinity` is refused ([`UnrenderableDate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The date `micros` microseconds after the Unix epoch (what the database would send; for
    /// tests and benches).
    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch: the column's order.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// Whole milliseconds since the Unix epoch, rounded down, as a body shows the date.
    pub fn millis(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

impl<'a> FromSql<'a> for Timestamp {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> Result<Timestamp, Box<dyn std::error::Error + Sync + Send>> {
        /// Microseconds from 1970-01-01 to 2000-01-01.
        const EPOCH_TO_2000: i64 = 946_684_800_000_000;
        let since_2000 = i64::from_be_bytes(raw.try_into()?);
        if since_2000 == i64::MAX || since_2000 == i64::MIN {
            return Err(Box::new(UnrenderableDate));
        }
        match since_2000.checked_add(EPOCH_TO_2000) {
            Some(micros) => Ok(Timestamp(micros)),
            None => Err(Box::new(UnrenderableDate)),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRow {
    pub id: i64,
    pub rating: i16,
    pub summary: Option<String>,
    pub recommend: bool,
    pub response: Option<String>,
    pub body: Option<String>,
    pub date_ms: i64,
    pub reviewer_name: Option<String>,
    pub helpfulness: i32,
}

/// Where a review or a question sorts in its product's lists, which is also all its item
/// shows of it besides text ([`review_keys`], [`question_keys_and_answers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKeyRow {
    pub id: i64,
    pub helpfulness: i32,
    pub date: Timestamp,
}

/// A photo of a review or an answer: its owner's id, its own id and its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoUrlRow {
    pub owner_id: i64,
    pub id: i64,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCountRow {
    pub rating: i16,
    pub recommend: bool,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharacteristicRow {
    pub id: i64,
    /// None for a characteristic loaded without a name: shown under the name "null".
    pub name: Option<String>,
    /// `avg()` of the visible reviews' values as PostgreSQL renders it; None when none.
    pub mean: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionRow {
    pub id: i64,
    pub body: Option<String>,
    pub date_ms: i64,
    pub asker_name: Option<String>,
    pub helpfulness: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRow {
    pub question_id: i64,
    pub id: i64,
    pub body: Option<String>,
    pub date_ms: i64,
    pub answerer_name: Option<String>,
    pub helpfulness: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartRow {
    pub sku_id: i64,
    pub count: i32,
}

fn photo_urls(rows: Vec<tokio_postgres::Row>) -> Vec<PhotoUrlRow> {
    rows.iter()
        .map(|r| PhotoUrlRow {
            owner_id: r.get(0),
            id: r.get(1),
            url: r.get(2),
        })
        .collect()
}

fn product_row(r: &tokio_postgres::Row) -> ProductRow {
    ProductRow {
        id: r.get(0),
        name: r.get(1),
        slogan: r.get(2),
        description: r.get(3),
        category: r.get(4),
        default_price: r.get(5),
    }
}

/// How many products there are.
pub async fn product_count(conn: &Conn) -> Result<i64, Error> {
    let row = conn
        .client
        .query_one("SELECT count(*) FROM products", &[])
        .await?;
    row.try_get(0)
}

pub async fn products_page(conn: &Conn, limit: i64, offset: i64) -> Result<Vec<ProductRow>, Error> {
    let rows = conn
        .client
        .query(&conn.statements.products_page, &[&limit, &offset])
        .await?;
    Ok(rows.iter().map(product_row).collect())
}

/// Up to `limit` products with ids above `after`, by id: the next run of a page read in runs.
pub async fn products_after(conn: &Conn, limit: i64, after: i64) -> Result<Vec<ProductRow>, Error> {
    let rows = conn
        .client
        .query(&conn.statements.products_after, &[&limit, &after])
        .await?;
    Ok(rows.iter().map(product_row).collect())
}

pub async fn product(conn: &Conn, id: i64) -> Result<Option<(ProductRow, Vec<FeatureRow>)>, Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&id];
    let s = &conn.statements;
    let (product, features) = tokio::try_join!(
        conn.client.query_opt(&s.product, &args),
        conn.client.query(&s.features, &args)
    )?;
    Ok(product.map(|p| {
        let features = features
            .iter()
            .map(|r| FeatureRow {
                feature: r.get(0),
                value: r.get(1),
            })
            .collect();
        (product_row(&p), features)
    }))
}

/// A product's styles with their photos and skus; None for an unknown product.
pub async fn styles(
    conn: &Conn,
    id: i64,
) -> Result<Option<(Vec<StyleRow>, Vec<PhotoRow>, Vec<SkuRow>)>, Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&id];
    let s = &conn.statements;
    let c = &conn.client;
    let (exists, styles, photos, skus) = tokio::try_join!(
        c.query_one(&s.product_exists, &args),
        c.query(&s.styles, &args),
        c.query(&s.photos, &args),
        c.query(&s.skus, &args),
    )?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let styles = styles
        .iter()
        .map(|r| StyleRow {
            id: r.get(0),
            name: r.get(1),
            original_price: r.get(2),
            sale_price: r.get(3),
            default: r.get(4),
        })
        .collect();
    let photos = photos
        .iter()
        .map(|r| PhotoRow {
            style_id: r.get(0),
            url: r.get(1),
            thumbnail_url: r.get(2),
        })
        .collect();
    let skus = skus
        .iter()
        .map(|r| SkuRow {
            style_id: r.get(0),
            id: r.get(1),
            size: r.get(2),
            quantity: r.get(3),
        })
        .collect();
    Ok(Some((styles, photos, skus)))
}

/// The related product ids, in row order; None for an unknown product.
pub async fn related(conn: &Conn, id: i64) -> Result<Option<Vec<i64>>, Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&id];
    let s = &conn.statements;
    let (exists, related) = tokio::try_join!(
        conn.client.query_one(&s.product_exists, &args),
        conn.client.query(&s.related, &args),
    )?;
    Ok(exists
        .get::<_, bool>(0)
        .then(|| related.iter().map(|r| r.get(0)).collect()))
}

/// A product's visible reviews in `order`, with their photos (ordered by review, then id).
pub async fn reviews(
    conn: &Conn,
    product_id: i64,
    order: ReviewOrder,
) -> Result<(Vec<ReviewRow>, Vec<PhotoUrlRow>), Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&product_id];
    let s = &conn.statements;
    let statement = match order {
        ReviewOrder::Helpful => &s.reviews_helpful,
        ReviewOrder::Newest => &s.reviews_newest,
    };
    let (reviews, photos) = tokio::try_join!(
        conn.client.query(statement, &args),
        conn.client.query(&s.review_photos, &args),
    )?;
    let reviews = reviews.iter().map(review_row).collect::<Result<_, _>>()?;
    Ok((reviews, photo_urls(photos)))
}

/// A product's visible reviews in `helpful` order with the microseconds of their dates (to
/// order the `newest` list exactly, as PostgreSQL orders the column), and their photos: both
/// orders from one read.
pub async fn reviews_with_dates(
    conn: &Conn,
    product_id: i64,
) -> Result<(Vec<ReviewRow>, Vec<i64>, Vec<PhotoUrlRow>), Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&product_id];
    let s = &conn.statements;
    let (rows, photos) = tokio::try_join!(
        conn.client.query(&s.reviews_helpful, &args),
        conn.client.query(&s.review_photos, &args),
    )?;
    let reviews = rows.iter().map(review_row).collect::<Result<_, _>>()?;
    let dates_us = rows
        .iter()
        .map(|r| Ok(r.try_get::<_, Timestamp>(6)?.micros()))
        .collect::<Result<_, Error>>()?;
    Ok((reviews, dates_us, photo_urls(photos)))
}

/// What a product's two review orders sort by: every visible review's id, helpfulness and
/// date, in `helpful` order.
pub async fn review_keys(conn: &Conn, product_id: i64) -> Result<Vec<SortKeyRow>, Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&product_id];
    let rows = conn
        .client
        .query(&conn.statements.review_keys, &args)
        .await?;
    rows.iter().map(sort_key_row).collect()
}

/// The sort keys of those of `reviews` that are still `product_id`'s visible reviews, in no
/// order.
pub async fn review_keys_of(
    conn: &Conn,
    product_id: i64,
    reviews: &[i64],
) -> Result<Vec<SortKeyRow>, Error> {
    let args: [&(dyn ToSql + Sync); 2] = [&reviews, &product_id];
    let rows = conn
        .client
        .query(&conn.statements.review_keys_of, &args)
        .await?;
    rows.iter().map(sort_key_row).collect()
}

/// A row of `id, helpfulness, date`.
fn sort_key_row(r: &tokio_postgres::Row) -> Result<SortKeyRow, Error> {
    Ok(SortKeyRow {
        id: r.get(0),
        helpfulness: r.get(1),
        date: r.try_get(2)?,
    })
}

fn review_row(r: &tokio_postgres::Row) -> Result<ReviewRow, Error> {
    Ok(ReviewRow {
        id: r.get(0),
        rating: r.get(1),
        summary: r.get(2),
        recommend: r.get(3),
        response: r.get(4),
        body: r.get(5),
        date_ms: r.try_get::<_, Timestamp>(6)?.millis(),
        reviewer_name: r.get(7),
        helpfulness: r.get(8),
    })
}

pub async fn reviews_meta(
    conn: &Conn,
    product_id: i64,
) -> Result<(Vec<MetaCountRow>, Vec<CharacteristicRow>), Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&product_id];
    let s = &conn.statements;
    let (counts, characteristics) = tokio::try_join!(
        conn.client.query(&s.meta_counts, &args),
        conn.client.query(&s.meta_characteristics, &args),
    )?;
    let counts = counts
        .iter()
        .map(|r| MetaCountRow {
            rating: r.get(0),
            recommend: r.get(1),
            count: r.get(2),
        })
        .collect();
    let characteristics = characteristics
        .iter()
        .map(|r| CharacteristicRow {
            id: r.get(0),
            name: r.get(1),
            mean: r.get(2),
        })
        .collect();
    Ok((counts, characteristics))
}

fn answer_row(r: &tokio_postgres::Row) -> Result<AnswerRow, Error> {
    Ok(AnswerRow {
        question_id: r.get(0),
        id: r.get(1),
        body: r.get(2),
        date_ms: r.try_get::<_, Timestamp>(3)?.millis(),
        answerer_name: r.get(4),
        helpfulness: r.get(5),
    })
}

/// A product's visible questions in order, their visible answers (grouped by question, in
/// order) and those answers' photos.
pub async fn questions(
    conn: &Conn,
    product_id: i64,
) -> Result<(Vec<QuestionRow>, Vec<AnswerRow>, Vec<PhotoUrlRow>), Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&product_id];
    let s = &conn.statements;
    let c = &conn.client;
    let (questions, answers, photos) = tokio::try_join!(
        c.query(&s.questions, &args),
        c.query(&s.question_answers, &args),
        c.query(&s.question_answer_photos, &args),
    )?;
    let questions = questions
        .iter()
        .map(|r| {
            Ok(QuestionRow {
                id: r.get(0),
                body: r.get(1),
                date_ms: r.try_get::<_, Timestamp>(2)?.millis(),
                asker_name: r.get(3),
                helpfulness: r.get(4),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok((
        questions,
        answers.iter().map(answer_row).collect::<Result<_, _>>()?,
        photo_urls(photos),
    ))
}

/// Whose sort keys a reanswer reads ([`question_keys_and_answers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionKeys {
    /// Every visible question's of the product, in the list's order.
    Every,
    /// This question's alone, if it is still the product's and visible.
    Of(i64),
}

/// What a product's questions list is ordered and headed by, the questions' id, helpfulness
/// and date (every visible question's, or one's: `whose`); and every visible answer of the
/// questions `answered`, with their photos.
pub async fn question_keys_and_answers(
    conn: &Conn,
    product_id: i64,
    whose: QuestionKeys,
    answered: &[i64],
) -> Result<(Vec<SortKeyRow>, Vec<AnswerRow>, Vec<PhotoUrlRow>), Error> {
    let s = &conn.statements;
    let c = &conn.client;
    let (statement, args): (_, Vec<&(dyn ToSql + Sync)>) = match &whose {
        QuestionKeys::Every => (&s.question_keys, vec![&product_id]),
        QuestionKeys::Of(question) => (&s.question_key_of, vec![question, &product_id]),
    };
    let questions: [&(dyn ToSql + Sync); 1] = [&answered];
    let (keys, answers, photos) = tokio::try_join!(
        c.query(statement, &args),
        c.query(&s.answers_of_questions, &questions),
        c.query(&s.answer_photos_of_questions, &questions),
    )?;
    let keys = keys.iter().map(sort_key_row).collect::<Result<_, _>>()?;
    Ok((
        keys,
        answers.iter().map(answer_row).collect::<Result<_, _>>()?,
        photo_urls(photos),
    ))
}

/// A question's visible answers in order with their photos; None for an unknown question.
pub async fn answers(
    conn: &Conn,
    question_id: i64,
) -> Result<Option<(Vec<AnswerRow>, Vec<PhotoUrlRow>)>, Error> {
    let args: [&(dyn ToSql + Sync); 1] = [&question_id];
    let s = &conn.statements;
    let c = &conn.client;
    let (exists, answers, photos) = tokio::try_join!(
        c.query_one(&s.question_exists, &args),
        c.query(&s.answers, &args),
        c.query(&s.answer_photos, &args),
    )?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let answers = answers.iter().map(answer_row).collect::<Result<_, _>>()?;
    Ok(Some((answers, photo_urls(photos))))
}

pub async fn cart(conn: &Conn, session: &str) -> Result<Vec<CartRow>, Error> {
    let rows = conn
        .client
        .query(&conn.statements.cart, &[&session])
        .await?;
    Ok(rows
        .iter()
        .map(|r| CartRow {
            sku_id: r.get(0),
            count: r.get(1),
        })
        .collect())
}
