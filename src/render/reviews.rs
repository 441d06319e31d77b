//! Bodies of the ratings & reviews widget: a product's reviews (every page of one sort order
//! from one list) and its review metadata.

use bytes::Bytes;

use super::json::{push_bool, push_date, push_int, push_int_str, push_opt_str, push_str};
use super::{
    group_by, int_of, item_key, key_at, leading_id, place_by_key, push_id_url_photos, value_at,
    ById, Compaction, Echo, Frame, ItemKey, ItemList, ItemListBuilder, Parts, Replaced, SharedList,
};
use crate::pg::read::{CharacteristicRow, MetaCountRow, PhotoUrlRow, ReviewRow, SortKeyRow};

/// The items of `GET /reviews`, in the order given.
pub fn render_review_list(reviews: &[ReviewRow], photos: &[PhotoUrlRow]) -> ItemList {
    let photos = group_by(photos, |p| p.owner_id);
    let mut list = ItemListBuilder::default();
    for r in reviews {
        let out = list.next_item();
        out.extend_from_slice(b"{\"review_id\":");
        push_int(out, r.id);
        out.extend_from_slice(b",\"rating\":");
        push_int(out, r.rating);
        out.extend_from_slice(b",\"summary\":");
        push_opt_str(out, r.summary.as_deref());
        out.extend_from_slice(b",\"recommend\":");
        push_bool(out, r.recommend);
        out.extend_from_slice(b",\"response\":");
        push_opt_str(out, r.response.as_deref());
        out.extend_from_slice(b",\"body\":");
        push_opt_str(out, r.body.as_deref());
        out.extend_from_slice(b",\"date\":");
        push_date(out, r.date_ms);
        out.extend_from_slice(b",\"reviewer_name\":");
        push_opt_str(out, r.reviewer_name.as_deref());
        out.extend_from_slice(b",\"helpfulness\":");
        push_int(out, r.helpfulness);
        out.extend_from_slice(b",\"photos\":");
        push_id_url_photos(out, photos.get(&r.id));
        out.push(b'}');
        list.end_item();
    }
    list.finish()
}

/// The `newest` order of reviews given in `helpful` order, as indexes into them: by date, then
/// id, both descending (`ids[i]` and `dates_us[i]` are review `i`'s id and its date in
/// microseconds). Always a permutation of every review (one without a date sorts last).
fn newest_order(ids: &[i64], dates_us: &[i64]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.sort_by_key(|&i| {
        let date = dates_us.get(i as usize).copied().unwrap_or(i64::MIN);
        std::cmp::Reverse((date, ids[i as usize]))
    });
    order
}

/// Both orders of a product's reviews from one render: `reviews` in `helpful` order (with
/// `dates_us`, their dates in microseconds) rendered once, and the `newest` list an index into
/// the same buffer. The buffer is compacted first as far as `compaction` packs lists, for
/// `product_id`'s pages ([`ItemList::compacted`]), so that the two orders share the compact
/// buffer, reusing the runs `previous` (the `helpful` list these replace) packed of the same
/// items. Returns the `helpful` list, then the `newest`.
pub fn render_review_orders(
    product_id: i64,
    reviews: &[ReviewRow],
    dates_us: &[i64],
    photos: &[PhotoUrlRow],
    compaction: Compaction,
    previous: Option<&ItemList>,
) -> (SharedList, SharedList) {
    let ids: Vec<i64> = reviews.iter().map(|r| r.id).collect();
    let helpful = render_review_list(reviews, photos);
    let previous = previous.map(Replaced::packed);
    let newest = newest_order(&ids, dates_us);
    both_orders(product_id, helpful, newest, compaction, previous)
}

