//! Every write of the contract over real HTTP: what each write changes in the GETs that
//! follow, and that invalid input gets its 4xx and changes nothing.

mod common;

use std::time::{Duration, Instant};

use atelier::cache::Key;
use atelier::domain::ReviewOrder;
use atelier::render::compress::Codec;
use atelier::render::{Frame, Rendered};
use common::{eventually, get, post_json, put, send, server_with_data};
use serde_json::Value;

fn ids(body: &str, list: &str, field: &str) -> Vec<i64> {
    let v: Value = serde_json::from_str(body).expect("json");
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[field].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_new_review_shows_in_every_sort_and_in_meta() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    // Warm every entry the write must invalidate.
    for sort in ["relevant", "newest", "helpful"] {
        assert_eq!(
            ids(
                &get(a, &format!("/reviews?product_id=2&sort={sort}"))
                    .await
                    .body,
                "results",
                "review_id"
            ),
            [3, 4]
        );
    }
    get(a, "/reviews/meta?product_id=2").await;

    let body = r#"{"product_id":2,"rating":3,"summary":"Okay","body":"Decent lenses.","recommend":false,
        "name":"newbie","email":"new@example.com","photos":["https://example.com/a.jpg","https://example.com/b.jpg"],
        "characteristics":{"5":3}}"#;
    let r = post_json(a, "/reviews", body).await;
    assert_eq!((r.status, r.body.as_str()), (201, "Created"));
    let new_id: i64 = db
        .client()
        .await
        .query_one("SELECT max(id) FROM reviews", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(new_id, 7, "the id after the loaded ones");

    assert_eq!(
        ids(
            &get(a, "/reviews?product_id=2&sort=newest").await.body,
            "results",
            "review_id"
        ),
        [7, 3, 4]
    );
    assert_eq!(
        ids(
            &get(a, "/reviews?product_id=2&sort=relevant").await.body,
            "results",
            "review_id"
        ),
        [3, 4, 7]
    );
    assert_eq!(
        ids(
            &get(a, "/reviews?product_id=2&sort=helpful").await.body,
            "results",
            "review_id"
        ),
        [3, 4, 7]
    );
    let newest: Value = serde_json::from_str(
        &get(a, "/reviews?product_id=2&sort=newest&count=1")
            .await
            .body,
    )
    .unwrap();
    let review = &newest["results"][0];
    assert_eq!(review["helpfulness"], 0);
    assert_eq!(review["response"], Value::Null);
    assert_eq!(review["reviewer_name"], "newbie");
    let urls: Vec<&str> = review["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        ["https://example.com/a.jpg", "https://example.com/b.jpg"]
    );
    assert!(review.get("reviewer_email").is_none());
    assert_eq!(
        get(a, "/reviews/meta?product_id=2").await.body,
        r#"{"product_id":"2","ratings":{"3":"2","4":"1"},"recommended":{"false":"2","true":"1"},"characteristics":{"Quality":{"id":5,"value":"4.0000000000000000"}}}"#
    );
}

#[tokio::test]
async fn report_hides_and_helpful_reorders() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    assert_eq!(
        ids(
            &get(a, "/reviews?product_id=1").await.body,
            "results",
            "review_id"
        ),
        [1, 2]
    );
    for _ in 0..7 {
        assert_eq!(put(a, "/reviews/2/helpful").await.status, 204);
    }
    // Review 2 now has 9 helpful votes to review 1's 8.
    assert_eq!(
        ids(
            &get(a, "/reviews?product_id=1").await.body,
            "results",
            "review_id"
        ),
        [2, 1]
    );

    get(a, "/reviews/meta?product_id=2").await;
    let r = put(a, "/reviews/3/report").await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert_eq!(
        ids(
            &get(a, "/reviews?product_id=2").await.body,
            "results",
            "review_id"
        ),
        [4]
    );
    assert_eq!(
        get(a, "/reviews/meta?product_id=2").await.body,
        r#"{"product_id":"2","ratings":{"3":"1"},"recommended":{"false":"1","true":"0"},"characteristics":{"Quality":{"id":5,"value":"4.0000000000000000"}}}"#
    );

    // Questions and answers: helpful reorders, report hides.
    assert_eq!(
        ids(
            &get(a, "/qa/questions?product_id=1").await.body,
            "results",
            "question_id"
        ),
        [3, 4, 1]
    );
    for _ in 0..3 {
        assert_eq!(put(a, "/qa/questions/1/helpful").await.status, 204);
    }
    assert_eq!(put(a, "/qa/questions/4/report").await.status, 204);
    assert_eq!(
        ids(
            &get(a, "/qa/questions?product_id=1").await.body,
            "results",
            "question_id"
        ),
        [3, 1]
    );
    get(a, "/qa/questions/1/answers").await;
    assert_eq!(put(a, "/qa/answers/1/helpful").await.status, 204);
    assert_eq!(put(a, "/qa/answers/5/report").await.status, 204);
    assert_eq!(
        ids(
            &get(a, "/qa/questions/1/answers").await.body,
            "results",
            "answer_id"
        ),
        [2, 1]
    );
    let questions = get(a, "/qa/questions?product_id=1").await.body;
    assert!(
        !questions.contains(r#""5":{"id":5"#),
        "a reported answer leaves the nested answers too"
    );

    for path in [
        "/reviews/999/helpful",
        "/reviews/999/report",
        "/qa/questions/999/helpful",
        "/qa/answers/999/report",
    ] {
        let r = put(a, path).await;
        assert_eq!((r.status, r.body.as_str()), (404, "Not Found"), "{path}");
    }
}

