//! `--compress dense`: whole bodies packed against a dictionary the warm-up trains on the
//! first ones (kept gzip before it), lists against another, with no gzip lead page; every
//! packed body unpacked for each request and sent plain, under the plain body's tag; and
//! refreshed packed again. A test binary of its own: the dictionaries are the process's, and
//! this is the only warm-up here that trains them.

mod common;

use std::time::Duration;

use atelier::cache::{fill, Key};
use atelier::domain::ReviewOrder;
use atelier::http::respond::{entity_tag, Coding};
use atelier::pg::pool::Pool;
use atelier::render::compress::{self, Codec, DictionaryKind};
use atelier::render::{digest, Compaction, Frame, Rendered};
use common::{get, put, send_raw, Reply};

async fn request(addr: std::net::SocketAddr, method: &str, path: &str, extra: &str) -> Reply {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: t\r\n{extra}Connection: close\r\n\r\n"
    );
    send_raw(addr, raw.as_bytes()).await
}

const GZIP: &str = "Accept-Encoding: gzip\r\n";

#[tokio::test]
async fn dense_packs_whole_bodies_against_a_dictionary_too_and_sends_them_plain() {
    let dir = common::generated("dense", 0.0005, 9);
    let db = common::loaded_database(dir.path()).await;
    let server = common::server_training_dictionaries(&db, Compaction::Dense).await;
    let (a, cache) = (server.addr, &server.app.cache);
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let client = db.client().await;
    let trained = compress::dictionary(DictionaryKind::Bodies).expect("a body dictionary");
    assert_eq!(common::dictionary_gauge(a, "bodies").await, trained.len());

    // The first product was rendered before the dictionary was trained: kept gzip, and sent
    // as it is to a client that takes gzip.
    let first: i64 = client
        .query_one("SELECT min(id) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert!(matches!(
        cache.peek(&Key::Styles(first)),
        Some(Rendered::Gzip(_))
    ));
    let r = request(a, "GET", &format!("/products/{first}/styles"), GZIP).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let fresh = fill(&Key::Styles(first), &pool)
        .await
        .unwrap()
        .plain()
        .unwrap();
    assert_eq!(r.body.as_bytes(), &fresh[..]);

    // The last products long after: packed.
    let id: i64 = client
        .query_one(
            "SELECT product_id FROM reviews WHERE NOT reported GROUP BY product_id \
             HAVING count(*) > 5 ORDER BY product_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for key in [Key::Product(id), Key::Styles(id), Key::ReviewsMeta(id)] {
        assert!(
            matches!(cache.peek(&key), Some(Rendered::Packed(_))),
            "{key:?} packed: {:?}",
            cache.peek(&key)
        );
    }
    // Sent plain, whatever the client takes, under the plain body's tag; HEAD says so too.
    let path = format!("/products/{id}/styles");
    let fresh = fill(&Key::Styles(id), &pool)
        .await
        .unwrap()
        .plain()
        .unwrap();
    let r = request(a, "GET", &path, GZIP).await;
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert_eq!(r.raw_body, fresh);
    let tag = r.header("etag").unwrap().to_owned();
    let plain_tag = entity_tag(digest(&fresh), Coding::Identity);
    assert_eq!(tag.as_bytes(), plain_tag.as_bytes());
    let head = request(a, "HEAD", &path, GZIP).await;
    assert_eq!((head.status, head.header("content-encoding")), (200, None));
    assert_eq!(
        head.header("content-length"),
        Some(fresh.len().to_string().as_str())
    );
    assert!(head.raw_body.is_empty());
    let if_tag = format!("If-None-Match: {tag}\r\n");
    assert_eq!(request(a, "GET", &path, &if_tag).await.status, 304);

    // Lists keep no gzip lead page: the product page's reviews are cut from the packed list.
    let helpful = Key::Reviews {
        product_id: id,
        order: ReviewOrder::Helpful,
    };
    let Some(Rendered::List(list)) = cache.peek(&helpful) else {
        panic!("{helpful:?} is a list");
    };
    assert!(!list.has_lead_page() && list.codec() == Codec::Dictionary);
    let r = request(a, "GET", &format!("/reviews?product_id={id}"), GZIP).await;
    let Rendered::List(fresh_list) = fill(&helpful, &pool).await.unwrap() else {
        panic!("a list");
    };
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(
        r.raw_body,
        Frame::Reviews(id).page(&fresh_list, 1, 5).to_vec()
    );
    common::every_entry_is_fresh(&server, &pool).await;

    // A change refreshes them, packed again, with the new bytes.
    client
        .execute(
            "UPDATE products SET slogan = 'Packed tighter' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let product = format!("/products/{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get(a, &product).await.body.contains("Packed tighter") {
        assert!(std::time::Instant::now() < deadline, "no refresh came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::settled(&server).await;
    assert!(matches!(
        cache.peek(&Key::Product(id)),
        Some(Rendered::Packed(_))
    ));
    let review = db.first_visible_review(id).await;
    assert_eq!(
        put(a, &format!("/reviews/{review}/helpful")).await.status,
        204
    );
    common::settled(&server).await;
    assert!(matches!(
        cache.peek(&helpful),
        Some(Rendered::List(l)) if !l.has_lead_page() && l.codec() == Codec::Dictionary
    ));
    common::every_entry_is_fresh(&server, &pool).await;
}
