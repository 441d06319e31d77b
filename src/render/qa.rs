//! Bodies of the questions & answers widget: a product's questions, each with every visible
//! answer nested, and one question's answers.

use super::json::{push_bool, push_date, push_int, push_int_str, push_opt_str};
use super::{
    group_by, int_of, item_key, key_at, leading_id, place_by_key, push_id_url_photos, value_at,
    Echo, Frame, ItemKey, ItemList, ItemListBuilder, PhotosByOwner,
};
use crate::pg::read::{AnswerRow, PhotoUrlRow, QuestionRow, SortKeyRow};

/// An answer's id value and the fields both answer shapes share, up to its photos. The two
/// shapes differ only in the id's key (`id` nested, `answer_id` in the list) and photos.
fn push_answer_fields(out: &mut Vec<u8>, a: &AnswerRow) {
    push_int(out, a.id);
    out.extend_from_slice(b",\"body\":");
    push_opt_str(out, a.body.as_deref());
    out.extend_from_slice(b",\"date\":");
    push_date(out, a.date_ms);
    out.extend_from_slice(b",\"answerer_name\":");
    push_opt_str(out, a.answerer_name.as_deref());
    out.extend_from_slice(b",\"helpfulness\":");
    push_int(out, a.helpfulness);
}

/// The items of `GET /qa/questions`. `answers` are grouped by question; every visible answer
/// is nested (answers are not paged), by answer id, photos as bare URLs.
pub fn render_question_list(
    questions: &[QuestionRow],
    answers: &[AnswerRow],
    photos: &PhotosByOwner<'_>,
) -> ItemList {
    let by_question = group_by(answers, |a| a.question_id);
    let mut list = ItemListBuilder::default();
    for q in questions {
        let out = list.next_item();
        out.extend_from_slice(b"{\"question_id\":");
        push_int(out, q.id);
        out.extend_from_slice(b",\"question_body\":");
        push_opt_str(out, q.body.as_deref());
        out.extend_from_slice(b",\"question_date\":");
        push_date(out, q.date_ms);
        out.extend_from_slice(b",\"asker_name\":");
        push_opt_str(out, q.asker_name.as_deref());
        out.extend_from_slice(b",\"question_helpfulness\":");
        push_int(out, q.helpfulness);
        out.extend_from_slice(b",\"reported\":");
        push_bool(out, false);
        out.extend_from_slice(ANSWERS_KEY);
        push_nested_answers(out, by_question.get(&q.id), photos);
        list.end_item();
    }
    list.finish()
}

/// The key of a question item's nested answers, which end the item.
const ANSWERS_KEY: &[u8] = b",\"answers\":{";

/// A question item's nested answers (`answers`, all the question's visible ones, with their
/// photos among `photos`) and the item's end.
fn push_nested_answers(
    out: &mut Vec<u8>,
    answers: Option<&Vec<&AnswerRow>>,
    photos: &PhotosByOwner<'_>,
) {
    // By answer id, ascending: the contract fixes no order for this object, and the hosted
    // API, a Node server, sent what `JSON.stringify` writes for integer keys, which is also
    // the order every JavaScript client iterates them in.
    let mut nested: Vec<&AnswerRow> = answers.cloned().unwrap_or_default();
    nested.sort_unstable_by_key(|a| a.id);
    for (i, a) in nested.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_int_str(out, a.id);
        out.extend_from_slice(b":{\"id\":");
        push_answer_fields(out, a);
        out.extend_from_slice(b",\"photos\":[");
        for (j, p) in photos.of(a.id).into_iter().flatten().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            push_opt_str(out, p.url.as_deref());
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"}}");
}

/// A product's questions list after the answers of `answered` questions alone changed since
/// `held` was rendered: `keys` are every visible question's id, helpfulness and date in the
/// list's order as the database has them now, `answers` and `photos` every visible answer of
/// the `answered` questions and their photos. Each item is the held one, but for the answered
/// questions', whose nested answers are rendered afresh: the same bytes as
/// [`render_question_list`] from every row, without reading the other questions' answers.
/// None where the keys show anything else changed — a question added, hidden, reordered, or
/// with another helpfulness or shown date — or `held` is not a list this module rendered.
pub fn reanswered_question_list(
    held: &ItemList,
    keys: &[SortKeyRow],
    answered: &[i64],
    answers: &[AnswerRow],
    photos: &[PhotoUrlRow],
) -> Option<ItemList> {
    if held.len() != keys.len() {
        return None;
    }
    let buffer = held.own_items()?;
    let photos = PhotosByOwner::new(photos);
    let by_question = group_by(answers, |a| a.question_id);
    let mut list = ItemListBuilder::default();
    let mut expected = Vec::with_capacity(64);
    for (p, key) in keys.iter().enumerate() {
        let item = held.own_item(&buffer, p)?;
        let question = HeldQuestion::parse(item)?;
        expected.clear();
        push_date(&mut expected, key.date.millis());
        expected.extend_from_slice(ASKER_KEY);
        if question.id != key.id
            || !question.date.starts_with(&expected)
            || question.helpfulness != key.helpfulness
        {
            return None;
        }
        let out = list.next_item();
        if answered.contains(&key.id) {
            out.extend_from_slice(question.up_to_answers);
            push_nested_answers(out, by_question.get(&key.id), &photos);
        } else {
            out.extend_from_slice(item);
        }
        list.end_item();
    }
    Some(list.finish())
}