#[tokio::test]
async fn a_new_answer_with_photos_appears_nested_and_in_answers() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    get(a, "/qa/questions?product_id=4").await;
    get(a, "/qa/questions/6/answers").await;
    let r = post_json(
        a,
        "/qa/questions/6/answers",
        r#"{"body":"Because we buy in bulk.","name":"Seller","email":"seller@example.com","photos":["https://example.com/p.jpg"]}"#,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (201, "Created"));
    let answers: Value =
        serde_json::from_str(&get(a, "/qa/questions/6/answers").await.body).unwrap();
    let answer = &answers["results"][0];
    assert_eq!(answer["body"], "Because we buy in bulk.");
    assert_eq!(answer["photos"][0]["url"], "https://example.com/p.jpg");
    let id = answer["answer_id"].as_i64().unwrap();
    assert_eq!(
        id, 7,
        "the id after the loaded ones (answer 7 of the file was dropped)"
    );
    let questions: Value =
        serde_json::from_str(&get(a, "/qa/questions?product_id=4").await.body).unwrap();
    let nested = &questions["results"][0]["answers"][id.to_string()];
    assert_eq!(nested["id"], id);
    assert_eq!(
        nested["photos"],
        serde_json::json!(["https://example.com/p.jpg"])
    );

    let r = post_json(
        a,
        "/qa/questions/999/answers",
        r#"{"body":"x","name":"y","email":"a@b.co"}"#,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (404, "Not Found"));

    // A new question, product id from the query string.
    get(a, "/qa/questions?product_id=6").await;
    let r = post_json(
        a,
        "/qa/questions?product_id=6",
        r#"{"body":"Do they squeak?","name":"q","email":"q@example.com"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let questions: Value =
        serde_json::from_str(&get(a, "/qa/questions?product_id=6").await.body).unwrap();
    assert_eq!(questions["results"][0]["question_body"], "Do they squeak?");
    assert_eq!(questions["results"][0]["answers"], serde_json::json!({}));
}

/// A review, question or answer written through the API is dated to the millisecond, as the
/// loaded rows are and as bodies show dates: rows written within one millisecond then go by
/// id in every order, as the contract says, not by microseconds no body shows.
#[tokio::test]
async fn writes_are_dated_to_the_millisecond() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    for (path, body) in [
        (
            "/reviews",
            r#"{"product_id":2,"rating":3,"summary":"Okay","body":"Fine.","recommend":false,
                "name":"n","email":"n@example.com","characteristics":{}}"#,
        ),
        (
            "/qa/questions",
            r#"{"product_id":2,"body":"Why?","name":"q","email":"q@example.com"}"#,
        ),
        (
            "/qa/questions/6/answers",
            r#"{"body":"Because.","name":"s","email":"s@example.com"}"#,
        ),
    ] {
        // Three of each: a date written to the microsecond is whole in the millisecond once
        // in a thousand.
        for _ in 0..3 {
            let r = post_json(a, path, body).await;
            assert_eq!((r.status, r.body.as_str()), (201, "Created"), "{path}");
        }
    }
    let client = db.client().await;
    for table in ["reviews", "questions", "answers"] {
        let finer: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM (SELECT * FROM {table} ORDER BY id DESC LIMIT 3) w
                      WHERE date <> date_trunc('milliseconds', date)"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(finer, 0, "{table} written finer than the millisecond");
    }
}

