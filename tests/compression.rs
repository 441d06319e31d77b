//! The precomputed catalog keeps its bodies compacted: whole bodies gzip-compressed and sent
//! as they are to clients that accept gzip (decoded here by the system's `gzip`), inflated for
//! clients that do not; lists packed (against the list dictionary the warm-up trains, deflated
//! before it) and unpacked to copy a page. Every representation serves the bytes of a fresh
//! render, before and after a write refreshes them; and `--compress bodies` and `none` keep
//! lists, or everything, plain.

mod common;

use std::time::Duration;

use atelier::cache::ResponseCache;
use atelier::cache::{fill, Key};
use atelier::config::ServeSettings;
use atelier::dataset::generate::{generate, GenerateOptions};
use atelier::domain::ReviewOrder;
use atelier::pg::pool::Pool;
use atelier::render::compress::{self, Codec, DictionaryKind};
use atelier::render::shared_codes::{self, CodesKind};
use atelier::render::{Compaction, Frame, Rendered};
use common::{eventually, get, put, send_raw, Reply, TempDir};

async fn request(addr: std::net::SocketAddr, method: &str, path: &str, extra: &str) -> Reply {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: t\r\n{extra}Connection: close\r\n\r\n"
    );
    send_raw(addr, raw.as_bytes()).await
}

/// A generated data set, loaded, and its product with the most reviews (a list worth
/// packing).
async fn catalog_with_a_long_list(label: &str, scale: f64) -> (TempDir, common::TestDb, i64) {
    let dir = TempDir::new(label);
    generate(&GenerateOptions {
        scale,
        seed: 9,
        out: dir.path().into(),
        quiet: true,
    })
    .expect("generate");
    let db = common::loaded_database(dir.path()).await;
    let id = product_with_the_most(&db, "reviews").await;
    (dir, db, id)
}

