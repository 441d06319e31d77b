//! The API's domain vocabulary, shared by every layer: the review orders, the two marks a
//! `PUT` sets, and the changes the feed and the writes report. It depends on nothing, so
//! `http → cache → render → pg` holds for every other import.

/// The review orders the API knows; `relevant` shares `helpful`'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewOrder {
    Helpful,
    Newest,
}

/// The two `PUT` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Helpful,
    Report,
}

/// What changed: as the triggers log it, or, for a helpful vote on a review, as only the
/// instance that took the vote knows it ([`Change::ReviewVotes`]).
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
    /// Helpful votes on a product's reviews: its review lists change, its meta does not. The
    /// triggers log such a vote as [`Change::Reviews`]; only the instance that took the vote
    /// knows that it was no more than that, and refreshes no meta for it (on a product with
    /// thousands of reviews, the meta's read is the costlier half of the refresh).
    ReviewVotes(i64),
    /// A product's questions (or the answers nested in them).
    Questions(i64),
    /// A question's answers.
    Answers(i64),
    /// A caller's cart.
    Cart(String),
    /// Anything at all (a bulk load, a TRUNCATE).
    All,
}

impl Change {
    /// Whether the triggers log this change as `logged`: a vote on a product's reviews is
    /// logged as a change of its reviews, every other change as itself.
    pub fn is_logged_as(&self, logged: &Change) -> bool {
        match (self, logged) {
            (Change::ReviewVotes(id), Change::Reviews(logged_id)) => id == logged_id,
            _ => self == logged,
        }
    }
}