#[tokio::test]
async fn cart_and_interactions() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    assert_eq!(get(a, "/cart").await.body, "[]");
    assert_eq!(post_json(a, "/cart", r#"{"sku_id":3}"#).await.status, 201);
    assert_eq!(post_json(a, "/cart", r#"{"skuId":"3"}"#).await.status, 201);
    assert_eq!(post_json(a, "/cart", r#"{"sku_id":1}"#).await.status, 201);
    let r = post_json(a, "/cart", r#"{"sku_id":null,"skuId":1}"#).await;
    assert_eq!(r.status, 201, "a null sku_id is none: skuId is taken");
    assert_eq!(
        get(a, "/cart").await.body,
        r#"[{"sku_id":1,"count":"2"},{"sku_id":3,"count":"2"}]"#
    );
    let other = common::send_raw(a, b"GET /cart HTTP/1.1\r\nHost: t\r\nAuthorization: someone-else\r\nConnection: close\r\n\r\n").await;
    assert_eq!(other.body, "[]", "carts are per Authorization token");
    let r = post_json(a, "/cart", r#"{"sku_id":999}"#).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (422, "Error: Cart body contains invalid entries")
    );

    let r = post_json(
        a,
        "/interactions",
        r#"{"element":"img","widget":"Overview","time":"2020-01-01"}"#,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (201, "Created"));
    assert_eq!(
        post_json(a, "/interactions", r#"{"element":"img"}"#)
            .await
            .status,
        422
    );
    assert_eq!(common::count(&db.client().await, "interactions").await, 1);
}

#[tokio::test]
async fn invalid_writes_get_their_4xx_and_change_nothing() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let client = db.client().await;
    let tables = [
        "reviews",
        "reviews_photos",
        "characteristic_reviews",
        "questions",
        "answers",
        "answers_photos",
        "cart_items",
        "interactions",
        "change_log",
        "applied_requests",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(common::count(&client, t).await);
    }

    let review = r#"{"product_id":1,"rating":4,"summary":"s","body":"b","recommend":true,"name":"n","email":"n@example.com","characteristics":{"1":4}}"#;
    let review_with = |field: &str, value: &str| {
        let mut v: Value = serde_json::from_str(review).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    };
    let invalid_reviews = [
        review_with("rating", "\"five\""),
        review_with("rating", "9"),
        review_with("product_id", "\"abc\""),
        review_with("product_id", "999"), // unknown product
        review_with("recommend", "1"),
        review_with("body", &format!("\"{}\"", "x".repeat(1001))),
        review_with("email", "\"nope\""),
        review_with("characteristics", r#"{"99":4}"#), // unknown characteristic
        review_with("characteristics", r#"{"5":4}"#),  // another product's characteristic
        review_with("photos", r#"["javascript:alert(1)"]"#),
        r#"{"product_id":1}"#.to_owned(),
        "{\"product_id\":1,".to_owned(),
        "null".to_owned(),
        "'; DROP TABLE reviews; --".to_owned(),
    ];
    for body in &invalid_reviews {
        let r = post_json(a, "/reviews", body).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (422, "Error: Review body contains invalid entries"),
            "{body}"
        );
    }
    // The body is read as JSON whatever its Content-Type says (the contract names no 415):
    // a form is malformed JSON, a 422 (and JSON sent as text/plain is taken, below).
    let r = send(
        a,
        "POST",
        "/cart",
        "application/x-www-form-urlencoded",
        "sku_id=1",
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (422, "Error: Cart body contains invalid entries")
    );
    let huge = format!(r#"{{"body":"{}"}}"#, "x".repeat(70 * 1024));
    let r = post_json(a, "/reviews", &huge).await;
    assert_eq!(r.status, 413);

    for body in [
        r#"{"body":"Why?","name":"q","email":"q@example.com","product_id":999}"#,
        r#"{"body":"","name":"q","email":"q@example.com","product_id":1}"#,
        r#"{"body":"Why?","name":"q","email":"q@example.com"}"#,
        r#"{"body":"Why?","name":"q","email":"q@example.com","product_id":1.5}"#,
    ] {
        let r = post_json(a, "/qa/questions", body).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (422, "Error: Question body contains invalid entries"),
            "{body}"
        );
    }
    for body in [
        r#"{"body":"A","name":"a","email":"a@example.com","photos":"https://x.example/1"}"#,
        r#"{"body":"A","name":"a","email":"a@example.com","photos":[1]}"#,
        r#"{"body":"A","name":"","email":"a@example.com"}"#,
    ] {
        let r = post_json(a, "/qa/questions/1/answers", body).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (422, "Error: Answer body contains invalid entries"),
            "{body}"
        );
    }
    assert_eq!(post_json(a, "/cart", r#"{"sku_id":-1}"#).await.status, 422);
    assert_eq!(post_json(a, "/cart", "[]").await.status, 422);

    // A retry key this server would not keep is refused, not ignored, on a write that is
    // otherwise valid: its sender counts on a retry being safe.
    let long_key = "k".repeat(129);
    let helpfulness = || async {
        client
            .query_one("SELECT helpfulness FROM reviews WHERE id = 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0)
    };
    let helpful_before = helpfulness().await;
    for (method, path, body) in [
        ("POST", "/reviews", review),
        ("PUT", "/reviews/1/helpful", ""),
        ("PUT", "/reviews/1/report", ""),
    ] {
        for keys in [
            vec!["two words"],
            vec![long_key.as_str()],
            vec![""],
            vec!["clé"],
            vec!["one", "two"],
        ] {
            let mut raw =
                format!("{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: test-token\r\n");
            for key in &keys {
                raw.push_str(&format!("Idempotency-Key: {key}\r\n"));
            }
            raw.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ));
            let r = common::send_raw(a, raw.as_bytes()).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (400, "Error: invalid Idempotency-Key provided"),
                "{method} {path} {keys:?}"
            );
        }
    }

    assert_eq!(
        helpfulness().await,
        helpful_before,
        "a refused vote counted"
    );
    for (t, n) in tables.iter().zip(&before) {
        assert_eq!(common::count(&client, t).await, *n, "{t} changed");
    }
    // The longest key, of the first and the last visible characters, is one.
    let edge_key = format!("!{}~", "k".repeat(126));
    let r = common::post_json_with_key(a, "/reviews", review, &edge_key).await;
    assert_eq!((r.status, r.body.as_str()), (201, "Created"));
    assert_eq!(common::count(&client, "reviews").await, before[0] + 1);
    // And the server still answers.
    assert_eq!(get(a, "/reviews?product_id=1").await.status, 200);

    // Valid JSON sent as text/plain (as fetch sends a string body) is taken.
    let interaction = r#"{"element":"img","widget":"Overview","time":"now"}"#;
    let r = send(
        a,
        "POST",
        "/interactions",
        "text/plain;charset=UTF-8",
        interaction,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (201, "Created"));
    assert_eq!(common::count(&client, "interactions").await, 1);
}

#[tokio::test]
async fn a_write_made_in_sql_reaches_the_cache() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let client = db.client().await;
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    assert_eq!(get(a, "/products/1/related").await.body, "[2,3,5]");
    assert_eq!(
        ids(
            &get(a, "/reviews?product_id=3").await.body,
            "results",
            "review_id"
        ),
        [6]
    );

    client
        .batch_execute("UPDATE products SET name = 'Camo Twosie' WHERE id = 1")
        .await
        .unwrap();
    let body = eventually(a, "/products/1", |b| b.contains("Camo Twosie")).await;
    assert!(body.contains("Camo Twosie"), "{body}");

    client
        .batch_execute("INSERT INTO related (product_id, related_product_id) VALUES (1, 6)")
        .await
        .unwrap();
    assert_eq!(
        eventually(a, "/products/1/related", |b| b == "[2,3,5,6]").await,
        "[2,3,5,6]"
    );

    client
        .batch_execute("UPDATE reviews SET reported = true WHERE id = 6")
        .await
        .unwrap();
    let body = eventually(a, "/reviews?product_id=3", |b| {
        b.contains(r#""results":[]"#)
    })
    .await;
    assert!(body.contains(r#""results":[]"#), "{body}");

    client
        .batch_execute("UPDATE skus SET quantity = 99 WHERE id = 8")
        .await
        .unwrap();
    let body = eventually(a, "/products/1/styles", |b| {
        b.contains(r#""8":{"quantity":99"#)
    })
    .await;
    assert!(body.contains(r#""8":{"quantity":99"#), "{body}");

    client
        .batch_execute("UPDATE answers_photos SET url = 'https://example.com/new.jpg' WHERE id = 3")
        .await
        .unwrap();
    let body = eventually(a, "/qa/questions?product_id=1", |b| b.contains("new.jpg")).await;
    assert!(body.contains("new.jpg"), "{body}");
    let body = eventually(a, "/qa/questions/1/answers", |b| b.contains("new.jpg")).await;
    assert!(body.contains("new.jpg"), "{body}");
}

#[tokio::test]
async fn a_truncate_made_in_sql_empties_the_cache() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    assert_eq!(post_json(a, "/cart", r#"{"sku_id":3}"#).await.status, 201);
    assert_eq!(get(a, "/cart").await.body, r#"[{"sku_id":3,"count":"1"}]"#);
    db.client()
        .await
        .batch_execute("TRUNCATE cart_items")
        .await
        .unwrap();
    assert_eq!(eventually(a, "/cart", |b| b == "[]").await, "[]");
}

#[tokio::test]
async fn a_characteristic_rated_only_1_has_sixteen_places() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let body = r#"{"product_id":4,"rating":1,"summary":"No","body":"Not for me.","recommend":false,
        "name":"grump","email":"grump@example.com","characteristics":{"10":1}}"#;
    assert_eq!(post_json(a, "/reviews", body).await.status, 201);
    assert_eq!(
        get(a, "/reviews/meta?product_id=4").await.body,
        r#"{"product_id":"4","ratings":{"1":"1"},"recommended":{"false":"1","true":"0"},"characteristics":{"Quality":{"id":10,"value":"1.0000000000000000"}}}"#,
        "PostgreSQL's avg() alone renders 1 with twenty places"
    );
}

#[tokio::test]
async fn the_feed_does_not_refresh_again_what_a_write_of_this_instance_refreshed() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    eventually(a, "/readyz", |b| b == "ready").await;
    let cache = &server.app.cache;
    let feed = server.app.feed_status().expect("feed started");
    let settled = || async {
        assert!(feed.wait_for_fresh_read(Duration::from_secs(10)).await);
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.refreshes_pending() > 0 {
            assert!(Instant::now() < deadline, "refreshes never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cache.stats()
    };
    let before = settled().await;

    // Review 3 is product 2's: its helpful and newest lists are refreshed once, by the write
    // itself, and its meta not at all (a vote does not change it); the feed brings the change
    // back, logged as a vote (migration 10), and skips it. (On a busy machine
    // the feed can read the change before the write's handler has recorded its transaction:
    // then the two refreshes coalesce and nothing is skipped. A few writes make it certain.)
    let mut before = before;
    let mut after_own = before;
    for _ in 0..5 {
        assert_eq!(put(a, "/reviews/3/helpful").await.status, 204);
        after_own = settled().await;
        let refreshed = after_own.refreshed - before.refreshed;
        if after_own.own_changes_skipped > before.own_changes_skipped {
            assert_eq!(refreshed, 2, "the lists only");
            break;
        }
        // The feed was first: it refreshed the lists as for anyone's vote, together with the
        // write's own refresh or after it.
        assert!((2..=4).contains(&refreshed), "{refreshed}");
        before = after_own;
    }
    assert!(after_own.own_changes_skipped > before.own_changes_skipped);

    // The same change made by another writer is refreshed by the feed, and the log says it
    // was a vote (migration 10): the lists only.
    let client = db.client().await;
    let refreshed_after = |sql: &'static str, before: atelier::cache::CacheStats| {
        let client = &client;
        async move {
            client.execute(sql, &[]).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while cache.stats().refreshed - before.refreshed < 2 {
                assert!(
                    Instant::now() < deadline,
                    "the feed never refreshed another's change"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let after = settled().await;
            (after.refreshed - before.refreshed, after)
        }
    };
    let (refreshed, after_other) = refreshed_after(
        "UPDATE reviews SET helpfulness = helpfulness + 1 WHERE id = 3",
        after_own,
    )
    .await;
    assert_eq!(refreshed, 2, "a vote by anyone refreshes the lists only");
    assert_eq!(
        after_other.own_changes_skipped,
        after_own.own_changes_skipped
    );
    // Any other change of a review is its meta's too, a vote made in the same update included.
    let (refreshed, _) = refreshed_after(
        "UPDATE reviews SET helpfulness = helpfulness + 1, response = 'Thanks!' WHERE id = 3",
        after_other,
    )
    .await;
    assert_eq!(refreshed, 3, "lists and meta");
    let helpfulness: i32 = client
        .query_one("SELECT helpfulness FROM reviews WHERE id = 3", &[])
        .await
        .unwrap()
        .get(0);
    let body = get(a, "/reviews?product_id=2&sort=newest").await.body;
    assert!(
        body.contains("\"review_id\":3,")
            && body.contains(&format!("\"helpfulness\":{helpfulness},")),
        "{body}"
    );
}

/// `PUT path` with `header: value`; with `Idempotency-Key`, as nginx sends every attempt of one
/// request (the client's key, or nginx's `$request_id`).
async fn put_with(a: std::net::SocketAddr, path: &str, header: &str, value: &str) -> common::Reply {
    let raw =
        format!("PUT {path} HTTP/1.1\r\nHost: t\r\n{header}: {value}\r\nConnection: close\r\n\r\n");
    common::send_raw(a, raw.as_bytes()).await
}

async fn put_with_key(a: std::net::SocketAddr, path: &str, key: &str) -> common::Reply {
    put_with(a, path, "Idempotency-Key", key).await
}

#[tokio::test]
async fn a_helpful_vote_retried_with_the_same_idempotency_key_counts_once() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let client = db.client().await;
    let helpfulness = |table: &'static str, id: i64| {
        let client = &client;
        async move {
            client
                .query_one(
                    &format!("SELECT helpfulness FROM {table} WHERE id = $1"),
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    };
    for (table, path) in [
        ("reviews", "/reviews/1/helpful"),
        ("questions", "/qa/questions/1/helpful"),
        ("answers", "/qa/answers/1/helpful"),
    ] {
        let before = helpfulness(table, 1).await;
        // One request, tried three times (a balancer's retries): counted once, answered 204
        // each time.
        for _ in 0..3 {
            assert_eq!(
                put_with_key(a, path, &format!("{table}-vote-1"))
                    .await
                    .status,
                204
            );
        }
        assert_eq!(helpfulness(table, 1).await, before + 1, "{table}");
        // Another request, another vote; and requests without an id count each time.
        assert_eq!(
            put_with_key(a, path, &format!("{table}-vote-2"))
                .await
                .status,
            204
        );
        assert_eq!(put(a, path).await.status, 204);
        assert_eq!(put(a, path).await.status, 204);
        assert_eq!(helpfulness(table, 1).await, before + 4, "{table}");
        // A client's own X-Request-Id is a trace, not a retry key: the same one twice is two
        // votes.
        for _ in 0..2 {
            let traced = put_with(a, path, "X-Request-Id", &format!("{table}-trace")).await;
            assert_eq!(traced.status, 204);
        }
        assert_eq!(helpfulness(table, 1).await, before + 6, "{table}");
    }
    // A vote for an unknown id is a 404 and records no key.
    let keys = || common::count(&client, "applied_requests");
    let recorded = keys().await;
    for path in [
        "/reviews/999999/helpful",
        "/qa/questions/999999/helpful",
        "/qa/answers/999999/helpful",
    ] {
        assert_eq!(put_with_key(a, path, "unknown-row").await.status, 404);
    }
    assert_eq!(keys().await, recorded, "a 404 wrote a key");
    // An id already spent on one row still counts on another: a client that sends the same id
    // with every request loses no vote (it only cannot vote twice for one row with it).
    let before = helpfulness("reviews", 2).await;
    let other_row = put_with_key(a, "/reviews/2/helpful", "reviews-vote-1").await;
    assert_eq!(other_row.status, 204);
    assert_eq!(helpfulness("reviews", 2).await, before + 1);
    // Keys are the caller's: another caller's vote under a key spent on this row counts.
    let raw = "PUT /reviews/2/helpful HTTP/1.1\r\nHost: t\r\nAuthorization: another-token\r\n\
               Idempotency-Key: reviews-vote-1\r\nConnection: close\r\n\r\n";
    assert_eq!(common::send_raw(a, raw.as_bytes()).await.status, 204);
    assert_eq!(helpfulness("reviews", 2).await, before + 2);
}

#[tokio::test]
async fn a_post_retried_with_the_same_idempotency_key_is_made_once() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let client = db.client().await;
    let total = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let review = |summary: &str| {
        format!(
            r#"{{"product_id":1,"rating":4,"summary":"{summary}","body":"Kept once however often it is sent.","recommend":true,"name":"n","email":"n@example.com","photos":["https://example.com/r.jpg"],"characteristics":{{}}}}"#
        )
    };
    let question = |body: &str| {
        format!(r#"{{"body":"{body}","name":"asker","email":"a@example.com","product_id":1}}"#)
    };
    let answer = |body: &str| {
        format!(
            r#"{{"body":"{body}","name":"answerer","email":"b@example.com","photos":["https://example.com/a.jpg"]}}"#
        )
    };
    let sku = |id: &str| format!(r#"{{"sku_id":{id}}}"#);
    let interaction =
        |element: &str| format!(r#"{{"element":"{element}","widget":"Overview","time":"t"}}"#);
    // Each route, the body it is sent for a text, two texts, and what its write adds one to.
    type Body = fn(&str) -> String;
    let routes: [(&str, Body, [&str; 2], &str); 5] = [
        (
            "/reviews",
            review,
            ["Once", "Another"],
            "SELECT count(*) FROM reviews",
        ),
        (
            "/qa/questions",
            question,
            ["Once?", "Another?"],
            "SELECT count(*) FROM questions",
        ),
        (
            "/qa/questions/1/answers",
            answer,
            ["Once.", "Another."],
            "SELECT count(*) FROM answers_photos",
        ),
        (
            "/cart",
            sku,
            ["3", "1"],
            "SELECT coalesce(sum(count), 0)::int8 FROM cart_items",
        ),
        (
            "/interactions",
            interaction,
            ["img", "a"],
            "SELECT count(*) FROM interactions",
        ),
    ];
    let mut repeated = 0;
    for (path, body, [first, second], measure) in routes {
        let before = total(measure).await;
        let created = |r: common::Reply| assert_eq!((r.status, r.body), (201, "Created".into()));
        // One request tried three times (a balancer's retries): made once, 201 each time.
        for _ in 0..3 {
            created(common::post_json_with_key(a, path, &body(first), &format!("{path}-1")).await);
        }
        assert_eq!(total(measure).await, before + 1, "{path}: retried");
        // The same key with another request (a client reusing keys) is a request of its own.
        created(common::post_json_with_key(a, path, &body(second), &format!("{path}-1")).await);
        assert_eq!(total(measure).await, before + 2, "{path}: another body");
        // Without a key, each request is made.
        created(post_json(a, path, &body(first)).await);
        created(post_json(a, path, &body(first)).await);
        assert_eq!(total(measure).await, before + 4, "{path}: no key");
        // Two attempts at once: the second waits for the first's claim, and makes nothing.
        let (key, same) = (format!("{path}-2"), body(first));
        let (one, two) = tokio::join!(
            common::post_json_with_key(a, path, &same, &key),
            common::post_json_with_key(a, path, &same, &key),
        );
        created(one);
        created(two);
        assert_eq!(total(measure).await, before + 5, "{path}: at once");
        // Another caller's request under the same key is its own: keys are the caller's.
        created(
            common::post_json_as(a, "another-token", path, &body(first), &format!("{path}-1"))
                .await,
        );
        assert_eq!(total(measure).await, before + 6, "{path}: another caller");
        // Two retries and one attempt at once found their request made.
        let now_repeated = common::metric(a, "atelier_posts_repeated_total").await;
        assert_eq!(now_repeated, repeated + 3, "{path}: repeats counted");
        repeated = now_repeated;
    }
    // The writer's next read has its write, and each retried review is there once.
    let newest = get(a, "/reviews?product_id=1&sort=newest&count=100")
        .await
        .body;
    assert_eq!(newest.matches(r#""summary":"Once""#).count(), 5, "{newest}");

    // A request refused claims nothing.
    let keys = || common::count(&client, "applied_requests");
    let recorded = keys().await;
    let refused = [
        (
            "/reviews",
            r#"{"product_id":1,"rating":4,"summary":"s","body":"b","recommend":true,"name":"n","email":"n@example.com","characteristics":{"999":3}}"#,
            422,
        ),
        (
            "/reviews",
            r#"{"product_id":999999,"rating":4,"summary":"s","body":"b","recommend":true,"name":"n","email":"n@example.com","characteristics":{}}"#,
            422,
        ),
        (
            "/qa/questions",
            r#"{"body":"b","name":"n","email":"n@example.com","product_id":999999}"#,
            422,
        ),
        (
            "/qa/questions/999999/answers",
            r#"{"body":"b","name":"n","email":"n@example.com"}"#,
            404,
        ),
        ("/cart", r#"{"sku_id":999999}"#, 422),
        ("/interactions", r#"{"element":"img"}"#, 422),
    ];
    for (path, body, status) in refused {
        let r = common::post_json_with_key(a, path, body, "refused").await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
    }
    assert_eq!(keys().await, recorded, "a refused POST claimed its key");
    // Once the rows they named exist, the same requests under the same key are made: a claim
    // taken by the refusal would have answered them 201 and written nothing.
    client
        .batch_execute(
            "INSERT INTO skus (id, style_id, size, quantity) VALUES (999999, 1, 'XL', 5);
             INSERT INTO questions (id, product_id, body, asker_name, asker_email)
                 VALUES (999999, 1, 'Late?', 'q', 'q@example.com')",
        )
        .await
        .unwrap();
    for (path, body, _) in refused
        .iter()
        .filter(|(path, ..)| ["/qa/questions/999999/answers", "/cart"].contains(path))
    {
        let r = common::post_json_with_key(a, path, body, "refused").await;
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    }
    assert_eq!(
        common::count(&client, "answers WHERE question_id = 999999").await,
        1
    );
    assert_eq!(
        common::count(&client, "cart_items WHERE sku_id = 999999").await,
        1
    );
}

/// An instance that gets the retry of a POST another instance made refreshes what it changed
/// before answering, as for a write of its own, even while its feed lags: the client's next
/// read there has its write.
#[tokio::test]
async fn an_instance_answering_a_posts_retry_refreshes_what_the_first_attempt_changed() {
    let (db, first) = server_with_data(&common::sample_dir()).await;
    let feed_proxy = common::proxy::Proxy::start(&db.config).await;
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        feed_database: Some(feed_proxy.config(&db.config)),
        ..Default::default()
    };
    let retrying = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    common::ready(first.addr).await;
    common::ready(retrying.addr).await;
    let newest = "/reviews?product_id=1&sort=newest";
    let review = r#"{"product_id":1,"rating":4,"summary":"Sent twice","body":"The first attempt's answer was lost.","recommend":true,"name":"n","email":"n@example.com","characteristics":{}}"#;
    assert!(!get(retrying.addr, newest).await.body.contains("Sent twice"));
    // The second instance hears of no change meanwhile.
    feed_proxy.delay_replies(Duration::from_secs(5));
    let made = common::post_json_with_key(first.addr, "/reviews", review, "lost-answer").await;
    assert_eq!(made.status, 201);
    let retried =
        common::post_json_with_key(retrying.addr, "/reviews", review, "lost-answer").await;
    assert_eq!(retried.status, 201);
    let read = get(retrying.addr, newest).await.body;
    feed_proxy.delay_replies(Duration::ZERO);
    assert_eq!(read.matches("Sent twice").count(), 1, "{read}");
    assert_eq!(
        common::count(&db.client().await, "reviews WHERE summary = 'Sent twice'").await,
        1
    );
}

/// The list behind `key`, rendered fresh from the database.
async fn fresh_list(key: &Key, pool: &atelier::pg::pool::Pool) -> atelier::render::SharedList {
    match atelier::cache::fill(key, pool).await.unwrap() {
        Rendered::List(list) => list,
        other => panic!("{key:?} is a list: {other:?}"),
    }
}

#[tokio::test]
async fn a_vote_re_renders_the_review_lists_from_their_items_as_a_fresh_read_would() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    eventually(a, "/readyz", |b| b == "ready").await;
    let cache = &server.app.cache;
    let client = db.client().await;
    let pool = atelier::pg::pool::Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let settled = || async {
        common::settled(&server).await;
        cache.stats()
    };
    // Both of product 2's lists, held and as served, are what a fresh read renders.
    let fresh_both = || async {
        for (order, sort) in [
            (ReviewOrder::Helpful, "helpful"),
            (ReviewOrder::Newest, "newest"),
        ] {
            let key = Key::Reviews {
                product_id: 2,
                order,
            };
            let fresh = fresh_list(&key, &pool).await;
            assert_eq!(
                cache.peek(&key),
                Some(Rendered::List(fresh.clone())),
                "{sort}"
            );
            for count in [5, 7, 100] {
                let page = Frame::Reviews(2).page(&fresh, 1, count);
                let served = get(
                    a,
                    &format!("/reviews?product_id=2&sort={sort}&count={count}"),
                )
                .await;
                assert_eq!(served.body.as_bytes(), &page[..], "{sort} {count}");
            }
        }
    };
    // Ninety more reviews of product 2 (packed in runs): helpfulness and shown dates tied (the order then goes
    // by the microsecond, then the id), photos on some, and text that holds what a careless
    // reading of an item would take for its keys.
    client
        .batch_execute(
            r#"INSERT INTO reviews (product_id, rating, date, summary, body, recommend,
                                    reviewer_name, reviewer_email, helpfulness)
               SELECT 2, 1 + n % 5,
                      timestamptz '2021-01-01' + (n % 4) * interval '1 millisecond'
                                               + (n % 3) * interval '1 microsecond',
                      'summary ' || n || ',"date":"1970-01-01T00:00:00.000Z","helpfulness":7,"photos":[]}',
                      'body "' || n || E'"\n', n % 2 = 0, 'name ,"helpfulness":' || n,
                      'e@example.com', n % 3
                 FROM generate_series(1, 90) n;
               INSERT INTO reviews_photos (review_id, url)
               SELECT id, 'https://example.com/' || id FROM reviews
                WHERE product_id = 2 AND id % 3 = 0;"#,
        )
        .await
        .unwrap();
    let mut before = settled().await;
    fresh_both().await;
    let ids = db
        .ids(
            "SELECT id FROM reviews WHERE product_id = 2 AND NOT reported ORDER BY helpfulness, id",
        )
        .await;

    // Votes through the API, the least helpful first, so that the order changes: each one
    // refreshed from the lists' own items and the voted review's sort key alone.
    for (n, id) in ids.iter().take(6).enumerate() {
        for _ in 0..=n % 3 {
            assert_eq!(put(a, &format!("/reviews/{id}/helpful")).await.status, 204);
            let after = settled().await;
            assert!(after.revoted > before.revoted, "vote on {id}: not revoted");
            assert!(
                after.revoted_by_review > before.revoted_by_review,
                "vote on {id}: every review's key read"
            );
            before = after;
            fresh_both().await;
        }
    }
    // Votes made in SQL, on two reviews in one statement: the feed's refresh revotes too, from
    // the two reviews' keys.
    client
        .execute(
            "UPDATE reviews SET helpfulness = helpfulness + 5 WHERE id = ANY($1)",
            &[&vec![ids[7], ids[12]]],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().revoted_by_review == before.revoted_by_review {
        assert!(
            Instant::now() < deadline,
            "the feed's votes were never revoted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = settled().await;
    assert_eq!(
        after.revoted - before.revoted,
        after.revoted_by_review - before.revoted_by_review,
        "a revote read every key"
    );
    before = after;
    fresh_both().await;

    // A review added and a vote cast where no trigger logs them, and the vote logged as
    // migration 10 logged votes, without naming the review (a row from before migration 13):
    // every review's sort key is read, which shows the review the lists lack, and the refresh
    // reads every review again.
    client
        .batch_execute(
            "ALTER TABLE reviews DISABLE TRIGGER log_change;
             INSERT INTO reviews (product_id, rating, summary, body, recommend, reviewer_name,
                                  reviewer_email)
             VALUES (2, 3, 'unlogged', 'b', true, 'n', 'e@example.com');
             ALTER TABLE reviews ENABLE TRIGGER log_change;",
        )
        .await
        .unwrap();
    let refreshed_after_vote = |sql: String, before: atelier::cache::CacheStats| {
        let client = &client;
        async move {
            client.batch_execute(&sql).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while cache.stats().refreshed - before.refreshed < 2 {
                assert!(
                    Instant::now() < deadline,
                    "the feed never refreshed the change"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            settled().await
        }
    };
    let vote = "ALTER TABLE reviews DISABLE TRIGGER log_change;
                UPDATE reviews SET helpfulness = helpfulness + 1
                 WHERE id = (SELECT min(id) FROM reviews WHERE product_id = 2);
                ALTER TABLE reviews ENABLE TRIGGER log_change;
                SELECT atelier_log_change('reviews', 2, NULL, 'votes');";
    let after = refreshed_after_vote(vote.to_owned(), before).await;
    assert_eq!(
        after.revoted, before.revoted,
        "keys that show another change are not revoted"
    );
    fresh_both().await;
    assert!(get(a, "/reviews?product_id=2&sort=newest&count=100")
        .await
        .body
        .contains("unlogged"));

    // A review's text edited in the transaction of a vote, before it and after it: the
    // changes are not only votes, and the lists are read again (the keys alone would not
    // show the edit).
    let mut before = after;
    for (n, (first, second)) in [("edit", "vote"), ("vote", "edit")].into_iter().enumerate() {
        let statement = |what: &str| match what {
            "edit" => format!(
                "UPDATE reviews SET body = 'edited {n}'
                  WHERE id = (SELECT max(id) FROM reviews WHERE product_id = 2);"
            ),
            _ => "UPDATE reviews SET helpfulness = helpfulness + 1
                   WHERE id = (SELECT min(id) FROM reviews WHERE product_id = 2);"
                .to_owned(),
        };
        let sql = format!("BEGIN; {} {} COMMIT;", statement(first), statement(second));
        let after = refreshed_after_vote(sql, before).await;
        assert_eq!(after.revoted, before.revoted, "{first} then {second}");
        fresh_both().await;
        assert!(get(a, "/reviews?product_id=2&sort=newest&count=100")
            .await
            .body
            .contains(&format!("\"edited {n}\"")));
        before = after;
    }
}

#[tokio::test]
async fn a_vote_on_lists_filled_apart_reads_every_key_then_the_voted_ones_alone() {
    // On demand, a miss fills each order of a product's reviews on its own: two lists, not
    // one buffer with an order by date over it, so the held lists do not tell the dates'
    // order and a vote's refresh reads every review's key. That refresh renders both orders
    // from one buffer, and the next vote reads the voted review's key alone.
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        precompute: atelier::config::Precompute::None,
        ..Default::default()
    };
    let (db, server) = common::server_with_settings(&common::sample_dir(), settings).await;
    let a = server.addr;
    eventually(a, "/readyz", |b| b == "ready").await;
    let cache = &server.app.cache;
    let pool = atelier::pg::pool::Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let key = |order| Key::Reviews {
        product_id: 1,
        order,
    };
    for sort in ["helpful", "newest"] {
        assert_eq!(
            get(a, &format!("/reviews?product_id=1&sort={sort}"))
                .await
                .status,
            200
        );
    }
    let review = db
        .ids("SELECT max(id) FROM reviews WHERE product_id = 1 AND NOT reported")
        .await[0];
    for by_review in [false, true] {
        common::settled(&server).await;
        let before = cache.stats();
        assert_eq!(
            put(a, &format!("/reviews/{review}/helpful")).await.status,
            204
        );
        common::settled(&server).await;
        let after = cache.stats();
        // Once, or twice where the feed brings the vote back before the writer has remembered
        // it as its own (a redundant refresh, seen once in a CI run): the first vote's refresh
        // reads every key (a second one may find one buffer by then), and the second vote's
        // read the voted review's key alone.
        let revotes = after.revoted - before.revoted;
        assert!((1..=2).contains(&revotes), "by review: {by_review}");
        let by_review_revotes = after.revoted_by_review - before.revoted_by_review;
        if by_review {
            assert_eq!(by_review_revotes, revotes, "the second vote");
        } else {
            assert!(by_review_revotes < revotes, "the first vote read every key");
        }
        for order in [ReviewOrder::Helpful, ReviewOrder::Newest] {
            let fresh = fresh_list(&key(order), &pool).await;
            assert_eq!(
                cache.peek(&key(order)),
                Some(Rendered::List(fresh)),
                "{order:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_answer_re_renders_its_question_in_the_products_list_as_a_fresh_read_would() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    eventually(a, "/readyz", |b| b == "ready").await;
    let cache = &server.app.cache;
    let client = db.client().await;
    let pool = atelier::pg::pool::Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let settled = || async {
        common::settled(&server).await;
        cache.stats()
    };
    // A product's questions list, and each question's answers, held and as served, are what
    // a fresh read renders.
    let fresh = |product: i64| {
        let (db, pool) = (&db, &pool);
        async move {
            let key = Key::Questions(product);
            let fresh = fresh_list(&key, pool).await;
            assert_eq!(cache.peek(&key), Some(Rendered::List(fresh.clone())));
            let page = Frame::Questions(product).page(&fresh, 1, 100);
            let served = get(a, &format!("/qa/questions?product_id={product}&count=100")).await;
            assert_eq!(served.body.as_bytes(), &page[..]);
            let questions = db
                .ids(&format!(
                    "SELECT id FROM questions WHERE product_id = {product}"
                ))
                .await;
            for q in questions {
                let key = Key::Answers(q);
                let fresh = atelier::cache::fill(&key, pool).await.unwrap();
                if let Some(held) = cache.peek(&key) {
                    assert_eq!(held, fresh, "answers of {q}");
                }
            }
            served.body
        }
    };
    let fresh_all = || fresh(1);
    // Ninety more questions of product 1 (packed in runs), helpfulness and shown dates tied, with text that
    // holds what a careless reading of an item would take for its keys.
    client
        .batch_execute(
            r#"INSERT INTO questions (product_id, body, date, asker_name, asker_email, helpfulness)
               SELECT 1, 'q ' || n || '","question_helpfulness":7,"reported":false,"answers":{',
                      timestamptz '2021-01-01' + (n % 4) * interval '1 millisecond'
                                               + (n % 3) * interval '1 microsecond',
                      'asker ,"question_date":"x"', 'e@example.com', n % 3
                 FROM generate_series(1, 90) n;"#,
        )
        .await
        .unwrap();
    let mut before = settled().await;
    fresh_all().await;
    let visible = db
        .ids("SELECT id FROM questions WHERE product_id = 1 AND NOT reported ORDER BY id")
        .await;
    // Each of these changes one question's answers in a list kept in runs: its item is
    // replaced where it is, and only that question's key read.
    let reanswered = |before: &atelier::cache::CacheStats, what: &str| {
        let after = cache.stats();
        assert!(
            after.reanswered_in_place > before.reanswered_in_place,
            "{what}: not reanswered in place"
        );
        assert!(after.reanswered > before.reanswered);
        after
    };

    // Answers through the API, with photos; a vote on one and a report of another.
    for (n, q) in visible.iter().step_by(5).enumerate() {
        let answer = format!(
            r#"{{"body":"answer {n} ,\"id\":1","name":"n","email":"n@example.com","photos":["https://example.com/{n}.jpg"]}}"#
        );
        let path = format!("/qa/questions/{q}/answers");
        assert_eq!(post_json(a, &path, &answer).await.status, 201);
        settled().await;
        before = reanswered(&before, "an answer");
        fresh_all().await;
    }
    let answer: i64 = client
        .query_one(
            "SELECT max(a.id) FROM answers a JOIN questions q ON q.id = a.question_id WHERE q.product_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for mark in ["helpful", "report"] {
        assert_eq!(
            put(a, &format!("/qa/answers/{answer}/{mark}")).await.status,
            204
        );
        settled().await;
        before = reanswered(&before, mark);
        fresh_all().await;
    }

    // Made in SQL, brought by the feed: an answer, a photo of one, an answer moved to another
    // question (two questions' answers, whose changes may come apart or together), an answer
    // to a reported question (which the list does not show: it stays as it is).
    for (sql, in_place) in [
        (
            format!(
                "INSERT INTO answers (question_id, body, answerer_name, answerer_email)
                 VALUES ({}, 'by sql', 'n', 'e@example.com')",
                visible[1]
            ),
            true,
        ),
        (
            format!(
                "INSERT INTO answers_photos (answer_id, url)
                 SELECT max(id), 'https://example.com/sql.jpg' FROM answers WHERE question_id = {}",
                visible[1]
            ),
            true,
        ),
        (
            format!(
                "UPDATE answers SET question_id = {} WHERE id = (SELECT max(id) FROM answers WHERE question_id = {})",
                visible[2], visible[1]
            ),
            false,
        ),
        (
            "INSERT INTO answers (question_id, body, answerer_name, answerer_email)
             SELECT id, 'to a reported question', 'n', 'e@example.com' FROM questions
              WHERE product_id = 1 AND reported LIMIT 1"
                .to_owned(),
            true,
        ),
        // To another product's question: both products' lists change.
        (
            format!(
                "UPDATE answers SET question_id = (SELECT min(id) FROM questions WHERE product_id = 2)
                  WHERE id = (SELECT max(id) FROM answers WHERE question_id = {})",
                visible[2]
            ),
            false,
        ),
    ] {
        client.batch_execute(&sql).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.stats().reanswered == before.reanswered {
            assert!(Instant::now() < deadline, "never reanswered: {sql}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let after = settled().await;
        if in_place {
            assert!(
                after.reanswered_in_place > before.reanswered_in_place,
                "not in place: {sql}"
            );
        }
        before = after;
        fresh_all().await;
        fresh(2).await;
    }

    // A question added where no trigger logs it, then an answer to another question of a
    // short list (a lead page and one packed run: not kept in runs): the refresh reads every
    // question's key, which shows the question the list lacks, and reads the list again whole.
    client
        .batch_execute(
            "INSERT INTO questions (product_id, body, asker_name, asker_email)
             SELECT 2, 'more ' || n || ', in the same words as the others', 'n', 'e@example.com'
               FROM generate_series(1, 12) n",
        )
        .await
        .unwrap();
    let before = settled().await;
    match cache.peek(&Key::Questions(2)) {
        Some(Rendered::List(held)) => assert_ne!(held.codec(), Codec::Plain),
        other => panic!("product 2's questions not held as a list: {other:?}"),
    }
    let unlogged = |product: i64, body: &str| {
        format!(
            "ALTER TABLE questions DISABLE TRIGGER log_change;
             INSERT INTO questions (product_id, body, asker_name, asker_email)
             VALUES ({product}, '{body}', 'n', 'e@example.com');
             ALTER TABLE questions ENABLE TRIGGER log_change;"
        )
    };
    client
        .batch_execute(&unlogged(2, "unlogged in 2?"))
        .await
        .unwrap();
    let refreshed_after = |sql: String, before: atelier::cache::CacheStats| {
        let client = &client;
        async move {
            client.batch_execute(&sql).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            // The questions list (the new question's answers are not held).
            while cache.stats().refreshed == before.refreshed {
                assert!(Instant::now() < deadline, "the feed never refreshed: {sql}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            settled().await
        }
    };
    let answer_to = |question: i64| {
        format!(
            "INSERT INTO answers (question_id, body, answerer_name, answerer_email)
             VALUES ({question}, 'after the unlogged question', 'n', 'e@example.com');"
        )
    };
    let in_2 = db
        .ids("SELECT id FROM questions WHERE product_id = 2 AND NOT reported ORDER BY id")
        .await;
    let after = refreshed_after(answer_to(in_2[0]), before).await;
    assert_eq!(
        (after.reanswered, after.reanswered_in_place),
        (before.reanswered, before.reanswered_in_place),
        "keys that show another change"
    );
    assert!(fresh(2).await.contains("unlogged in 2?"));

    // The same in product 1's list, kept in runs: the answered question's key alone is read,
    // which cannot show the unlogged question, and the list is reanswered in place without it
    // (docs/architecture.md, what a change refreshes). The next change to the product's
    // questions that is not answers alone reads the list whole, and shows it.
    client
        .batch_execute(&unlogged(1, "unlogged?"))
        .await
        .unwrap();
    let answer_sql = answer_to(visible[3]);
    let before = after;
    let after = refreshed_after(answer_sql.clone(), before).await;
    assert!(after.reanswered_in_place > before.reanswered_in_place);
    match cache.peek(&Key::Questions(1)) {
        Some(Rendered::List(held)) => {
            let page = Frame::Questions(1).page(&held, 1, 1000);
            let page = String::from_utf8_lossy(&page);
            assert!(page.contains("after the unlogged question"));
            assert!(!page.contains("unlogged?"));
        }
        other => panic!("product 1's questions not held as a list: {other:?}"),
    }

    // A question's text edited in the transaction of an answer, before it and after it: the
    // changes are not only answers, and the list is read again.
    let mut before = after;
    for (n, edit_first) in [true, false].into_iter().enumerate() {
        let edit = format!(
            "UPDATE questions SET body = 'edited {n}' WHERE id = {};",
            visible[4]
        );
        let sql = match edit_first {
            true => format!("BEGIN; {edit} {answer_sql} COMMIT;"),
            false => format!("BEGIN; {answer_sql} {edit} COMMIT;"),
        };
        let after = refreshed_after(sql, before).await;
        assert_eq!(
            after.reanswered, before.reanswered,
            "edit first: {edit_first}"
        );
        let served = fresh_all().await;
        assert!(served.contains(&format!("\"edited {n}\"")));
        assert!(served.contains("unlogged?"));
        before = after;
    }
}

/// A server over the sample whose pool reaches the database through a proxy (which can slow
/// every reply) and whose feed does not, with `request_timeout`.
async fn server_with_a_slowable_pool(
    request_timeout: Duration,
) -> (common::TestDb, common::proxy::Proxy, atelier::http::Running) {
    let db = common::loaded_database(&common::sample_dir()).await;
    let proxy = common::proxy::Proxy::start(&db.config).await;
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        db_timeout: Duration::from_secs(10),
        feed_database: Some(db.config.clone()),
        limits: atelier::config::Limits {
            request_timeout,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = atelier::http::start(settings, proxy.config(&db.config))
        .await
        .unwrap();
    common::ready(server.addr).await;
    (db, proxy, server)
}

/// A write whose own refresh is slow (every reply of the database late) is still answered
/// 201, within the request's time, not 503 after it committed (a client would retry it into a
/// second review); what the refresh had not swapped in is dropped, so the writer's next read
/// has the write.
#[tokio::test]
async fn a_committed_write_is_answered_in_time_however_slow_its_own_refresh() {
    let (db, proxy, server) = server_with_a_slowable_pool(Duration::from_secs(2)).await;
    let a = server.addr;
    let newest = "/reviews?product_id=1&sort=newest";
    assert!(!get(a, newest).await.body.contains("Slow but stored"));
    get(a, "/reviews/meta?product_id=1").await;

    // Every reply late: the write's own statement takes one, its refresh several.
    proxy.delay_replies(Duration::from_millis(900));
    let posted = post_json(
        a,
        "/reviews",
        r#"{"product_id":1,"rating":4,"summary":"Slow but stored","body":"Written while the database lagged.","recommend":true,"name":"n","email":"n@example.com","characteristics":{}}"#,
    )
    .await;
    assert_eq!(
        (posted.status, posted.body.as_str()),
        (201, "Created"),
        "a committed write"
    );
    proxy.delay_replies(Duration::ZERO);
    let client = db.client().await;
    let stored = common::count(&client, "reviews WHERE summary = 'Slow but stored'").await;
    assert_eq!(stored, 1);
    assert!(
        get(a, newest).await.body.contains("Slow but stored"),
        "the writer's next read has its write"
    );
}

/// A write's own refresh cut short while the feed took its key over (another writer's change
/// of the same list, whose refresh waits its turn in the background): the body from before the
/// write must not stay in place meanwhile, or the writer's next read misses its own write.
#[tokio::test]
async fn a_write_cut_short_while_another_change_took_its_key_over_still_reads_its_own_write() {
    // The write's refresh is cut a second after it starts (a quarter of the request's time),
    // while its first read is still on its way (every reply 1.5 s late).
    let (db, proxy, server) = server_with_a_slowable_pool(Duration::from_secs(4)).await;
    let a = server.addr;
    let newest = "/reviews?product_id=1&sort=newest";
    let key = Key::Reviews {
        product_id: 1,
        order: ReviewOrder::Newest,
    };
    let cache = &server.app.cache;
    let client = db.client().await;
    // The vote must come after the write's refresh began and before it is cut, which only the
    // clock arranges: an attempt where it came too early (the key then is no longer being
    // refreshed once the write is answered) is made again.
    for attempt in 0..3 {
        let summary = format!("Overtaken {attempt}");
        assert!(!get(a, newest).await.body.contains(&summary));
        // The pool's replies late: the write's commit is heard about 1.5 s after it, and its
        // refresh would take seconds more.
        proxy.delay_replies(Duration::from_millis(1500));
        let body = format!(
            r#"{{"product_id":1,"rating":4,"summary":"{summary}","body":"Written while another change came.","recommend":true,"name":"n","email":"n@example.com","characteristics":{{}}}}"#
        );
        let posting = tokio::spawn(async move { post_json(a, "/reviews", &body).await });
        // While the write's refresh runs (from about 1.5 s to its cut at about 2.5 s): a vote
        // on another review of the product, in SQL, which the feed (not slowed) brings at
        // once, taking the product's review lists over.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        client
            .batch_execute("UPDATE reviews SET helpfulness = helpfulness + 1 WHERE id = 2")
            .await
            .unwrap();
        let posted = posting.await.unwrap();
        assert_eq!(posted.status, 201);
        let taken_over = cache.is_being_refreshed(&key);
        proxy.delay_replies(Duration::ZERO);
        let served = get(a, newest).await.body;
        assert!(
            served.contains(&summary),
            "the writer's next read has its write: {served}"
        );
        if taken_over {
            return;
        }
        println!("attempt {attempt}: the vote came before the write's refresh began; again");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.is_being_refreshed(&key) {
            assert!(Instant::now() < deadline, "refreshes never settled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("in three attempts the vote never took the key over during the write's refresh");
}