/// The product with the most visible rows in `table` (reviews or questions).
async fn product_with_the_most(db: &common::TestDb, table: &str) -> i64 {
    db.client()
        .await
        .query_one(
            &format!(
                "SELECT product_id FROM {table} WHERE NOT reported GROUP BY product_id \
                 ORDER BY count(*) DESC, product_id LIMIT 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Asserts that `path` answers with page 1 of 5 of `key`'s list, as a fresh render gives it:
/// to a client that takes gzip, the lead page sent gzip-coded as it is kept; to one that does
/// not, the same bytes plain, under the matching entity tag.
async fn assert_lead_page(
    a: std::net::SocketAddr,
    cache: &ResponseCache,
    pool: &Pool,
    path: &str,
    key: &Key,
) {
    let codes = match cache.peek(key) {
        Some(Rendered::List(list)) => list.kept_lead_page().and_then(|lead| lead.codes),
        other => panic!("{key:?}: {other:?}"),
    };
    let fresh = match fill(key, pool).await.unwrap() {
        Rendered::List(list) => key.frame().unwrap().page(&list, 1, 5),
        other => panic!("{other:?}"),
    };
    let gz = request(a, "GET", path, "Accept-Encoding: gzip\r\n").await;
    assert_eq!(gz.status, 200, "{path}");
    assert_eq!(
        gz.header("content-encoding"),
        Some("gzip"),
        "{path}: the lead page, as it is kept"
    );
    assert_eq!(gz.body.as_bytes(), &fresh[..], "{path}");
    let plain = request(a, "GET", path, "").await;
    assert_eq!(plain.header("content-encoding"), None, "{path}");
    assert_eq!(plain.raw_body, fresh, "{path}");
    let tag = plain.header("etag").unwrap();
    assert_eq!(gz.header("etag").unwrap(), gzip_tag(tag, codes));
}

/// The entity tag of the gzip representation of the body whose plain one is tagged
/// `plain_tag`: its digest, mixed with the fingerprint of the shared code it is kept in (which
/// a test of this binary may have had the process train), and `-gzip`.
fn gzip_tag(plain_tag: &str, codes: Option<CodesKind>) -> String {
    let digest = u64::from_str_radix(&plain_tag[1..17], 16).unwrap();
    let digest = match codes {
        None => digest,
        Some(kind) => digest ^ shared_codes::codes(kind).unwrap().fingerprint(),
    };
    format!("\"{digest:016x}-gzip\"")
}

/// A server over `db`, compacting as far as `compaction` goes, once it is ready.
async fn ready_server(db: &common::TestDb, compaction: Compaction) -> atelier::http::Running {
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        compaction,
        // No dictionary from these: the list test below must be this binary's only training
        // (which trains the shared codes too: bodies here may be kept in them).
        dictionary_sample_bytes: 0,
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    eventually(server.addr, "/readyz", |b| b == "ready").await;
    server
}

#[tokio::test]
async fn compacted_bodies_go_out_gzip_coded_to_clients_that_take_gzip_and_plain_to_others() {
    let (_dir, db, id) = catalog_with_a_long_list("compression", 0.0005).await;
    let server = ready_server(&db, Compaction::All).await;
    let a = server.addr;
    let client = db.client().await;
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let cache = &server.app.cache;

    // Kept compacted.
    let styles = Key::Styles(id);
    assert!(
        matches!(cache.peek(&styles), Some(Rendered::Gzip(_))),
        "styles kept gzip-compressed: {:?}",
        cache.peek(&styles)
    );
    let helpful = Key::Reviews {
        product_id: id,
        order: ReviewOrder::Helpful,
    };
    let newest = Key::Reviews {
        product_id: id,
        order: ReviewOrder::Newest,
    };
    for key in [&helpful, &newest] {
        assert!(
            matches!(cache.peek(key), Some(Rendered::List(l)) if l.is_compacted()),
            "{key:?} kept packed"
        );
    }

    let list = |key: &Key| match cache.peek(key) {
        Some(Rendered::List(l)) => l,
        other => panic!("{key:?}: {other:?}"),
    };

    let path = format!("/products/{id}/styles");
    let fresh = fill(&styles, &pool).await.unwrap().plain().unwrap();
    let plain = request(a, "GET", &path, "").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        plain.raw_body, fresh,
        "inflated for a client that takes no gzip"
    );
    let tag = plain.header("etag").unwrap().to_owned();

    let gz = request(a, "GET", &path, "Accept-Encoding: gzip, deflate, br\r\n").await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        gz.body.as_bytes(),
        &fresh[..],
        "gzip -d gives the plain body"
    );
    assert!(gz.raw_body.len() < fresh.len() / 2, "sent compressed");
    let gz_tag = gz.header("etag").unwrap().to_owned();
    let codes = match cache.peek(&styles) {
        Some(Rendered::Gzip(g)) => g.codes,
        other => panic!("{other:?}"),
    };
    assert_eq!(gz_tag, gzip_tag(&tag, codes));

    let any = request(a, "GET", &path, "Accept-Encoding: *\r\n").await;
    assert_eq!(any.header("content-encoding"), Some("gzip"), "* takes gzip");
    for refused in ["gzip;q=0", "identity", "br", "*, gzip;q=0"] {
        let r = request(a, "GET", &path, &format!("Accept-Encoding: {refused}\r\n")).await;
        assert_eq!(r.header("content-encoding"), None, "{refused}");
        assert_eq!(r.raw_body, fresh, "{refused}");
    }

    // HEAD says what GET would send; each representation's tag validates only itself.
    let head = request(a, "HEAD", &path, "Accept-Encoding: gzip\r\n").await;
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(
        head.header("content-length"),
        Some(gz.raw_body.len().to_string().as_str())
    );
    let if_gz = format!("If-None-Match: {gz_tag}\r\n");
    let not_modified = request(
        a,
        "GET",
        &path,
        &format!("Accept-Encoding: gzip\r\n{if_gz}"),
    )
    .await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("vary"), Some("Accept-Encoding"));
    assert_eq!(request(a, "GET", &path, &if_gz).await.status, 200);

    // Pages of a packed list, in both orders, are those of a fresh render.
    let fresh_page = |sort: &'static str| {
        let pool = &pool;
        async move {
            let order = if sort == "newest" {
                ReviewOrder::Newest
            } else {
                ReviewOrder::Helpful
            };
            let key = Key::Reviews {
                product_id: id,
                order,
            };
            match fill(&key, pool).await.unwrap() {
                Rendered::List(list) => atelier::render::Frame::Reviews(id)
                    .page(&list, 2, 2)
                    .to_vec(),
                other => panic!("{other:?}"),
            }
        }
    };
    for sort in ["newest", "helpful"] {
        let page = format!("/reviews?product_id={id}&page=2&count=2&sort={sort}");
        let r = request(a, "GET", &page, "Accept-Encoding: gzip\r\n").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), None, "a page is sent plain");
        assert_eq!(r.raw_body, fresh_page(sort).await, "{sort}");
    }

    // The page a product page asks for is kept gzip-ready; other counts and orders are cut
    // from the list.
    let lead = format!("/reviews?product_id={id}&count=5&sort=relevant");
    assert_lead_page(a, cache, &pool, &lead, &helpful).await;
    assert_lead_page(
        a,
        cache,
        &pool,
        &format!("/reviews?product_id={id}"),
        &helpful,
    )
    .await;
    assert!(list(&helpful).has_lead_page() && list(&newest).lead_page(1, 5).is_none());
    for other in ["count=4", "count=5&sort=newest", "count=5&page=2"] {
        let path = format!("/reviews?product_id={id}&{other}");
        let r = request(a, "GET", &path, "Accept-Encoding: gzip\r\n").await;
        assert_eq!(
            (r.status, r.header("content-encoding")),
            (200, None),
            "{path}"
        );
    }
    let asked = product_with_the_most(&db, "questions").await;
    let questions = format!("/qa/questions?product_id={asked}&count=5");
    assert_lead_page(a, cache, &pool, &questions, &Key::Questions(asked)).await;

    // A write refreshes the catalog's entries, compacted again, with the new bytes.
    let review = db.first_visible_review(id).await;
    assert_eq!(
        put(a, &format!("/reviews/{review}/helpful")).await.status,
        204
    );
    let r = get(
        a,
        &format!("/reviews?product_id={id}&count=100&sort=newest"),
    )
    .await;
    let fresh_list = match fill(&newest, &pool).await.unwrap() {
        Rendered::List(list) => atelier::render::Frame::Reviews(id).page(&list, 1, 100),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        r.raw_body,
        fresh_list.to_vec(),
        "the writer reads its write"
    );
    assert_lead_page(a, cache, &pool, &lead, &helpful).await;
    assert!(
        list(&newest).is_compacted(),
        "refreshed into the catalog, packed"
    );
    assert!(
        list(&newest).shares_buffer_with(&list(&helpful)),
        "both orders rendered from one read, sharing one buffer"
    );
    // So is a change made elsewhere, which reaches the cache through the feed.
    client
        .execute(
            "UPDATE reviews SET helpfulness = helpfulness + 5 WHERE id = $1",
            &[&review],
        )
        .await
        .unwrap();
    let fresh_list = match fill(&helpful, &pool).await.unwrap() {
        Rendered::List(l) => atelier::render::Frame::Reviews(id)
            .page(&l, 1, 100)
            .to_vec(),
        other => panic!("{other:?}"),
    };
    let path = format!("/reviews?product_id={id}&count=100");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(a, &path).await.raw_body != fresh_list || cache.refreshes_pending() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed's refresh never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(list(&helpful).is_compacted());
    assert!(
        list(&newest).shares_buffer_with(&list(&helpful)),
        "the feed's refresh renders both orders from one read too"
    );
    assert_lead_page(a, cache, &pool, &lead, &helpful).await;
    assert!(cache.stats().catalog_entries > 0);
}

