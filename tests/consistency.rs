//! Property test over a generated data set: for random keys, what the server sends (first as a
//! miss, then as a hit) is byte-identical to a fresh render from the database, and its fields
//! agree with the rows themselves.

mod common;

use atelier::cache::{fill, Key};
use atelier::dataset::generate::{generate, GenerateOptions};
use atelier::dataset::rng::Rng;
use atelier::domain::ReviewOrder;
use atelier::pg::pool::Pool;
use atelier::render::{self, Rendered};
use common::{get, TempDir};
use serde_json::Value;
use tokio_postgres::Client;

const ALL: u64 = 1_000_000;

async fn fresh(pool: &Pool, key: Key) -> Rendered {
    fill(&key, pool).await.expect("fresh render")
}

fn json(entry: Rendered) -> String {
    match entry {
        Rendered::Json(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("expected a whole body, got {other:?}"),
    }
}

fn list(entry: Rendered) -> render::SharedList {
    match entry {
        Rendered::List(l) => l,
        other => panic!("expected a list, got {other:?}"),
    }
}

async fn ids(client: &Client, sql: &str, id: i64) -> Vec<i64> {
    client
        .query(sql, &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// GETs `path` twice (a miss, then a hit) and checks both against `expected`.
async fn check(addr: std::net::SocketAddr, path: &str, expected: &str) -> Value {
    for attempt in ["miss", "hit"] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.body, expected,
            "{path} ({attempt}) differs from a fresh render"
        );
    }
    serde_json::from_str(expected).unwrap_or_else(|e| panic!("{path}: invalid JSON: {e}"))
}

#[tokio::test]
async fn cached_bodies_equal_fresh_renders_and_match_the_rows() {
    let dir = TempDir::new("consistency");
    generate(&GenerateOptions {
        scale: 0.001,
        seed: 99,
        out: dir.path().into(),
        quiet: true,
    })
    .expect("generate");
    let (db, server) = common::server_with_data(dir.path()).await;
    let a = server.addr;
    let pool = Pool::new(db.config.clone(), 2, std::time::Duration::from_secs(5));
    let client = db.client().await;
    let products: i64 = client
        .query_one("SELECT max(id) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    let questions: i64 = client
        .query_one("SELECT max(id) FROM questions", &[])
        .await
        .unwrap()
        .get(0);
    let mut rng = Rng::new(2024);
    let hits_before = server.app.cache.stats().hits;

    for _ in 0..25 {
        let id = rng.range(1, products);

        let body = json(fresh(&pool, Key::Product(id)).await);
        let v = check(a, &format!("/products/{id}"), &body).await;
        let row = client
            .query_one("SELECT name, default_price::text, (SELECT count(*) FROM features WHERE product_id = $1) FROM products WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(v["name"], row.get::<_, String>(0));
        assert_eq!(v["default_price"], row.get::<_, String>(1));
        assert_eq!(
            v["features"].as_array().unwrap().len() as i64,
            row.get::<_, i64>(2)
        );

        let body = json(fresh(&pool, Key::Styles(id)).await);
        let v = check(a, &format!("/products/{id}/styles"), &body).await;
        let styles: Vec<i64> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["style_id"].as_i64().unwrap())
            .collect();
        assert_eq!(
            styles,
            ids(
                &client,
                "SELECT id FROM styles WHERE product_id = $1 ORDER BY id",
                id
            )
            .await
        );
        for style in v["results"].as_array().unwrap() {
            let sid = style["style_id"].as_i64().unwrap();
            let skus = ids(
                &client,
                "SELECT id FROM skus WHERE style_id = $1 ORDER BY id",
                sid,
            )
            .await;
            let keys: Vec<i64> = style["skus"]
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|k| k.parse().ok())
                .collect();
            assert_eq!(keys, skus, "skus of style {sid}");
            let photos = ids(&client, "SELECT id FROM photos WHERE style_id = $1", sid).await;
            assert_eq!(
                style["photos"].as_array().unwrap().len(),
                photos.len().max(1)
            );
            assert!(!style["photos"][0].is_null(), "photos[0] always exists");
        }

        let body = json(fresh(&pool, Key::Related(id)).await);
        let v = check(a, &format!("/products/{id}/related"), &body).await;
        let related: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        assert_eq!(
            related,
            ids(
                &client,
                "SELECT related_product_id FROM related WHERE product_id = $1 ORDER BY id",
                id
            )
            .await
        );
        assert!(!related.contains(&0));

        for (order, sort, sql) in [
            (ReviewOrder::Helpful, "relevant", "SELECT id FROM reviews WHERE product_id = $1 AND NOT reported ORDER BY helpfulness DESC, date DESC, id DESC"),
            (ReviewOrder::Newest, "newest", "SELECT id FROM reviews WHERE product_id = $1 AND NOT reported ORDER BY date DESC, id DESC"),
        ] {
            let items = list(fresh(&pool, Key::Reviews { product_id: id, order }).await);
            let body = String::from_utf8(render::Frame::Reviews(id).page(&items, 1, ALL).to_vec()).unwrap();
            let v = check(a, &format!("/reviews?product_id={id}&sort={sort}&count={ALL}"), &body).await;
            let got: Vec<i64> = v["results"].as_array().unwrap().iter().map(|r| r["review_id"].as_i64().unwrap()).collect();
            assert_eq!(got, ids(&client, sql, id).await, "{sort} reviews of {id}");
            // A later page of the same list, from the same entry.
            if got.len() > 3 {
                let body = String::from_utf8(render::Frame::Reviews(id).page(&items, 2, 3).to_vec()).unwrap();
                check(a, &format!("/reviews?product_id={id}&sort={sort}&count=3&page=2"), &body).await;
            }
        }

        let body = json(fresh(&pool, Key::ReviewsMeta(id)).await);
        let v = check(a, &format!("/reviews/meta?product_id={id}"), &body).await;
        let visible: i64 = client
            .query_one(
                "SELECT count(*) FROM reviews WHERE product_id = $1 AND NOT reported",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        let rated: i64 = v["ratings"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c.as_str().unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(rated, visible);
        let recommended: i64 = ["true", "false"]
            .iter()
            .map(|k| {
                v["recommended"][k]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(recommended, visible);

        let items = list(fresh(&pool, Key::Questions(id)).await);
        let body =
            String::from_utf8(render::Frame::Questions(id).page(&items, 1, ALL).to_vec()).unwrap();
        let v = check(
            a,
            &format!("/qa/questions?product_id={id}&count={ALL}"),
            &body,
        )
        .await;
        let got: Vec<i64> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["question_id"].as_i64().unwrap())
            .collect();
        let expected = ids(&client, "SELECT id FROM questions WHERE product_id = $1 AND NOT reported ORDER BY helpfulness DESC, date DESC, id DESC", id).await;
        assert_eq!(got, expected);
        for q in v["results"].as_array().unwrap() {
            let qid = q["question_id"].as_i64().unwrap();
            let mut keys: Vec<i64> = q["answers"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            keys.sort();
            assert_eq!(
                keys,
                ids(
                    &client,
                    "SELECT id FROM answers WHERE question_id = $1 AND NOT reported ORDER BY id",
                    qid
                )
                .await
            );
        }
    }

    for _ in 0..25 {
        let id = rng.range(1, questions);
        let items = list(fresh(&pool, Key::Answers(id)).await);
        let body =
            String::from_utf8(render::Frame::Answers(id).page(&items, 1, ALL).to_vec()).unwrap();
        let v = check(a, &format!("/qa/questions/{id}/answers?count={ALL}"), &body).await;
        let got: Vec<i64> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["answer_id"].as_i64().unwrap())
            .collect();
        let expected = ids(&client, "SELECT id FROM answers WHERE question_id = $1 AND NOT reported ORDER BY helpfulness DESC, date DESC, id DESC", id).await;
        assert_eq!(got, expected, "answers of question {id}");
    }
    assert!(
        server.app.cache.stats().hits > hits_before + 200,
        "second reads were hits"
    );
}
