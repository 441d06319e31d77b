//! Filling a cache entry: the resource's rows read from the database in one round trip,
//! then rendered. The only place where reading and rendering meet; rendering itself
//! (`crate::render`) never touches the database.

use super::Key;
use crate::domain::ReviewOrder;
use crate::pg::database::Database;
use crate::pg::pool::Pool;
use crate::pg::read::{self, QuestionKeys};
use crate::pg::DbError;
use crate::render::cart::render_cart;
use crate::render::products::{
    push_product_items, render_product, render_product_list, render_related, render_styles,
};
use crate::render::qa::{
    reanswered_in_place, reanswered_question_list, render_answer_list, render_question_list,
};
use crate::render::reviews::{
    render_meta, render_review_list, render_review_orders, revoted_review_orders,
    revoted_review_orders_of,
};
use crate::render::{Compaction, ItemList, PhotosByOwner, Rendered, SharedList};

/// Renders the resource behind `key` fresh from the database: what a fill caches, what the
/// sweep compares with, and what tests compare cached bodies with.
pub async fn fill(key: &Key, pool: &Pool) -> Result<Rendered, DbError> {
    match key {
        Key::ProductsPage { limit, offset, .. } => fill_product_list(pool, *limit, *offset).await,
        Key::Product(id) => fill_product(pool, *id).await,
        Key::Styles(id) => fill_styles(pool, *id).await,
        Key::Related(id) => fill_related(pool, *id).await,
        Key::Reviews { product_id, order } => fill_reviews(pool, *product_id, *order).await,
        Key::ReviewsMeta(id) => fill_meta(pool, *id).await,
        Key::Questions(id) => fill_questions(pool, *id).await,
        Key::Answers(id) => fill_answers(pool, *id).await,
        Key::Cart(session) => fill_cart(pool, session).await,
    }
}

async fn fill_product_list(pool: &Pool, limit: i64, offset: i64) -> Result<Rendered, DbError> {
    let rows = pool
        .run(|c| async move { read::products_page(&c, limit, offset).await })
        .await?;
    Ok(Rendered::Json(render_product_list(&rows)))
}

/// A `GET /products` page too large to hold, read in runs of `run_rows` products, fresh and
/// not cached: the first run at the page's offset, each later one after the last id the one
/// before sent (a keyset read, which scans no row twice).
pub struct ProductRuns {
    /// The last id sent; None before the first run.
    after: Option<i64>,
    offset: i64,
    left: u64,
    run_rows: i64,
}

impl ProductRuns {
    pub fn new(offset: i64, count: u64, run_rows: i64) -> ProductRuns {
        ProductRuns {
            after: None,
            offset,
            left: count,
            run_rows: run_rows.max(1),
        }
    }

    /// Appends the next run's items to `out` (after a comma, but for the first run's), as
    /// [`render_product_list`] separates them; returns whether another run may follow.
    pub async fn next(&mut self, db: &Database, out: &mut Vec<u8>) -> Result<bool, DbError> {
        let limit = i64::try_from(self.left).map_or(self.run_rows, |l| l.min(self.run_rows));
        let (after, offset) = (self.after, self.offset);
        let rows = db
            .read(|pool| {
                pool.run(move |c| async move {
                    match after {
                        None => read::products_page(&c, limit, offset).await,
                        Some(id) => read::products_after(&c, limit, id).await,
                    }
                })
            })
            .await?;
        if self.after.is_some() && !rows.is_empty() {
            out.push(b',');
        }
        push_product_items(out, &rows);
        self.left = self.left.saturating_sub(rows.len() as u64);
        match rows.last() {
            Some(last) if rows.len() as i64 == limit && self.left > 0 => {
                self.after = Some(last.id);
                Ok(true)
            }
            _ => Ok(false), // the page's last row, or the last product
        }
    }
}

async fn fill_product(pool: &Pool, id: i64) -> Result<Rendered, DbError> {
    let found = pool
        .run(|c| async move { read::product(&c, id).await })
        .await?;
    Ok(match found {
        Some((p, features)) => Rendered::Json(render_product(&p, &features)),
        None => Rendered::NotFound,
    })
}

async fn fill_styles(pool: &Pool, id: i64) -> Result<Rendered, DbError> {
    let found = pool
        .run(|c| async move { read::styles(&c, id).await })
        .await?;
    Ok(match found {
        Some((styles, photos, skus)) => Rendered::Json(render_styles(id, &styles, &photos, &skus)),
        None => Rendered::NotFound,
    })
}

async fn fill_related(pool: &Pool, id: i64) -> Result<Rendered, DbError> {
    let found = pool
        .run(|c| async move { read::related(&c, id).await })
        .await?;
    Ok(match found {
        Some(ids) => Rendered::Json(render_related(&ids)),
        None => Rendered::NotFound,
    })
}

async fn fill_reviews(
    pool: &Pool,
    product_id: i64,
    order: ReviewOrder,
) -> Result<Rendered, DbError> {
    let (reviews, photos) = pool
        .run(|c| async move { read::reviews(&c, product_id, order).await })
        .await?;
    Ok(Rendered::List(SharedList::new(render_review_list(
        &reviews, &photos,
    ))))
}

