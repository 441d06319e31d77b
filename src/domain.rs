//! The API's domain vocabulary, shared by every layer: the review orders, the two marks a
//! `PUT` sets, and the changes the feed and the writes report. It depends on nothing, so
//! `http → cache → render → pg` holds for every other import.

/// The review orders the API knows; `relevant` shares `helpful`'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewOrder {
    Helpful,
    Newest,
}

/// The contract's default `count` of every paged endpoint: what the storefront's product page
/// asks for, so the catalog keeps page 1 of this many ready (a list's lead page, the first
/// `GET /products` pages).
pub const DEFAULT_COUNT: u64 = 5;

/// `page` and `count` as a request wrote them (digits, no leading zero), kept where one is
/// past 2^64-1: the arithmetic takes such a number as 2^64-1 (no list is that long), and the
/// heads that echo them write them as given, as the contract asks of huge counts (serve them,
/// never overflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagingDigits {
    pub page: Box<str>,
    pub count: Box<str>,
}

/// The two `PUT` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Helpful,
    Report,
}

/// What changed, as logged by the triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A product row: its detail, existence and the products list.
    Product(i64),
    /// A product's features.
    Features(i64),
    /// A product's styles, photos or skus.
    Styles(i64),
    /// A product's related rows.
    Related(i64),
    /// A product's reviews, their photos and ratings, or its characteristics.
    Reviews(i64),
    /// Helpful votes on a product's reviews (an update of a review that changed nothing but
    /// its helpfulness; migration 10): its review lists change, its meta does not, and is not
    /// read again (on a product with thousands of reviews, the meta's read is the costlier
    /// half of the refresh); nor are the reviews themselves. Logged with the detail
    /// `votes:<review id>` since migration 13, which names the `review` voted on: only its sort
    /// key is read again, where the two lists held are one buffer (and at most 64 reviews were
    /// voted on). A row logged as plain `votes` (before it) names none, and every review's sort
    /// key is read.
    ReviewVotes { product: i64, review: Option<i64> },
    /// A product's questions (any change of them but one of a question's answers alone).
    Questions(i64),
    /// The answers of one of a product's questions (or their photos), which the product's
    /// questions list nests: logged as the product's `questions` with the detail
    /// `answers:<question id>` (migration 11). The list's other items are not read again.
    QuestionAnswers { product: i64, question: i64 },
    /// A question's answers.
    Answers(i64),
    /// A caller's cart.
    Cart(String),
    /// Anything at all (a bulk load, a TRUNCATE).
    All,
}

impl Change {
    /// Whether refreshing this change's entries refreshes every entry of `other`'s: a change
    /// of a product's reviews includes a vote on them (a report of a review already reported
    /// changes nothing but is logged as a vote, migration 10), votes on reviews not named any
    /// vote on the product's, and a change of its questions one of a question's answers.
    pub fn includes(&self, other: &Change) -> bool {
        match (self, other) {
            (Change::Reviews(id), Change::ReviewVotes { product, .. }) => id == product,
            (
                Change::ReviewVotes {
                    product: a,
                    review: None,
                },
                Change::ReviewVotes { product: b, .. },
            ) => a == b,
            (Change::Questions(id), Change::QuestionAnswers { product, .. }) => id == product,
            _ => self == other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn a_change_includes_the_narrower_changes_of_the_same_entries_and_not_the_other_way() {
        let votes = |product, review| Change::ReviewVotes { product, review };
        assert!(Change::Reviews(3).includes(&votes(3, Some(8))));
        assert!(Change::Reviews(3).includes(&votes(3, None)));
        assert!(Change::Reviews(3).includes(&Change::Reviews(3)));
        assert!(!Change::Reviews(3).includes(&votes(4, None)));
        assert!(!votes(3, None).includes(&Change::Reviews(3)));
        assert!(votes(3, None).includes(&votes(3, Some(8))));
        assert!(votes(3, Some(8)).includes(&votes(3, Some(8))));
        assert!(!votes(3, Some(8)).includes(&votes(3, Some(9))));
        assert!(!votes(3, Some(8)).includes(&votes(3, None)));
        assert!(!votes(3, None).includes(&votes(4, Some(8))));
        assert!(!Change::Questions(3).includes(&Change::Answers(3)));
        let answers = Change::QuestionAnswers {
            product: 3,
            question: 9,
        };
        assert!(Change::Questions(3).includes(&answers));
        assert!(!Change::Questions(4).includes(&answers));
        assert!(!answers.includes(&Change::Questions(3)));
    }
}