/// Both orders of a product's reviews after helpful votes, and nothing else, changed them:
/// the items of `held`, the `helpful` list rendered before the votes, with each one's
/// helpfulness rewritten, in the order of `keys` (every visible review's id, helpfulness and
/// date in `helpful` order, as the database has them now). The same bytes as
/// [`render_review_orders`] from the rows, without reading any review's text again. None where
/// something else changed as far as `keys` tell — a review added, hidden or shown, a shown
/// date changed — or `held` is not a `helpful` list this module rendered: only a fresh read
/// renders that. (A change to a review's text is not in `keys`; the change feed brings it, and its
/// refresh reads afresh.)
pub fn revoted_review_orders(
    product_id: i64,
    held: &ItemList,
    keys: &[SortKeyRow],
    compaction: Compaction,
) -> Option<(SharedList, SharedList)> {
    if held.len() != keys.len() {
        return None;
    }
    let buffer = held.own_items()?;
    let mut by_id: ById<HeldReview<'_>> =
        ById::with_capacity_and_hasher(keys.len(), Default::default());
    for p in 0..held.len() {
        let review = HeldReview::parse(held.own_item(&buffer, p)?)?;
        if by_id.insert(review.id, review).is_some() {
            return None;
        }
    }
    let mut list = ItemListBuilder::default();
    let mut date = Vec::with_capacity(32);
    for key in keys {
        let review = by_id.remove(&key.id)?;
        date.clear();
        push_date(&mut date, key.date.millis());
        if review.date != date.as_slice() {
            return None;
        }
        review.push_with_helpfulness(list.next_item(), key.helpfulness);
        list.end_item();
    }
    let ids: Vec<i64> = keys.iter().map(|k| k.id).collect();
    let dates_us: Vec<i64> = keys.iter().map(|k| k.date.micros()).collect();
    Some(both_orders(
        product_id,
        list.finish(),
        newest_order(&ids, &dates_us),
        compaction,
        Some(Replaced::unpacked(held, &buffer)),
    ))
}

/// Both orders of a product's reviews after helpful votes on the reviews `voted`, and
/// nothing else, changed them: the items of `held` (the `helpful` list rendered before the
/// votes) in the order the database gives them now, the voted ones' helpfulness rewritten
/// from `keys` (the sort keys of those of `voted` still visible, in any order). The other
/// reviews' sort keys are not read: their helpfulness is their items', and the order of their
/// dates (the `helpful` order's tie-break: date, then id) is `newest`'s, the `newest` list
/// over `held`'s buffer. The same bytes as [`render_review_orders`] from the rows, provided
/// the change feed brought every change since `held` (as it does): unlike
/// [`revoted_review_orders`], what is read cannot show a review added or hidden without a
/// log. None where the lists cannot be vouched for: `newest` is not an order of `held`'s
/// buffer, an item is not one this module rendered, a voted review held is not visible now
/// (or the other way round) or shows another date.
pub fn revoted_review_orders_of(
    product_id: i64,
    held: &ItemList,
    newest: &ItemList,
    voted: &[i64],
    keys: &[SortKeyRow],
    compaction: Compaction,
) -> Option<(SharedList, SharedList)> {
    let n = held.len();
    let by_date = newest
        .order()
        .filter(|order| order.len() == n && newest.is_reordered_over(held))?;
    // One vote on a list packed in several runs: only the runs a binary search probes and
    // those the review moves through are unpacked, and only the latter packed again. A list
    // not kept as a fresh render would keep it goes through the general revote below.
    if let ([id], [key]) = (voted, keys) {
        if key.id == *id && compaction.keeps_in_runs(held, Frame::Reviews(product_id)) {
            if let Some(lists) = revoted_in_place(product_id, held, by_date, key) {
                return Some(lists);
            }
        }
    }
    let buffer = held.own_items()?;
    let items = (0..n)
        .map(|p| HeldReview::parse(held.own_item(&buffer, p)?))
        .collect::<Option<Vec<_>>>()?;
    let mut helpfulness = items
        .iter()
        .map(|review| int_of::<i32>(review.helpfulness))
        .collect::<Option<Vec<_>>>()?;
    let mut rewritten = vec![false; n];
    let mut date = Vec::with_capacity(32);
    for id in voted {
        let held_at = items.iter().position(|review| review.id == *id);
        match (held_at, keys.iter().find(|key| key.id == *id)) {
            // Hidden before the votes and after them (a vote on a reported review).
            (None, None) => {}
            (Some(p), Some(key)) => {
                date.clear();
                push_date(&mut date, key.date.millis());
                if items[p].date != date.as_slice() {
                    return None;
                }
                helpfulness[p] = key.helpfulness;
                rewritten[p] = true;
            }
            _ => return None,
        }
    }
    if keys.iter().any(|key| !voted.contains(&key.id)) {
        return None;
    }
    let date_rank = date_ranks(by_date, n)?;
    let mut helpful: Vec<u32> = (0..n as u32).collect();
    helpful.sort_unstable_by_key(|&p| {
        let p = p as usize;
        (std::cmp::Reverse(helpfulness[p]), date_rank[p])
    });
    let mut list = ItemListBuilder::default();
    let mut moved_to = vec![0u32; n];
    for (at, &p) in helpful.iter().enumerate() {
        let p = p as usize;
        moved_to[p] = at as u32;
        let review = &items[p];
        let out = list.next_item();
        if rewritten[p] {
            review.push_with_helpfulness(out, helpfulness[p]);
        } else {
            out.extend_from_slice(review.item);
        }
        list.end_item();
    }
    let newest = by_date.iter().map(|&p| moved_to[p as usize]).collect();
    Some(both_orders(
        product_id,
        list.finish(),
        newest,
        compaction,
        Some(Replaced::unpacked(held, &buffer)),
    ))
}