/// Renders both orders of a product's reviews from one read, the `newest` list an index into
/// the `helpful` list's buffer; compacted first as far as `compaction` packs lists, for the
/// precomputed catalog (see [`Rendered::compacted`]), so that the orders share it there too,
/// reusing the runs `previous` (the `helpful` list these replace) packed of the same items.
/// Returns the `helpful` list, then the `newest`.
pub async fn fill_review_orders(
    pool: &Pool,
    product_id: i64,
    compaction: Compaction,
    previous: Option<&ItemList>,
) -> Result<(Rendered, Rendered), DbError> {
    let (reviews, dates_us, photos) = pool
        .run(|c| async move { read::reviews_with_dates(&c, product_id).await })
        .await?;
    let (helpful, newest) = render_review_orders(
        product_id, &reviews, &dates_us, &photos, compaction, previous,
    );
    Ok((Rendered::List(helpful), Rendered::List(newest)))
}

/// What a revote of a product's review lists reads besides the held items.
#[derive(Debug, Clone, Copy)]
pub enum RevoteFrom<'a> {
    /// Every visible review's sort key: the votes are not named (a log row written before
    /// migration 13, or more than 64 reviews), or the held lists were filled apart and do
    /// not tell their reviews' order by date.
    EveryKey,
    /// The sort keys of the `reviews` voted on alone; `newest` is the held `newest` list, an
    /// order over the held `helpful` list's buffer, whose order by date the revote takes
    /// instead of reading every review's date.
    KeysOf {
        reviews: &'a [i64],
        newest: &'a ItemList,
    },
}

/// Both orders of a product's reviews after helpful votes alone changed them since `held`
/// (its `helpful` list) was rendered: the sort keys that `from` names read, and the held
/// items reused with their new helpfulness ([`revoted_review_orders_of`],
/// [`revoted_review_orders`]). Ok(None) where what was read
/// shows that something besides votes changed: only [`fill_review_orders`] renders that.
pub async fn revote_review_orders(
    pool: &Pool,
    product_id: i64,
    held: &ItemList,
    from: RevoteFrom<'_>,
    compaction: Compaction,
) -> Result<Option<(Rendered, Rendered)>, DbError> {
    let lists = match from {
        RevoteFrom::EveryKey => {
            let keys = pool
                .run(|c| async move { read::review_keys(&c, product_id).await })
                .await?;
            revoted_review_orders(product_id, held, &keys, compaction)
        }
        RevoteFrom::KeysOf { reviews, newest } => {
            let keys = pool
                .run(|c| async move { read::review_keys_of(&c, product_id, reviews).await })
                .await?;
            revoted_review_orders_of(product_id, held, newest, reviews, &keys, compaction)
        }
    };
    Ok(lists.map(|(helpful, newest)| (Rendered::List(helpful), Rendered::List(newest))))
}

/// A product's questions list after the answers of `answered` questions alone changed since
/// `held` was rendered: those questions' answers read, and the held items reused but for
/// theirs. `whose` keys are read: every question's, which order the whole list and must
/// match the held items ([`reanswered_question_list`]), or, for one question in a list kept
/// in runs, that question's alone, which place its item for it to be replaced where it is
/// ([`reanswered_in_place`]; the held list as it is where the question is not one it shows).
/// Ok(None) where what was read shows that more changed, or the question is not where its key
/// says: only [`fill`] renders that.
pub async fn reanswer_questions(
    pool: &Pool,
    product_id: i64,
    held: &SharedList,
    whose: QuestionKeys,
    answered: &[i64],
) -> Result<Option<Rendered>, DbError> {
    let (keys, answers, photos) =
        pool.run(|c| async move {
            read::question_keys_and_answers(&c, product_id, whose, answered).await
        })
        .await?;
    let list = match (whose, keys.as_slice()) {
        (QuestionKeys::Every, _) => {
            reanswered_question_list(held, &keys, answered, &answers, &photos).map(SharedList::new)
        }
        (QuestionKeys::Of(question), [key]) if key.id == question => {
            reanswered_in_place(product_id, held, key, &answers, &photos).map(SharedList::new)
        }
        // Not a question the list shows (reported): its answers change nothing in it.
        (QuestionKeys::Of(_), []) => Some(SharedList::clone(held)),
        (QuestionKeys::Of(_), _) => None,
    };
    Ok(list.map(Rendered::List))
}

async fn fill_meta(pool: &Pool, product_id: i64) -> Result<Rendered, DbError> {
    let (counts, characteristics) = pool
        .run(|c| async move { read::reviews_meta(&c, product_id).await })
        .await?;
    Ok(Rendered::Json(render_meta(
        product_id,
        &counts,
        &characteristics,
    )))
}

async fn fill_questions(pool: &Pool, product_id: i64) -> Result<Rendered, DbError> {
    let (questions, answers, photos) = pool
        .run(|c| async move { read::questions(&c, product_id).await })
        .await?;
    Ok(Rendered::List(SharedList::new(render_question_list(
        &questions,
        &answers,
        &PhotosByOwner::new(&photos),
    ))))
}

async fn fill_answers(pool: &Pool, question_id: i64) -> Result<Rendered, DbError> {
    let found = pool
        .run(|c| async move { read::answers(&c, question_id).await })
        .await?;
    Ok(match found {
        Some((answers, photos)) => Rendered::List(SharedList::new(render_answer_list(
            &answers,
            &PhotosByOwner::new(&photos),
        ))),
        None => Rendered::NotFound,
    })
}

async fn fill_cart(pool: &Pool, session: &str) -> Result<Rendered, DbError> {
    let session = session.to_owned();
    let rows = pool
        .run(|c| async move { read::cart(&c, &session).await })
        .await?;
    Ok(Rendered::Json(render_cart(&rows)))
}
