//! JSON string escaping, which rendering a long list of reviews spends much of its time in (a
//! refresh after a write re-renders the whole list): the writer's block-at-a-time search for
//! bytes to escape against the byte-at-a-time loop it replaced (kept here for the comparison).
//! Also a product's lists rendered from its rows as a warm-up renders them (its reviews in both
//! orders, its questions with their answers, each question's answers), with the full-scale
//! set's average shape: where the grouping of photos and answers by their parent shows.
//! `cargo bench --bench render`; the figures are in docs/benchmarks.md.

use atelier::render::SharedList;
use std::hint::black_box;

use atelier::pg::read::{AnswerRow, PhotoUrlRow, QuestionRow, ReviewRow};
use atelier::render::qa::{render_answer_list, render_question_list};
use atelier::render::reviews::render_review_orders;
use atelier::render::{Compaction, ItemList, PhotosByOwner};
use criterion::{criterion_group, criterion_main, Criterion};

/// The loop `render::json::push_str` used before: one match a byte.
fn push_str_bytewise(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn escaping(c: &mut Criterion) {
    let body = "Really comfortable, and the fabric holds up after a dozen washes. ".repeat(4);
    let quoted = "I'd say it runs \"small\" -- order a size up.\nGreat color though. ".repeat(4);
    for (name, text) in [
        ("summary (30 B)", "Best purchase this year, truly"),
        ("review body (260 B)", body.as_str()),
        (
            "review body with quotes and a line break (260 B)",
            quoted.as_str(),
        ),
    ] {
        let mut g = c.benchmark_group(name);
        let mut out = Vec::with_capacity(4096);
        g.bench_function("block at a time (render::json::push_str)", |b| {
            b.iter(|| {
                out.clear();
                atelier::render::json::push_str(&mut out, black_box(text));
            })
        });
        g.bench_function("byte at a time (before)", |b| {
            b.iter(|| {
                out.clear();
                push_str_bytewise(&mut out, black_box(text));
            })
        });
        g.finish();
    }
}

/// One product's rows: `questions` questions with two answers each, every third answer with a
/// photo, and six reviews, every other with a photo. 4 questions is the full-scale set's
/// average shape (per product: 5.8 reviews with 2.7 photos, 3.5 questions with 6.9 answers and
/// 2.1 answer photos), rounded up; its largest product has 2,084 questions.
struct ProductRows {
    reviews: Vec<ReviewRow>,
    dates_us: Vec<i64>,
    review_photos: Vec<PhotoUrlRow>,
    questions: Vec<QuestionRow>,
    answers: Vec<AnswerRow>,
    answer_photos: Vec<PhotoUrlRow>,
}

fn product_rows(questions: i64) -> ProductRows {
    let text = |n: usize| Some("Fits well and the color is as shown. ".repeat(n));
    let photo = |owner_id: i64, id: i64| PhotoUrlRow {
        owner_id,
        id,
        url: Some(format!("https://images.example.com/photo-{id}.jpg")),
    };
    let reviews: Vec<ReviewRow> = (1..=6)
        .map(|id| ReviewRow {
            id,
            rating: 4,
            summary: text(1),
            recommend: true,
            response: None,
            body: text(5),
            date_ms: 1_600_000_000_000 + id * 86_400_000,
            reviewer_name: Some("shopper".into()),
            helpfulness: 12 - id as i32,
        })
        .collect();
    let question_rows: Vec<QuestionRow> = (1..=questions)
        .map(|id| QuestionRow {
            id,
            body: text(2),
            date_ms: 1_600_000_000_000 + id * 86_400_000,
            asker_name: Some("asker".into()),
            helpfulness: 9 - id as i32,
        })
        .collect();
    let answers: Vec<AnswerRow> = (1..=2 * questions)
        .map(|id| AnswerRow {
            question_id: 1 + (id - 1) / 2,
            id,
            body: text(2),
            date_ms: 1_600_000_000_000 + id * 86_400_000,
            answerer_name: Some("seller".into()),
            helpfulness: 5,
        })
        .collect();
    ProductRows {
        dates_us: reviews.iter().map(|r| r.date_ms * 1000).collect(),
        reviews,
        review_photos: vec![photo(1, 1), photo(3, 2), photo(5, 3)],
        answer_photos: answers
            .iter()
            .filter(|a| a.id % 3 == 1)
            .map(|a| photo(a.id, a.id))
            .collect(),
        questions: question_rows,
        answers,
    }
}

/// A product's reviews in both orders, its questions list (with `question_photos`) and each
/// question's answers list (by `answer_list`).
fn lists(
    rows: &ProductRows,
    question_photos: &PhotosByOwner<'_>,
    answer_list: impl Fn(&[AnswerRow]) -> ItemList,
) -> ((SharedList, SharedList), ItemList, Vec<ItemList>) {
    let orders = render_review_orders(
        1,
        black_box(&rows.reviews),
        &rows.dates_us,
        &rows.review_photos,
        Compaction::None,
        None,
    );
    let questions =
        render_question_list(black_box(&rows.questions), &rows.answers, question_photos);
    let answers: Vec<ItemList> = rows
        .questions
        .iter()
        .map(|q| {
            let first = rows.answers.partition_point(|a| a.question_id < q.id);
            let end = rows.answers.partition_point(|a| a.question_id <= q.id);
            answer_list(&rows.answers[first..end])
        })
        .collect();
    (orders, questions, answers)
}

fn product_lists(c: &mut Criterion) {
    let mut g = c.benchmark_group("a product's lists, as a warm-up renders them");
    for questions in [4, 200] {
        let rows = product_rows(questions);
        g.bench_function(format!("{questions} questions, photos grouped once"), |b| {
            b.iter(|| {
                let photos = PhotosByOwner::new(&rows.answer_photos);
                lists(&rows, &photos, |answers| {
                    render_answer_list(answers, &photos)
                })
            })
        });
        // What the warm-up did before: all the product's answer photos grouped again for each
        // list.
        g.bench_function(
            format!("{questions} questions, photos grouped for each list (before)"),
            |b| {
                b.iter(|| {
                    let regrouped = || PhotosByOwner::new(&rows.answer_photos);
                    lists(&rows, &regrouped(), |answers| {
                        render_answer_list(answers, &regrouped())
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, escaping, product_lists);
criterion_main!(benches);