/// [`revoted_review_orders_of`] for one vote (`key`, the review's sort key now) on `held`, a
/// list packed in runs, without unpacking all of it: the review is found by its shown date in
/// `by_date` (the held `newest` order, positions in `held`: by date, then id, both descending,
/// so shown dates never rise along it: the search unpacks the runs it probes, up to about
/// log₂ of the item count), moved past its neighbours as far as its new helpfulness takes it
/// (ties going by `by_date`, as in the `helpful` order), and only the runs it moves through —
/// and the lead page, if it reaches it — are packed again, every other run taken as it is
/// ([`ItemList::with_span_replaced`]). None where the review is not where its shown date
/// says, or a part does not unpack or pack. Unlike the general revote, it does not unpack
/// the parts it does not read, so it cannot see damage in them (a list made here has none).
fn revoted_in_place(
    product_id: i64,
    held: &ItemList,
    by_date: &[u32],
    key: &SortKeyRow,
) -> Option<(SharedList, SharedList)> {
    let n = held.len();
    let mut parts = held.parts();
    // The helpfulness of the item at `p`.
    let helpfulness_at = |parts: &mut Parts<'_>, p: usize| -> Option<i32> {
        int_of(HeldReview::parse(parts.item(p)?)?.helpfulness)
    };
    // The review's place in `by_date`, by its shown date (quoted, as it is compared: shown
    // dates have one width, so their bytes compare as the dates do).
    let mut shown = Vec::with_capacity(32);
    push_date(&mut shown, key.date.millis());
    let rank = place_by_key(n, key.id, |at| {
        let review = HeldReview::parse(parts.item(*by_date.get(at)? as usize)?)?;
        Some((shown.as_slice().cmp(review.date), review.id))
    })?;
    let from = *by_date.get(rank)? as usize;
    let was = helpfulness_at(&mut parts, from)?;
    let date_rank = date_ranks(by_date, n)?;
    let now = key.helpfulness;
    let ahead = |a: (i32, u32), b: (i32, u32)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
    let review = (now, rank as u32);
    let mut to = from;
    if now >= was {
        while to > 0 {
            let helpfulness = helpfulness_at(&mut parts, to - 1)?;
            if !ahead(review, (helpfulness, date_rank[to - 1])) {
                break;
            }
            to -= 1;
        }
    } else {
        while to + 1 < n {
            let helpfulness = helpfulness_at(&mut parts, to + 1)?;
            if !ahead((helpfulness, date_rank[to + 1]), review) {
                break;
            }
            to += 1;
        }
    }
    let revoted = {
        let cut = HeldReview::parse(parts.item(from)?)?;
        let mut item = Vec::with_capacity(cut.item.len() + 4);
        cut.push_with_helpfulness(&mut item, now);
        item
    };
    // The items from the first place that changes to the last, in their new order.
    let mut span = Vec::with_capacity(from.abs_diff(to) + 1);
    if to <= from {
        span.push(revoted);
        for p in to..from {
            span.push(parts.item(p)?.to_vec());
        }
    } else {
        for p in from + 1..=to {
            span.push(parts.item(p)?.to_vec());
        }
        span.push(revoted);
    }
    let moved = |p: usize| match p {
        _ if p == from => to,
        _ if to <= from && (to..from).contains(&p) => p + 1,
        _ if to > from && (from + 1..=to).contains(&p) => p - 1,
        _ => p,
    };
    let frame = Frame::Reviews(product_id);
    let helpful = held.with_span_replaced(from.min(to), &span, frame, &mut parts)?;
    let helpful = SharedList::new(helpful);
    let newest = by_date.iter().map(|&p| moved(p as usize) as u32).collect();
    let newest = SharedList::new(ItemList::reordered(&helpful, newest)?);
    Some((helpful, newest))
}