#[tokio::test]
async fn compaction_goes_as_far_as_configured() {
    let (_dir, db, id) = catalog_with_a_long_list("compaction-levels", 0.0002).await;
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    for compaction in [Compaction::Bodies, Compaction::None] {
        let server = ready_server(&db, compaction).await;
        let a = server.addr;
        let cache = &server.app.cache;
        let styles = cache.peek(&Key::Styles(id));
        let reviews = cache.peek(&Key::Reviews {
            product_id: id,
            order: ReviewOrder::Newest,
        });
        assert!(matches!(reviews, Some(Rendered::List(ref l)) if !l.is_compacted()));
        let path = format!("/products/{id}/styles");
        let r = request(a, "GET", &path, "Accept-Encoding: gzip\r\n").await;
        let fresh = fill(&Key::Styles(id), &pool)
            .await
            .unwrap()
            .plain()
            .unwrap();
        assert_eq!(r.body.as_bytes(), &fresh[..], "{compaction:?}");
        match compaction {
            Compaction::Bodies => {
                assert!(matches!(styles, Some(Rendered::Gzip(_))));
                assert_eq!(r.header("content-encoding"), Some("gzip"));
            }
            _ => {
                assert!(matches!(styles, Some(Rendered::Json(_))));
                assert_eq!(r.header("content-encoding"), None);
            }
        }
        let page = format!("/reviews?product_id={id}&count=3&sort=newest");
        assert_eq!(request(a, "GET", &page, "").await.status, 200);
        // A write's refresh keeps to the same policy.
        let review = db.first_visible_review(id).await;
        assert_eq!(
            put(a, &format!("/reviews/{review}/helpful")).await.status,
            204
        );
        for order in [ReviewOrder::Helpful, ReviewOrder::Newest] {
            let key = Key::Reviews {
                product_id: id,
                order,
            };
            assert!(
                matches!(cache.peek(&key), Some(Rendered::List(ref l)) if !l.is_compacted()),
                "{compaction:?}: {key:?} refreshed plain"
            );
        }
    }
}

