//! Which cache entries a change makes stale. The change feed and the instance that takes a
//! write both go through here, so the two can never disagree.

use std::sync::Arc;

use super::{Key, ResponseCache};
use crate::domain::Change;
use crate::domain::ReviewOrder;
use crate::pg::feed::ChangeSink;

impl ResponseCache {
    /// Drops every entry `change` makes stale.
    pub fn apply_change(&self, change: &Change) {
        match change {
            Change::Product(id) => {
                // Its detail, its existence (styles and related answer 404 without it) and
                // every page of the products list (a new generation of pages).
                self.invalidate(&Key::Product(*id));
                self.invalidate(&Key::Styles(*id));
                self.invalidate(&Key::Related(*id));
                self.next_products_generation();
            }
            Change::Features(id) => self.invalidate(&Key::Product(*id)),
            Change::Styles(id) => self.invalidate(&Key::Styles(*id)),
            Change::Related(id) => self.invalidate(&Key::Related(*id)),
            Change::Reviews(id) => {
                for order in [ReviewOrder::Helpful, ReviewOrder::Newest] {
                    self.invalidate(&Key::Reviews {
                        product_id: *id,
                        order,
                    });
                }
                self.invalidate(&Key::ReviewsMeta(*id));
            }
            Change::Questions(id) => self.invalidate(&Key::Questions(*id)),
            Change::Answers(id) => self.invalidate(&Key::Answers(*id)),
            Change::Cart(session) => self.invalidate(&Key::Cart(Arc::from(session.as_str()))),
            Change::All => self.clear(),
        }
    }
}

impl ChangeSink for ResponseCache {
    fn apply(&self, change: &Change) {
        self.apply_change(change);
    }

    fn reset(&self) {
        self.clear();
    }
}