/// A product's questions list after the answers of one question alone changed, where `held`
/// is kept in runs ([`super::Compaction::keeps_in_runs`]): the question is found where `key`,
/// its sort key as the database has it now, places it in the held order (a binary search on
/// helpfulness and shown date, then the questions shown with both scanned for its id), its
/// nested answers are rendered afresh from `answers` and `photos` (every visible answer of it,
/// and their photos), and only the run it is in, or the lead page, is packed again
/// (`ItemList::with_span_replaced`). An answer does not move its question, so every other
/// item stays where it is, packed as it was. None where the question is not where its key
/// says, or a part does not unpack or pack: then the list is read whole. Unlike
/// [`reanswered_question_list`], it reads no other question's key, so it cannot see a change
/// to another question that came without a log row.
pub fn reanswered_in_place(
    product_id: i64,
    held: &ItemList,
    key: &SortKeyRow,
    answers: &[AnswerRow],
    photos: &[PhotoUrlRow],
) -> Option<ItemList> {
    let n = held.len();
    let mut parts = held.parts();
    let mut shown = Vec::with_capacity(32);
    push_date(&mut shown, key.date.millis());
    // By helpfulness and shown date (quoted, as it is compared: shown dates have one width,
    // so their bytes compare as the dates do); the look through the questions that show both
    // is long only where many were asked in one transaction and never voted on.
    let sought = (key.helpfulness, shown.as_slice());
    let at = place_by_key(n, key.id, |p| {
        let question = HeldQuestion::parse(parts.item(p)?)?;
        let date = question.date.get(..sought.1.len())?;
        Some((sought.cmp(&(question.helpfulness, date)), question.id))
    })?;
    let photos = PhotosByOwner::new(photos);
    let theirs: Vec<&AnswerRow> = answers.iter().filter(|a| a.question_id == key.id).collect();
    let item = {
        let question = HeldQuestion::parse(parts.item(at)?)?;
        let mut item = Vec::with_capacity(question.up_to_answers.len() + 256);
        item.extend_from_slice(question.up_to_answers);
        push_nested_answers(&mut item, Some(&theirs), &photos);
        item
    };
    held.with_span_replaced(at, &[item], Frame::Questions(product_id), &mut parts)
}

const ASKER_KEY: &[u8] = b",\"asker_name\":";

/// A question item of a list [`render_question_list`] rendered, cut where its keys are.
struct HeldQuestion<'a> {
    id: i64,
    /// From the date's value on (the date is checked as its prefix).
    date: &'a [u8],
    helpfulness: i32,
    /// The item up to and including the opening brace of its nested answers.
    up_to_answers: &'a [u8],
}

