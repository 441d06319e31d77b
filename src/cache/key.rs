//! Cache keys: one per cached resource. Several routes share a key where one entry serves them
//! all — every page and count of a product's reviews in one order, for example.

use std::sync::Arc;

use crate::domain::ReviewOrder;
use crate::render::shared_codes::CodesKind;
use crate::render::Frame;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// One page of `GET /products` (the list is small per page and rarely read deep), in one
    /// generation of the products list: any product change starts a new generation, which
    /// makes every page of the old one unreachable at once — entries and fills in flight
    /// alike — without visiting them (they age out of the cache).
    ProductsPage {
        generation: u64,
        limit: i64,
        offset: i64,
    },
    Product(i64),
    Styles(i64),
    Related(i64),
    /// Every visible review of a product, in one order.
    Reviews {
        product_id: i64,
        order: ReviewOrder,
    },
    ReviewsMeta(i64),
    /// Every visible question of a product, with their answers.
    Questions(i64),
    /// Every visible answer of a question.
    Answers(i64),
    /// The cart of one caller (their Authorization token).
    Cart(Arc<str>),
}

impl Key {
    /// The frame of the pages cut from this key's list, if it holds one.
    pub fn frame(&self) -> Option<Frame> {
        match *self {
            Key::Reviews { product_id, .. } => Some(Frame::Reviews(product_id)),
            Key::Questions(product_id) => Some(Frame::Questions(product_id)),
            Key::Answers(question_id) => Some(Frame::Answers(question_id)),
            _ => None,
        }
    }

    /// The shared code this key's gzip body is written in, if its kind has one: its whole
    /// body's, or its list's lead page's.
    pub fn codes_kind(&self) -> Option<CodesKind> {
        match self {
            Key::Product(_) => Some(CodesKind::Product),
            Key::Styles(_) => Some(CodesKind::Styles),
            Key::ReviewsMeta(_) => Some(CodesKind::Meta),
            _ => self.frame().and_then(Frame::lead_codes),
        }
    }

    /// Approximate bytes the key itself costs in the cache, added to the body's weight.
    pub fn weight(&self) -> usize {
        64 + match self {
            Key::Cart(session) => session.len(),
            _ => 0,
        }
    }
}