/// The list dictionary a warm-up trains on `sample_bytes`, rebuilt from fresh renders: the
/// items of every list of the first products in id order (each product's lists in the order
/// the warm-up renders them, its questions' answers in the order the scan reads its
/// questions), up to the product whose lists pass that size.
async fn list_dictionary_of_the_first_products(
    db: &common::TestDb,
    pool: &Pool,
    sample_bytes: usize,
) -> Vec<u8> {
    let (mut samples, mut sampled) = (Vec::new(), 0);
    for id in db.ids("SELECT id FROM products ORDER BY id").await {
        let questions = db
            .ids(&format!(
                "SELECT id FROM questions WHERE product_id = {id}
                  ORDER BY helpfulness DESC, date DESC, id DESC"
            ))
            .await;
        // The newest order is an index into the helpful order's items, not items of its own.
        let helpful = Key::Reviews {
            product_id: id,
            order: ReviewOrder::Helpful,
        };
        let keys = [helpful, Key::Questions(id)];
        for key in keys
            .into_iter()
            .chain(questions.into_iter().map(Key::Answers))
        {
            let Rendered::List(list) = fill(&key, pool).await.unwrap() else {
                continue;
            };
            if let Some(items) = list.own_items().filter(|items| !items.is_empty()) {
                sampled += items.len();
                samples.push(items.into_owned());
            }
        }
        if sampled >= sample_bytes {
            break;
        }
    }
    let max_bytes = compress::DICTIONARY_MAX_BYTES.min(sampled / 4);
    compress::train_dictionary(&samples, max_bytes).expect("enough samples to train on")
}

#[tokio::test]
async fn lists_are_packed_against_a_dictionary_trained_on_the_first_ones() {
    let (_dir, db, _) = catalog_with_a_long_list("dictionary", 0.0005).await;
    let server = common::server_training_dictionaries(&db, Compaction::All).await;
    let (a, cache) = (server.addr, &server.app.cache);
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let dictionary =
        compress::dictionary(DictionaryKind::Lists).expect("the warm-up trained a dictionary");
    assert_eq!(common::dictionary_gauge(a, "lists").await, dictionary.len());
    // However many threads render, it is trained on the first products in id order.
    assert!(
        dictionary == list_dictionary_of_the_first_products(&db, &pool, 64 << 10).await,
        "the list dictionary is not the one the first products' lists train"
    );

    // A question's answers: most of the catalog's lists, and the ones deflate does least for.
    let questions = db.ids("SELECT id FROM questions ORDER BY id").await;
    let (mut packed, mut packed_bytes, mut deflated_bytes) = (0, 0, 0);
    let (mut a_packed_question, mut deflated_before) = (None, 0);
    for &q in &questions {
        let key = Key::Answers(q);
        let Some(Rendered::List(list)) = cache.peek(&key) else {
            continue;
        };
        match list.codec() {
            // Only the first lists, rendered before the dictionary was trained (the only
            // warm-up in this test binary that trains one).
            Codec::Deflate if a_packed_question.is_none() => deflated_before += 1,
            Codec::Deflate => panic!("{key:?} deflated after the dictionary was trained"),
            Codec::Dictionary => {}
            Codec::Plain => continue,
        }
        if list.codec() != Codec::Dictionary {
            continue;
        }
        packed += 1;
        a_packed_question.get_or_insert(q);
        let Rendered::List(fresh) = fill(&key, &pool).await.unwrap() else {
            panic!("{key:?} is a list");
        };
        let page = |l| Frame::Answers(q).page(l, 1, 1_000);
        assert_eq!(page(&list), page(&fresh), "{key:?}");
        let items = fresh.own_items().unwrap();
        packed_bytes += list.weight();
        deflated_bytes +=
            4 * fresh.len() + compress::deflate(&items).map_or(items.len(), |d| d.len());
    }
    assert!(deflated_before > 0, "the first lists were deflated");
    assert!(
        packed * 2 > questions.len(),
        "most answers lists packed against the dictionary: {packed} of {}",
        questions.len()
    );
    assert!(
        packed_bytes * 4 < deflated_bytes * 3,
        "a quarter smaller at least: {packed_bytes} bytes packed, {deflated_bytes} deflated"
    );

    // Every entry is what a fresh render gives; a write's refresh packs against it too.
    common::every_entry_is_fresh(&server, &pool).await;
    let q = a_packed_question.expect("a packed list");
    let r = common::post_json(
        a,
        &format!("/qa/questions/{q}/answers"),
        r#"{"body":"Runs small; take one size up.","name":"fitter","email":"f@example.com","photos":[]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let page = get(a, &format!("/qa/questions/{q}/answers?count=100")).await;
    assert!(page.body.contains("take one size up"), "{}", page.body);
    common::settled(&server).await;
    assert!(
        matches!(cache.peek(&Key::Answers(q)), Some(Rendered::List(l)) if l.codec() == Codec::Dictionary),
        "refreshed, packed against the dictionary"
    );
    common::every_entry_is_fresh(&server, &pool).await;
}