impl<'a> HeldQuestion<'a> {
    /// None unless `item` has the shape [`render_question_list`] gives it. A key is found by
    /// its quotes, which inside a JSON string are always escaped; the question's own keys
    /// come before its nested answers.
    fn parse(item: &'a [u8]) -> Option<HeldQuestion<'a>> {
        const ID: &[u8] = b"{\"question_id\":";
        static DATE: ItemKey = item_key!(b",\"question_date\":");
        static HELPFULNESS: ItemKey = item_key!(b",\"question_helpfulness\":");
        static REPORTED: ItemKey = item_key!(b",\"reported\":");
        static ANSWERS: ItemKey = item_key!(ANSWERS_KEY);
        let date_at = value_at(item, 0, &DATE)?;
        let helpfulness_at = value_at(item, date_at, &HELPFULNESS)?;
        let helpfulness_end = key_at(item, helpfulness_at, &REPORTED)?;
        Some(HeldQuestion {
            id: leading_id(item, ID)?,
            date: item.get(date_at..helpfulness_at)?,
            helpfulness: int_of(item.get(helpfulness_at..helpfulness_end)?)?,
            up_to_answers: item.get(..value_at(item, helpfulness_end, &ANSWERS)?)?,
        })
    }
}

/// What precedes the items of a page of `GET /qa/questions` (no page or count keys in this
/// body).
pub(super) fn questions_head(product_id: i64) -> Vec<u8> {
    let mut head = Vec::with_capacity(48);
    head.extend_from_slice(b"{\"product_id\":");
    push_int_str(&mut head, product_id);
    head.extend_from_slice(b",\"results\":[");
    head
}

/// The items of `GET /qa/questions/{id}/answers`, photos as `{id, url}`, from `photos` grouped
/// by answer: a warm-up groups a product's answer photos once for all its questions, where
/// grouping them again for each question took time in the product of the two (807 million
/// photo-question pairs at full scale).
pub fn render_answer_list(answers: &[AnswerRow], photos: &PhotosByOwner<'_>) -> ItemList {
    let mut list = ItemListBuilder::default();
    for a in answers {
        let out = list.next_item();
        out.extend_from_slice(b"{\"answer_id\":");
        push_answer_fields(out, a);
        out.extend_from_slice(b",\"photos\":");
        push_id_url_photos(out, photos.of(a.id));
        out.push(b'}');
        list.end_item();
    }
    list.finish()
}

/// What precedes the items of a page of `GET /qa/questions/{id}/answers`: page and count echo
/// the request.
pub(super) fn answers_head(question_id: i64, echo: Echo<'_>) -> Vec<u8> {
    let mut head = Vec::with_capacity(80);
    head.extend_from_slice(b"{\"question\":");
    push_int_str(&mut head, question_id);
    head.extend_from_slice(b",\"page\":");
    echo.push_page(&mut head);
    head.extend_from_slice(b",\"count\":");
    echo.push_count(&mut head);
    head.extend_from_slice(b",\"results\":[");
    head
}

#[cfg(test)]
mod tests {
    use crate::render::SharedList;

    use super::super::compress::{self, DictionaryKind};
    use super::super::{Compaction, Rendered};
    use super::*;
    use crate::pg::read::Timestamp;

    const TRICKY: &str = r#"","question_date":"1970-01-01T00:00:00.000Z","question_helpfulness":7,"reported":false,"answers":{"#;

    /// A product's questions in list order, with answers and photos; `date_us` per question.
    fn questions(n: i64) -> (Vec<QuestionRow>, Vec<i64>, Vec<AnswerRow>, Vec<PhotoUrlRow>) {
        let mut rows: Vec<(QuestionRow, i64)> = (1..=n)
            .map(|id| {
                let date_us = 1_600_000_000_000_000 + (id % 3) * 1000 + id % 2;
                let q = QuestionRow {
                    id: id * 5,
                    body: Some(format!("q{id}{TRICKY}")),
                    date_ms: date_us.div_euclid(1000),
                    // A field loaded as NULL is shown as null, and cut around like any other.
                    asker_name: (id % 5 != 0).then(|| format!("asker{TRICKY}")),
                    helpfulness: (id % 4) as i32,
                };
                (q, date_us)
            })
            .collect();
        rows.sort_by_key(|(q, d)| std::cmp::Reverse((q.helpfulness, *d, q.id)));
        let answers: Vec<AnswerRow> = rows
            .iter()
            .flat_map(|(q, _)| (0..q.id % 4).map(move |k| answer(q.id, q.id * 10 + k)))
            .collect();
        let photos = answers
            .iter()
            .filter(|a| a.id % 2 == 0)
            .map(|a| PhotoUrlRow {
                owner_id: a.id,
                id: a.id,
                url: (a.id % 3 != 0).then(|| format!("https://p/{}", a.id)),
            })
            .collect();
        let (rows, dates) = rows.into_iter().unzip();
        (rows, dates, answers, photos)
    }

    fn answer(question_id: i64, id: i64) -> AnswerRow {
        AnswerRow {
            question_id,
            id,
            body: Some(format!("a{id},\"date\":\"x\"")),
            date_ms: 1_600_000_000_000 + id,
            answerer_name: (id % 4 != 0).then(|| "n".into()),
            helpfulness: (id % 3) as i32,
        }
    }

    fn keys(rows: &[QuestionRow], dates_us: &[i64]) -> Vec<SortKeyRow> {
        rows.iter()
            .zip(dates_us)
            .map(|(q, &d)| SortKeyRow {
                id: q.id,
                helpfulness: q.helpfulness,
                date: Timestamp::from_micros(d),
            })
            .collect()
    }

