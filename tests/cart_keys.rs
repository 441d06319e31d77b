//! Carts are stored under a hash of the caller's `Authorization` value, never the value: in the
//! cart table and in the change log. The hash here is PostgreSQL's own `sha256()`, apart from
//! the server's. With a cart secret the key is an HMAC, and carts stored before (under a plain
//! digest, or under a token by an older build) move under it at start; migration 4 turned the
//! tokens an older build stored into keys without losing a cart or logging a token.

mod common;

use atelier::cart_key::CartKeys;
use atelier::config::ServeSettings;
use common::{sample_dir, send_raw, server_with_settings, Reply, TestDb};

const SECRET: &[u8] = b"a test secret, thirty-two bytes!";

async fn as_caller(addr: std::net::SocketAddr, token: &str, method: &str, body: &str) -> Reply {
    let raw = format!(
        "{method} /cart HTTP/1.1\r\nHost: t\r\nAuthorization: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    send_raw(addr, raw.as_bytes()).await
}

async fn one_sku(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT min(id) FROM skus", &[])
        .await
        .unwrap()
        .get(0)
}

async fn stored_keys(db: &TestDb, table: &str) -> Vec<String> {
    db.client()
        .await
        .query(
            &format!("SELECT DISTINCT session FROM {table} WHERE session IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `token`'s key without a secret, as PostgreSQL computes it.
async fn sha256_key(db: &TestDb, token: &str) -> String {
    db.client()
        .await
        .query_one(
            "SELECT 'sha256:' || encode(sha256(convert_to($1, 'UTF8')), 'hex')",
            &[&token],
        )
        .await
        .unwrap()
        .get(0)
}

fn settings(cart_keys: CartKeys) -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        cart_keys,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_cart_key_is_not_the_token() {
    let (db, server) = server_with_settings(&sample_dir(), settings(CartKeys::default())).await;
    let a = server.addr;
    let sku = one_sku(&db).await;
    let token = "caller-token-123";
    let body = format!(r#"{{"sku_id":{sku}}}"#);
    assert_eq!(as_caller(a, token, "POST", &body).await.status, 201);
    let mine = as_caller(a, token, "GET", "").await;
    assert_eq!(mine.body, format!(r#"[{{"sku_id":{sku},"count":"1"}}]"#));
    assert_eq!(as_caller(a, "someone-else", "GET", "").await.body, "[]");

    let expected = sha256_key(&db, token).await;
    assert_eq!(stored_keys(&db, "cart_items").await, vec![expected.clone()]);
    let logged = stored_keys(&db, "change_log").await;
    assert!(logged.contains(&expected), "{logged:?}");
    assert!(
        logged.iter().all(|k| !k.contains(token)),
        "no token in the change log: {logged:?}"
    );
}

#[tokio::test]
async fn with_a_secret_carts_are_keyed_by_hmac_and_carts_stored_before_move_under_it() {
    let db = common::loaded_database(&sample_dir()).await;
    let sku = one_sku(&db).await;
    // A cart stored by a server without the secret, and carts stored by an older build still
    // running, under the token itself: one of them the same caller's, with the same sku.
    let before = sha256_key(&db, "old-caller").await;
    for (key, count) in [
        (before.as_str(), 2),
        ("old-caller", 1),
        ("older-build-caller", 2),
    ] {
        db.client()
            .await
            .execute(
                "INSERT INTO cart_items (session, sku_id, count) VALUES ($1, $2, $3)",
                &[&key, &sku, &count],
            )
            .await
            .unwrap();
    }
    let keys = CartKeys::new(Some(SECRET)).unwrap();
    let server = atelier::http::start(settings(keys.clone()), db.config.clone())
        .await
        .unwrap();
    let a = server.addr;
    let old = as_caller(a, "old-caller", "GET", "").await;
    assert_eq!(
        old.body,
        format!(r#"[{{"sku_id":{sku},"count":"3"}}]"#),
        "both of the caller's carts, added up"
    );
    let body = format!(r#"{{"sku_id":{sku}}}"#);
    assert_eq!(as_caller(a, "old-caller", "POST", &body).await.status, 201);
    assert_eq!(as_caller(a, "new-caller", "POST", &body).await.status, 201);
    let mut stored = stored_keys(&db, "cart_items").await;
    stored.sort();
    let mut expected = vec![
        keys.key("old-caller"),
        keys.key("new-caller"),
        keys.key("older-build-caller"),
    ];
    expected.sort();
    assert_eq!(stored, expected);
    assert!(stored.iter().all(|k| k.starts_with("hmac:")));
    assert_ne!(keys.key("new-caller"), sha256_key(&db, "new-caller").await);
    let old = as_caller(a, "old-caller", "GET", "").await;
    assert_eq!(old.body, format!(r#"[{{"sku_id":{sku},"count":"4"}}]"#));
    let older = as_caller(a, "older-build-caller", "GET", "").await;
    assert_eq!(older.body, format!(r#"[{{"sku_id":{sku},"count":"2"}}]"#));
    let logged = stored_keys(&db, "change_log").await;
    assert!(
        logged
            .iter()
            .all(|k| k.starts_with("sha256:") || k.starts_with("hmac:")),
        "written and moved, no token reached the log: {logged:?}"
    );
}

#[tokio::test]
async fn migration_4_turns_stored_tokens_into_keys_and_carts_keep_working() {
    let db = common::empty_database().await;
    let mut client = db.client().await;
    atelier::pg::migrate::migrate_to(&mut client, 3)
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO products (id, name, slogan, description, category, default_price)
                 VALUES (1, 'p', 's', 'd', 'c', 10);
             INSERT INTO styles (id, product_id, name, original_price) VALUES (1, 1, 's', 10);
             INSERT INTO skus (id, style_id, size, quantity) VALUES (7, 1, 'M', 3);
             INSERT INTO cart_items (session, sku_id, count) VALUES ('legacy-token', 7, 4);",
        )
        .await
        .unwrap();
    assert!(stored_keys(&db, "change_log")
        .await
        .contains(&"legacy-token".to_owned()));
    atelier::pg::migrate::migrate(&mut client).await.unwrap();
    let key = sha256_key(&db, "legacy-token").await;
    assert_eq!(stored_keys(&db, "cart_items").await, vec![key.clone()]);
    assert_eq!(stored_keys(&db, "change_log").await, vec![key]);
    let server = atelier::http::start(settings(CartKeys::default()), db.config.clone())
        .await
        .unwrap();
    let cart = as_caller(server.addr, "legacy-token", "GET", "").await;
    assert_eq!(cart.body, r#"[{"sku_id":7,"count":"4"}]"#);
}
