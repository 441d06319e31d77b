//! Bodies of the questions & answers widget: a product's questions, each with every visible
//! answer nested, and one question's answers.

use super::json::{push_bool, push_date, push_int, push_int_str, push_str};
use super::{group_by, push_id_url_photos, ItemList, ItemListBuilder};
use crate::pg::read::{AnswerRow, PhotoUrlRow, QuestionRow};

/// An answer's id value and the fields both answer shapes share, up to its photos. The two
/// shapes differ only in the id's key (`id` nested, `answer_id` in the list) and photos.
fn push_answer_fields(out: &mut Vec<u8>, a: &AnswerRow) {
    push_int(out, a.id);
    out.extend_from_slice(b",\"body\":");
    push_str(out, &a.body);
    out.extend_from_slice(b",\"date\":");
    push_date(out, a.date_ms);
    out.extend_from_slice(b",\"answerer_name\":");
    push_str(out, &a.answerer_name);
    out.extend_from_slice(b",\"helpfulness\":");
    push_int(out, a.helpfulness);
}

/// The items of `GET /qa/questions`. `answers` are grouped by question; every visible answer
/// is nested (answers are not paged), by answer id, photos as bare URLs.
pub fn render_question_list(
    questions: &[QuestionRow],
    answers: &[AnswerRow],
    photos: &[PhotoUrlRow],
) -> ItemList {
    let photos = group_by(photos, |p| p.owner_id);
    let by_question = group_by(answers, |a| a.question_id);
    let mut list = ItemListBuilder::default();
    for q in questions {
        let out = list.next_item();
        out.extend_from_slice(b"{\"question_id\":");
        push_int(out, q.id);
        out.extend_from_slice(b",\"question_body\":");
        push_str(out, &q.body);
        out.extend_from_slice(b",\"question_date\":");
        push_date(out, q.date_ms);
        out.extend_from_slice(b",\"asker_name\":");
        push_str(out, &q.asker_name);
        out.extend_from_slice(b",\"question_helpfulness\":");
        push_int(out, q.helpfulness);
        out.extend_from_slice(b",\"reported\":");
        push_bool(out, false);
        out.extend_from_slice(b",\"answers\":{");
        // By answer id, ascending: the contract fixes no order for this object, and the
        // hosted API, a Node server, sent what `JSON.stringify` writes for integer keys, which
        // is also the order every JavaScript client iterates them in.
        let mut nested: Vec<&AnswerRow> = by_question.get(&q.id).cloned().unwrap_or_default();
        nested.sort_unstable_by_key(|a| a.id);
        for (i, a) in nested.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_int_str(out, a.id);
            out.extend_from_slice(b":{\"id\":");
            push_answer_fields(out, a);
            out.extend_from_slice(b",\"photos\":[");
            for (j, p) in photos.get(&a.id).into_iter().flatten().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                push_str(out, &p.url);
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"}}");
        list.end_item();
    }
    list.finish()
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

/// The items of `GET /qa/questions/{id}/answers`, photos as `{id, url}`.
pub fn render_answer_list(answers: &[AnswerRow], photos: &[PhotoUrlRow]) -> ItemList {
    let photos = group_by(photos, |p| p.owner_id);
    let mut list = ItemListBuilder::default();
    for a in answers {
        let out = list.next_item();
        out.extend_from_slice(b"{\"answer_id\":");
        push_answer_fields(out, a);
        out.extend_from_slice(b",\"photos\":");
        push_id_url_photos(out, photos.get(&a.id));
        out.push(b'}');
        list.end_item();
    }
    list.finish()
}

/// What precedes the items of a page of `GET /qa/questions/{id}/answers`: page and count echo
/// the request.
pub(super) fn answers_head(question_id: i64, page: u64, count: u64) -> Vec<u8> {
    let mut head = Vec::with_capacity(80);
    head.extend_from_slice(b"{\"question\":");
    push_int_str(&mut head, question_id);
    head.extend_from_slice(b",\"page\":");
    push_int(&mut head, page);
    head.extend_from_slice(b",\"count\":");
    push_int(&mut head, count);
    head.extend_from_slice(b",\"results\":[");
    head
}