    /// What the database gives a reanswer: the `answered` questions' answers among `answers`,
    /// and their photos among `photos`.
    fn answers_of(
        answered: &[i64],
        answers: &[AnswerRow],
        photos: &[PhotoUrlRow],
    ) -> (Vec<AnswerRow>, Vec<PhotoUrlRow>) {
        let theirs: Vec<AnswerRow> = answers
            .iter()
            .filter(|a| answered.contains(&a.question_id))
            .cloned()
            .collect();
        let their_photos = photos
            .iter()
            .filter(|p| theirs.iter().any(|a| a.id == p.owner_id))
            .cloned()
            .collect();
        (theirs, their_photos)
    }

    fn body(list: &ItemList) -> Vec<u8> {
        super::super::Frame::Questions(3)
            .page(list, 1, 1000)
            .to_vec()
    }

    #[test]
    fn a_list_reanswered_from_its_items_is_the_list_rendered_afresh() {
        let (rows, dates, answers, photos) = questions(17);
        let held = render_question_list(&rows, &answers, &PhotosByOwner::new(&photos));
        let answered = [rows[2].id, rows[9].id, rows[16].id];
        // An answer added to one, one hidden from another, photos of a third's changed.
        let mut now = answers.clone();
        now.push(answer(answered[0], 999));
        now.retain(|a| a.question_id != answered[1] || a.id % 4 != 1);
        let mut now_photos: Vec<PhotoUrlRow> = photos
            .iter()
            .filter(|p| now.iter().any(|a| a.id == p.owner_id))
            .cloned()
            .collect();
        now_photos.retain(|p| {
            now.iter()
                .any(|a| a.id == p.owner_id && a.question_id != answered[2])
        });
        now_photos.push(PhotoUrlRow {
            owner_id: 999,
            id: 5,
            url: Some("https://p/new".into()),
        });
        now_photos.sort_by_key(|p| (p.owner_id, p.id));
        let fresh = render_question_list(&rows, &now, &PhotosByOwner::new(&now_photos));
        let (theirs, their_photos) = answers_of(&answered, &now, &now_photos);
        let sort_keys = keys(&rows, &dates);
        let reanswer = |list: &ItemList, answered: &[i64]| {
            let list = reanswered_question_list(list, &sort_keys, answered, &theirs, &their_photos)
                .expect("only answers changed");
            body(&list)
        };
        assert_eq!(reanswer(&held, &answered), body(&fresh));
        assert_ne!(body(&held), body(&fresh));
        // Packed, the held list gives the same.
        let packed = held.compacted(Some(super::super::Frame::Questions(3)));
        assert_eq!(reanswer(&packed, &answered), body(&fresh));
        // A question the list does not show (hidden) among the answered is left out.
        let with_hidden = [answered[0], answered[1], answered[2], 424_242];
        assert_eq!(reanswer(&held, &with_hidden), body(&fresh));
    }

    /// `list` as the catalog keeps a fresh render of it under `compaction`.
    fn kept(list: ItemList, compaction: Compaction) -> ItemList {
        let frame = Some(Frame::Questions(3));
        match Rendered::List(SharedList::new(list)).compacted_as(compaction, frame) {
            Rendered::List(list) => (*list).clone(),
            other => panic!("not a list: {other:?}"),
        }
    }

    /// Every page of `list` in several counts, and its lead page's gzip bytes.
    fn pages(list: &ItemList) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for count in [1, 2, 5, 1000] {
            for page in 1..=list.len() as u64 / count + 1 {
                out.push(Frame::Questions(3).page(list, page, count).to_vec());
            }
        }
        let lead = list.lead_page(1, 5).and_then(|g| g.plain());
        out.push(lead.unwrap_or_default());
        out
    }