/// Each item's place in `by_date`, the `newest` order as positions in a list of `n` items
/// (by date, then id, both descending: the `helpful` order's tie-break); None if `by_date` is
/// not a permutation of them.
fn date_ranks(by_date: &[u32], n: usize) -> Option<Vec<u32>> {
    let mut ranks = vec![u32::MAX; n];
    for (rank, &p) in by_date.iter().enumerate() {
        let slot = ranks.get_mut(p as usize)?;
        if *slot != u32::MAX {
            return None;
        }
        *slot = rank as u32;
    }
    Some(ranks)
}

/// A review item of a list [`render_review_list`] rendered, cut where a vote changes it.
struct HeldReview<'a> {
    id: i64,
    /// The whole item.
    item: &'a [u8],
    /// The item up to and including `"helpfulness":`.
    up_to_helpfulness: &'a [u8],
    /// The item from the comma before `"photos":` to its end.
    from_photos: &'a [u8],
    /// The helpfulness, as shown.
    helpfulness: &'a [u8],
    /// The date, as shown (quoted).
    date: &'a [u8],
}

impl<'a> HeldReview<'a> {
    /// None unless `item` has the shape [`render_review_list`] gives it. A key is found by
    /// its quotes: inside a JSON string every quote is escaped, so `,"date":` can only be the
    /// key itself.
    fn parse(item: &'a [u8]) -> Option<HeldReview<'a>> {
        const ID: &[u8] = b"{\"review_id\":";
        static DATE: ItemKey = item_key!(b",\"date\":");
        static NAME: ItemKey = item_key!(b",\"reviewer_name\":");
        static HELPFULNESS: ItemKey = item_key!(b",\"helpfulness\":");
        static PHOTOS: ItemKey = item_key!(b",\"photos\":");
        let date_at = value_at(item, 0, &DATE)?;
        let helpfulness_at = value_at(item, date_at, &HELPFULNESS)?;
        let photos_at = key_at(item, helpfulness_at, &PHOTOS)?;
        Some(HeldReview {
            id: leading_id(item, ID)?,
            item,
            up_to_helpfulness: item.get(..helpfulness_at)?,
            from_photos: item.get(photos_at..)?,
            helpfulness: item.get(helpfulness_at..photos_at)?,
            date: item.get(date_at..key_at(item, date_at, &NAME)?)?,
        })
    }

    /// Appends the item with `helpfulness` in place of its own.
    fn push_with_helpfulness(&self, out: &mut Vec<u8>, helpfulness: i32) {
        out.extend_from_slice(self.up_to_helpfulness);
        push_int(out, helpfulness);
        out.extend_from_slice(self.from_photos);
    }
}

/// The two orders of a product's reviews from `helpful`, its list in `helpful` order, and
/// `newest`, the `newest` order as positions in it ([`newest_order`]): compacted first as far
/// as `compaction` packs lists (over `previous`'s runs), then the `newest` list an index into
/// the same buffer.
fn both_orders(
    product_id: i64,
    mut helpful: ItemList,
    newest: Vec<u32>,
    compaction: Compaction,
    previous: Option<Replaced>,
) -> (SharedList, SharedList) {
    if compaction.packs_lists() {
        let frame = compaction.lead_frame(Some(Frame::Reviews(product_id)));
        helpful = helpful.compacted_over(frame, previous);
    }
    let helpful = SharedList::new(helpful);
    // `newest` is always a permutation, which `reordered` takes.
    let newest = match ItemList::reordered(&helpful, newest) {
        Some(newest) => SharedList::new(newest),
        None => SharedList::clone(&helpful),
    };
    (helpful, newest)
}

/// What precedes the items of a page of `GET /reviews`: `page` is echoed as the zero-based
/// row offset.
pub(super) fn page_head(product_id: i64, echo: Echo<'_>) -> Vec<u8> {
    let mut head = Vec::with_capacity(96);
    head.extend_from_slice(b"{\"product\":");
    push_int_str(&mut head, product_id);
    head.extend_from_slice(b",\"page\":");
    echo.push_offset(&mut head);
    head.extend_from_slice(b",\"count\":");
    echo.push_count(&mut head);
    head.extend_from_slice(b",\"results\":[");
    head
}

/// `GET /reviews/meta`. Counts are strings; ratings list only non-zero counts, 1 to 5;
/// `recommended` always has both keys.
pub fn render_meta(
    product_id: i64,
    counts: &[MetaCountRow],
    characteristics: &[CharacteristicRow],
) -> Bytes {
    let mut ratings = [0i64; 6];
    let mut recommended = [0i64; 2];
    for c in counts {
        if let Some(slot) = ratings.get_mut(c.rating as usize) {
            *slot += c.count;
        }
        recommended[usize::from(c.recommend)] += c.count;
    }
    let mut out = Vec::with_capacity(256 + characteristics.len() * 64);
    out.extend_from_slice(b"{\"product_id\":");
    push_int_str(&mut out, product_id);
    out.extend_from_slice(b",\"ratings\":{");
    let mut first = true;
    for (rating, &n) in ratings.iter().enumerate().skip(1) {
        if n > 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            push_int_str(&mut out, rating as i64);
            out.push(b':');
            push_int_str(&mut out, n);
        }
    }
    out.extend_from_slice(b"},\"recommended\":{\"false\":");
    push_int_str(&mut out, recommended[0]);
    out.extend_from_slice(b",\"true\":");
    push_int_str(&mut out, recommended[1]);
    out.extend_from_slice(b"},\"characteristics\":{");
    let mut seen: Vec<&str> = Vec::with_capacity(characteristics.len());
    for c in characteristics {
        // A characteristic loaded without a name is shown under "null", as a JavaScript
        // object's key would have it.
        let name = c.name.as_deref().unwrap_or("null");
        // A JSON object cannot hold a name twice; the first characteristic of a name wins.
        if seen.contains(&name) {
            continue;
        }
        if !seen.is_empty() {
            out.push(b',');
        }
        seen.push(name);
        push_str(&mut out, name);
        out.extend_from_slice(b":{\"id\":");
        push_int(&mut out, c.id);
        out.extend_from_slice(b",\"value\":");
        push_opt_str(&mut out, c.mean.as_deref());
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    super::frozen(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::read::Timestamp;

    /// A product's reviews, in `helpful` order, as the database would give them: ties of
    /// helpfulness and of the shown millisecond (ordered by microsecond, then id), photos on
    /// some, and text that holds what a careless reading of an item would take for its keys.
    fn reviews(n: i64, seed: u64) -> (Vec<ReviewRow>, Vec<i64>, Vec<PhotoUrlRow>) {
        let mut state = seed;
        let mut next = move |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let tricky = r#","date":"1970-01-01T00:00:00.000Z","helpfulness":7,"photos":[]}"#;
        let mut rows: Vec<(ReviewRow, i64)> = (1..=n)
            .map(|id| {
                let date_us = 1_600_000_000_000_000 + next(4) as i64 * 1000 + next(3) as i64;
                let row = ReviewRow {
                    id: id * 7,
                    rating: 1 + next(5) as i16,
                    // A field loaded as NULL is shown as null, and cut around like any other.
                    summary: (id % 5 != 0).then(|| format!("summary {id}{tricky}")),
                    recommend: next(2) == 0,
                    response: (next(3) == 0).then(|| format!("thanks\n\"{id}\"")),
                    body: (id % 6 != 0).then(|| format!("body ,\"helpfulness\": {id} é")),
                    date_ms: date_us.div_euclid(1000),
                    reviewer_name: (id % 7 != 0).then(|| format!("name{tricky}")),
                    helpfulness: next(3) as i32,
                };
                (row, date_us)
            })
            .collect();
        sort(&mut rows);
        let photos = rows
            .iter()
            .filter(|(r, _)| r.id % 3 == 0)
            .map(|(r, _)| PhotoUrlRow {
                owner_id: r.id,
                id: r.id,
                url: (r.id % 2 == 0).then(|| format!("https://p/{}", r.id)),
            })
            .collect::<Vec<_>>();
        let (rows, dates): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        // Photos come ordered by review id, as the database reads them.
        let mut photos = photos;
        photos.sort_by_key(|p| (p.owner_id, p.id));
        (rows, dates, photos)
    }

    /// `helpful` order: helpfulness, date, then id, all descending.
    fn sort(rows: &mut [(ReviewRow, i64)]) {
        rows.sort_by_key(|(r, date_us)| std::cmp::Reverse((r.helpfulness, *date_us, r.id)));
    }

    fn keys(rows: &[ReviewRow], dates_us: &[i64]) -> Vec<SortKeyRow> {
        rows.iter()
            .zip(dates_us)
            .map(|(r, &d)| SortKeyRow {
                id: r.id,
                helpfulness: r.helpfulness,
                date: Timestamp::from_micros(d),
            })
            .collect()
    }

    /// Every page of both orders, as `GET /reviews` sends them, and the lead page.
    fn pages(both: &(SharedList, SharedList)) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for list in [&both.0, &both.1] {
            for count in [1, 2, 5, 1000] {
                for page in 1..=list.len() as u64 / count + 1 {
                    out.push(Frame::Reviews(9).page(list, page, count).to_vec());
                }
            }
            out.push(
                list.lead_page(1, 5)
                    .and_then(|g| g.plain())
                    .unwrap_or_default(),
            );
        }
        out
    }

    /// Revoted lists serve the pages of the `fresh` ones, keep a lead page where they do, and
    /// are still one buffer in two orders.
    fn assert_revoted_as_fresh(
        revoted: &(SharedList, SharedList),
        fresh: &(SharedList, SharedList),
        what: &str,
    ) {
        assert_eq!(pages(revoted), pages(fresh), "{what}");
        assert_eq!(revoted.0.has_lead_page(), fresh.0.has_lead_page());
        assert!(revoted.1.shares_buffer_with(&revoted.0));
    }

    #[test]
    fn a_list_revoted_from_its_items_is_the_list_rendered_afresh() {
        for compaction in [Compaction::None, Compaction::All, Compaction::Dense] {
            for seed in 0..40 {
                let (mut rows, mut dates, photos) = reviews(1 + seed as i64 % 23, seed);
                let held = render_review_orders(9, &rows, &dates, &photos, compaction, None);
                // Votes: some reviews gain helpfulness, and the order is the database's again.
                let mut state = seed;
                let mut voted: Vec<(ReviewRow, i64)> =
                    rows.drain(..).zip(dates.drain(..)).collect();
                for (r, _) in voted.iter_mut() {
                    state = state.wrapping_mul(31).wrapping_add(17) % 101;
                    if state % 3 == 0 {
                        r.helpfulness += 1 + (state % 4) as i32;
                    }
                }
                sort(&mut voted);
                let (rows, dates): (Vec<_>, Vec<_>) = voted.into_iter().unzip();
                let fresh = render_review_orders(9, &rows, &dates, &photos, compaction, None);
                let revoted = revoted_review_orders(9, &held.0, &keys(&rows, &dates), compaction)
                    .expect("only votes changed");
                assert_revoted_as_fresh(&revoted, &fresh, &format!("{compaction:?} seed {seed}"));
            }
        }
    }

    #[test]
    fn a_list_revoted_from_the_keys_of_the_reviews_voted_on_is_the_list_rendered_afresh() {
        for compaction in [Compaction::None, Compaction::All, Compaction::Dense] {
            for seed in 0..40u64 {
                // Long lists too, packed in several runs.
                let n = if seed % 4 == 3 {
                    70 + seed as i64 * 3
                } else {
                    1 + seed as i64 % 23
                };
                let (rows, dates, photos) = reviews(n, seed);
                let held = render_review_orders(9, &rows, &dates, &photos, compaction, None);
                // Votes on a few reviews (one of them twice), and on one that is not shown.
                let mut state = seed;
                let mut voted: Vec<(ReviewRow, i64)> = rows.into_iter().zip(dates).collect();
                let mut on = vec![3];
                for _ in 0..1 + seed % 4 {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (r, _) = &mut voted[(state >> 33) as usize % n as usize];
                    r.helpfulness += 1 + (state % 3) as i32;
                    if !on.contains(&r.id) {
                        on.push(r.id);
                    }
                }
                sort(&mut voted);
                let (rows, dates): (Vec<_>, Vec<_>) = voted.into_iter().unzip();
                let fresh = render_review_orders(9, &rows, &dates, &photos, compaction, None);
                let mut keys: Vec<SortKeyRow> = keys(&rows, &dates)
                    .into_iter()
                    .filter(|k| on.contains(&k.id))
                    .collect();
                keys.reverse();
                let revoted = revoted_review_orders_of(9, &held.0, &held.1, &on, &keys, compaction)
                    .expect("only votes changed");
                assert_revoted_as_fresh(&revoted, &fresh, &format!("{compaction:?} seed {seed}"));
            }
        }
    }

    #[test]
    fn one_vote_on_a_long_list_moves_its_review_in_place_as_a_fresh_read_would_order_it() {
        for compaction in [Compaction::All, Compaction::Dense] {
            for seed in 0..60u64 {
                let n = 40 + (seed as i64 * 7) % 150;
                let (rows, dates, photos) = reviews(n, seed);
                let held = render_review_orders(9, &rows, &dates, &photos, compaction, None);
                assert!(held.0.runs() > 1);
                // One review's helpfulness up or down, by nothing, a little, or far enough to
                // reach the lead page (or leave it).
                let mut voted: Vec<(ReviewRow, i64)> = rows.into_iter().zip(dates).collect();
                let at = (seed as usize * 13) % voted.len();
                let change = [0, 1, -1, 2, -2, 9, -9][seed as usize % 7];
                voted[at].0.helpfulness = (voted[at].0.helpfulness + change).max(0);
                let id = voted[at].0.id;
                sort(&mut voted);
                let (rows, dates): (Vec<_>, Vec<_>) = voted.into_iter().unzip();
                let fresh = render_review_orders(9, &rows, &dates, &photos, compaction, None);
                let key = keys(&rows, &dates)
                    .into_iter()
                    .find(|k| k.id == id)
                    .unwrap();
                let by_date = held.1.order().unwrap();
                let reused = || crate::render::tests::REUSED_RUNS.with(|r| r.get());
                let before = reused();
                let revoted = revoted_in_place(9, &held.0, by_date, &key)
                    .unwrap_or_else(|| panic!("{compaction:?} seed {seed}: not in place"));
                assert_eq!(pages(&revoted), pages(&fresh), "{compaction:?} seed {seed}");
                // A review that stays where it was is packed again in its own run alone.
                if change == 0 {
                    let reused = reused() - before;
                    assert!(
                        reused + 1 >= held.0.runs(),
                        "{compaction:?} seed {seed}: {reused}"
                    );
                }
                assert!(revoted.1.shares_buffer_with(&revoted.0));
                assert_eq!(revoted.0.runs(), fresh.0.runs());
                // The same through the public entry, which takes this path for one vote.
                let public =
                    revoted_review_orders_of(9, &held.0, &held.1, &[id], &[key], compaction)
                        .unwrap();
                assert_eq!(pages(&public), pages(&fresh), "{compaction:?} seed {seed}");
            }
        }
        // A date that the review does not show, or a review not held: not in place.
        let (rows, dates, photos) = reviews(90, 3);
        let held = render_review_orders(9, &rows, &dates, &photos, Compaction::All, None);
        let by_date = held.1.order().unwrap();
        let key = keys(&rows, &dates)[40];
        let mut moved = key;
        moved.date = Timestamp::from_micros(key.date.micros() + 1000);
        let missing = SortKeyRow { id: 1, ..key };
        for key in [moved, missing] {
            assert!(
                revoted_in_place(9, &held.0, by_date, &key).is_none(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn a_vote_on_a_review_that_shows_another_change_asks_for_a_fresh_read() {
        let (rows, dates, photos) = reviews(40, 7);
        let held = render_review_orders(9, &rows, &dates, &photos, Compaction::All, None);
        let keys = keys(&rows, &dates);
        let revote = |voted: &[i64], keys: &[SortKeyRow]| {
            revoted_review_orders_of(9, &held.0, &held.1, voted, keys, Compaction::All)
        };
        let (a, b) = (keys[3], keys[20]);
        assert!(revote(&[a.id, b.id], &[b, a]).is_some());
        assert!(
            revote(&[1], &[]).is_some(),
            "a review not shown before nor after"
        );
        // A voted review hidden, or shown anew; its date moved by a millisecond; a key of a
        // review not voted on.
        let mut moved = a;
        moved.date = Timestamp::from_micros(a.date.micros() + 1000);
        let shown = SortKeyRow { id: 1, ..a };
        for (voted, keys) in [
            (vec![a.id], vec![]),
            (vec![1], vec![shown]),
            (vec![a.id], vec![moved]),
            (vec![a.id], vec![a, b]),
        ] {
            assert!(revote(&voted, &keys).is_none(), "{voted:?} {keys:?}");
        }
        // The `newest` list of another render, or the `helpful` list in its place.
        let other = render_review_orders(9, &rows, &dates, &photos, Compaction::All, None);
        for newest in [&other.1, &held.0] {
            let revoted =
                revoted_review_orders_of(9, &held.0, newest, &[a.id], &[a], Compaction::All);
            assert!(revoted.is_none());
        }
    }

    #[test]
    fn anything_but_votes_in_the_keys_asks_for_a_fresh_read() {
        let (rows, dates, photos) = reviews(12, 5);
        let held = render_review_orders(9, &rows, &dates, &photos, Compaction::All, None);
        let keys = keys(&rows, &dates);
        assert!(revoted_review_orders(9, &held.0, &keys, Compaction::All).is_some());
        // A review added, a review hidden, a review replaced by another, a date moved by a
        // millisecond (by a microsecond, the shown date is the same: the order takes it).
        let mut added = keys.clone();
        added.push(SortKeyRow { id: 1, ..keys[0] });
        let hidden = keys[1..].to_vec();
        let mut replaced = keys.clone();
        replaced[3].id = 2;
        let mut moved = keys.clone();
        moved[4].date = Timestamp::from_micros(moved[4].date.micros() + 1000);
        for changed in [added, hidden, replaced, moved] {
            assert!(revoted_review_orders(9, &held.0, &changed, Compaction::All).is_none());
        }
        // The `newest` list reads another's buffer: it is not a list to revote from.
        assert!(revoted_review_orders(9, &held.1, &keys, Compaction::All).is_none());
    }
}