    #[test]
    fn one_questions_answers_are_replaced_in_place_in_a_long_list_as_a_fresh_read_renders_them() {
        // Another test may install the list dictionary at any time: installed first, every
        // list here packs against it, as `keeps_in_runs` then asks.
        compress::test_dictionary(DictionaryKind::Lists);
        let reused = || crate::render::tests::REUSED_RUNS.with(|r| r.get());
        let reused_leads = || crate::render::tests::REUSED_LEADS.with(|r| r.get());
        for compaction in [Compaction::All, Compaction::Dense] {
            for seed in 0..40u64 {
                let n = 40 + (seed as i64 * 7) % 120;
                let (rows, dates, answers, photos) = questions(n);
                let held = kept(
                    render_question_list(&rows, &answers, &PhotosByOwner::new(&photos)),
                    compaction,
                );
                assert!(compaction.keeps_in_runs(&held, Frame::Questions(3)));
                // One question's answers: one added (with a photo), one hidden, all hidden,
                // or a photo of one changed; in the lead page or past it.
                let at = match seed % 3 {
                    0 => (seed as usize) % 5,
                    _ => (seed as usize * 13) % rows.len(),
                };
                let question = rows[at].id;
                let mut now = answers.clone();
                let mut now_photos = photos.clone();
                let new_answer = 1_000_000 + seed as i64;
                match seed % 4 {
                    0 => {
                        now.push(answer(question, new_answer));
                        now_photos.push(PhotoUrlRow {
                            owner_id: new_answer,
                            id: 1,
                            url: Some("https://p/new".into()),
                        });
                    }
                    1 => {
                        let first = now.iter().position(|a| a.question_id == question);
                        if let Some(first) = first {
                            now.remove(first);
                        }
                    }
                    2 => now.retain(|a| a.question_id != question),
                    _ => {
                        for p in now_photos.iter_mut() {
                            if now
                                .iter()
                                .any(|a| a.id == p.owner_id && a.question_id == question)
                            {
                                p.url = Some("https://p/changed".into());
                            }
                        }
                    }
                }
                now_photos.retain(|p| now.iter().any(|a| a.id == p.owner_id));
                now_photos.sort_by_key(|p| (p.owner_id, p.id));
                let fresh = kept(
                    render_question_list(&rows, &now, &PhotosByOwner::new(&now_photos)),
                    compaction,
                );
                let (theirs, their_photos) = answers_of(&[question], &now, &now_photos);
                let key = keys(&rows, &dates)[at];
                let before = reused();
                let leads_before = reused_leads();
                let replaced = reanswered_in_place(3, &held, &key, &theirs, &their_photos)
                    .unwrap_or_else(|| panic!("{compaction:?} seed {seed}: not in place"));
                assert_eq!(
                    pages(&replaced),
                    pages(&fresh),
                    "{compaction:?} seed {seed}"
                );
                assert_eq!(replaced.runs(), fresh.runs());
                // Only the run the question is in is packed again (none, in the lead page),
                // and the lead page only if it is there.
                let lead = usize::from(held.has_lead_page()) * 5;
                let repacked = held.runs() - (reused() - before);
                assert_eq!(
                    repacked,
                    usize::from(at >= lead),
                    "{compaction:?} seed {seed}"
                );
                let lead_bytes = |list: &ItemList| list.lead_page(1, 5).and_then(|g| g.plain());
                assert_eq!(
                    lead_bytes(&replaced) == lead_bytes(&held),
                    at >= lead,
                    "{compaction:?} seed {seed}"
                );
                // A lead page the change does not reach is taken as it is, not made again.
                assert_eq!(
                    reused_leads() - leads_before,
                    usize::from(held.has_lead_page() && at >= lead),
                    "{compaction:?} seed {seed}"
                );
            }
        }
        // A key that does not place a question the list holds where it is: not in place.
        let (rows, dates, answers, photos) = questions(90);
        let held = kept(
            render_question_list(&rows, &answers, &PhotosByOwner::new(&photos)),
            Compaction::All,
        );
        let key = keys(&rows, &dates)[40];
        let mut moved = key;
        moved.date = Timestamp::from_micros(key.date.micros() + 1000);
        let voted = SortKeyRow {
            helpfulness: key.helpfulness + 1,
            ..key
        };
        let missing = SortKeyRow { id: 1, ..key };
        for key in [moved, voted, missing] {
            let replaced = reanswered_in_place(3, &held, &key, &answers, &photos);
            assert!(replaced.is_none(), "{key:?}");
        }
    }

    #[test]
    fn anything_but_answers_in_the_keys_asks_for_a_fresh_read() {
        let (rows, dates, answers, photos) = questions(9);
        let held = render_question_list(&rows, &answers, &PhotosByOwner::new(&photos));
        let keys = keys(&rows, &dates);
        let none: [i64; 0] = [];
        assert!(reanswered_question_list(&held, &keys, &none, &[], &[]).is_some());
        let mut added = keys.clone();
        added.push(SortKeyRow { id: 1, ..keys[0] });
        let hidden = keys[1..].to_vec();
        let mut swapped = keys.clone();
        swapped.swap(2, 3);
        let mut voted = keys.clone();
        voted[4].helpfulness += 1;
        let mut moved = keys.clone();
        moved[5].date = Timestamp::from_micros(moved[5].date.micros() + 1000);
        for changed in [added, hidden, swapped, voted, moved] {
            assert!(reanswered_question_list(&held, &changed, &none, &[], &[]).is_none());
        }
    }
}
