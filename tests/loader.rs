//! The bulk loader against a real PostgreSQL: the hand-made sample, a generated data set, and
//! the errors a user can run into.

mod common;

use atelier::cache::Key;
use atelier::dataset::generate::{generate, GenerateOptions};
use atelier::dataset::Table;
use atelier::domain::ReviewOrder;
use atelier::pg::load::{
    convert::Outcome, finish_interrupted_load, load, LoadError, LoadOptions, LoadReport,
};
use common::{count, TempDir};
use tokio_postgres::Config;

fn options(dir: &std::path::Path) -> LoadOptions {
    LoadOptions {
        dir: dir.to_path_buf(),
        replace: false,
        jobs: 2,
        quiet: true,
    }
}

async fn load_dir(config: &Config, dir: &std::path::Path) -> LoadReport {
    load(config, &options(dir)).await.expect("load")
}

/// Appends `rows` to `file` in `dir`, a copy of the sample, after a line ending if its last line
/// lacks one. Bytes, not text: a file of the sample is not all UTF-8 (a quirk of its own).
fn append_to_sample_copy(dir: &TempDir, file: &str, rows: &str) {
    let path = dir.path().join(file);
    let mut text = std::fs::read(&path).unwrap();
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(rows.as_bytes());
    std::fs::write(&path, text).unwrap();
}

/// Asks the server at `a` for each path and requires a 200 with exactly its body.
async fn answers_200_with(a: std::net::SocketAddr, expected: &[(impl AsRef<str>, String)]) {
    for (path, body) in expected {
        let path = path.as_ref();
        let reply = common::get(a, path).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, body.as_str()),
            "{path}"
        );
    }
}

/// A server over `db`, once it is ready (no sweep).
async fn ready_server(db: &common::TestDb) -> atelier::http::Running {
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .expect("start server");
    common::ready(server.addr).await;
    server
}

#[tokio::test]
async fn loads_the_sample_with_every_quirk_handled() {
    let db = common::migrated_database().await;
    let report = load_dir(&db.config, &common::sample_dir()).await;
    let client = db.client().await;

    // (file, lines, loaded, repaired, skipped, dropped)
    let expected = [
        ("product.csv", 6, 6, 0, 0, 0),
        ("features.csv", 10, 10, 0, 0, 0),
        ("styles.csv", 9, 9, 0, 0, 0),
        ("photos.csv", 9, 8, 1, 0, 1), // id 4 lost its closing quote; id 8 has no style 99
        ("skus.csv", 16, 15, 0, 1, 0), // quantity "plenty"; a blank last line is no row
        ("related.csv", 13, 10, 0, 1, 2), // a line of spaces; related 0 and related 77
        ("reviews.csv", 9, 6, 0, 3, 0), // rating 9, a duplicate id, too few fields
        ("reviews_photos.csv", 4, 3, 0, 0, 1), // review 404
        ("characteristics.csv", 10, 10, 0, 0, 0), // a byte-order mark, CRLF line ends
        ("characteristic_reviews.csv", 16, 15, 0, 0, 1), // review 404
        ("questions.csv", 6, 6, 0, 0, 0),
        ("answers.csv", 7, 6, 1, 0, 1), // a byte that is not UTF-8; question 77
        ("answers_photos.csv", 4, 4, 0, 0, 0),
    ];
    for (file, lines, loaded, repaired, skipped, dropped) in expected {
        let f = report
            .file(file)
            .unwrap_or_else(|| panic!("no report for {file}"));
        assert_eq!(
            (f.lines, f.loaded, f.repaired, f.skipped, f.dropped),
            (lines, loaded, repaired, skipped, dropped),
            "{file}"
        );
        let table = Table::from_file_name(file).unwrap().sql_name();
        assert_eq!(
            count(&client, table).await,
            loaded as i64,
            "rows in {table}"
        );
    }
    let photos = report.file("photos.csv").unwrap();
    let lines: Vec<u64> = photos.notes.iter().map(|n| n.line).collect();
    assert_eq!(
        lines,
        [5, 9],
        "photos.csv notes name the file's line numbers"
    );

    // The repaired row and the quirks' values.
    let thumb: String = client
        .query_one("SELECT thumbnail_url FROM photos WHERE id = 4", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        thumb.ends_with("w=300&q=80") && !thumb.contains('"'),
        "{thumb}"
    );
    let row = client
        .query_one(
            "SELECT sale_price IS NULL, default_style FROM styles WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    let no_sale: bool = client
        .query_one("SELECT sale_price IS NULL FROM styles WHERE id = 8", &[])
        .await
        .unwrap()
        .get(0);
    assert!(no_sale, "a sale price of 0 is no sale");
    let quoted_null: bool = client
        .query_one("SELECT response IS NULL FROM reviews WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        quoted_null,
        "a quoted \"null\" in a column that may be NULL is NULL"
    );
    let clean: i64 = client
        .query_one(
            "SELECT count(*) FROM characteristics WHERE name IN ('Fit', 'Length', 'Comfort', 'Quality', 'Size', 'Width')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        clean, 10,
        "no byte-order mark or carriage return in the values"
    );
    let body: String = client
        .query_one("SELECT body FROM answers WHERE id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        body, "Its the best! Seriously magic fabric \u{fffd}",
        "bytes that are not UTF-8 are replaced"
    );
    let row = client
        .query_one(
            "SELECT (SELECT sale_price IS NULL FROM styles WHERE id = 2), recommend, reported FROM reviews WHERE id = 6",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "a quoted \"null\" sale price is no sale"
    );
    assert!(
        row.get::<_, bool>(1) && !row.get::<_, bool>(2),
        "t and f are booleans"
    );
    let kept: String = client
        .query_one("SELECT summary FROM reviews WHERE id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept, "I am liking these glasses",
        "the first of two rows with one id is kept"
    );
    let reviews = report.file("reviews.csv").unwrap();
    let lines: Vec<u64> = reviews.notes.iter().map(|n| n.line).collect();
    assert_eq!(
        lines,
        [8, 9, 10],
        "each skipped review is named by its line"
    );
    let value: Option<String> = client
        .query_one("SELECT value FROM features WHERE id = 4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(value, None, "the null token is SQL NULL");
    let stitching: String = client
        .query_one("SELECT value FROM features WHERE id = 10", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stitching, "\"Double Stitch\"");
    let row = client
        .query_one(
            "SELECT to_char(date AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), reported, response IS NULL
               FROM reviews WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "2020-07-30T03:41:21.467Z");
    assert!(!row.get::<_, bool>(1) && row.get::<_, bool>(2));
    let row = client
        .query_one(
            "SELECT reported, answerer_email FROM answers WHERE id = 6",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<String>>(1), None);
    let reported: bool = client
        .query_one("SELECT reported FROM questions WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reported, "questions spell true as 1");
    let duplicates = count(
        &client,
        "related WHERE product_id = 2 AND related_product_id = 3",
    )
    .await;
    assert_eq!(duplicates, 2, "duplicate pairs are rows of their own");

    // Every index and constraint is back, the foreign keys validated.
    let fks = count(
        &client,
        "pg_constraint WHERE contype = 'f' AND convalidated",
    )
    .await;
    assert_eq!(fks, 15);
    assert_eq!(count(&client, "loader_deferred_ddl").await, 0);
    assert_eq!(
        count(
            &client,
            "pg_indexes WHERE schemaname = 'public' AND indexname = 'reviews_helpful'"
        )
        .await,
        1
    );

    // The next id handed out is past every loaded one.
    let new_id: i64 = client
        .query_one(
            "INSERT INTO photos (style_id, url, thumbnail_url) VALUES (1, 'u', 't') RETURNING id",
            &[],
        )
        .await
        .expect("insert after load")
        .get(0);
    assert_eq!(new_id, 10);
    for table in Table::ALL {
        let t = table.sql_name();
        let row = client
            .query_one(
                &format!("SELECT nextval(pg_get_serial_sequence('{t}', 'id')), (SELECT max(id) FROM {t})"),
                &[],
            )
            .await
            .unwrap();
        let (next, max): (i64, i64) = (row.get(0), row.get(1));
        assert!(next > max, "{t}: next id {next} is not past {max}");
    }
}

#[tokio::test]
async fn a_generated_data_set_round_trips_with_the_generators_counts() {
    let dir = TempDir::new("roundtrip");
    let manifest = generate(&GenerateOptions {
        scale: 0.002,
        seed: 3,
        out: dir.path().into(),
        quiet: true,
    })
    .expect("generate");
    let db = common::migrated_database().await;
    let report = load_dir(&db.config, dir.path()).await;
    let client = db.client().await;
    for table in Table::ALL {
        let counts = &manifest.files[&table];
        let f = report.file(table.file_name()).unwrap();
        assert_eq!(f.lines, counts.rows, "{table:?} lines");
        assert_eq!(f.loaded, counts.rows - counts.dangling, "{table:?} loaded");
        assert_eq!(f.dropped, counts.dangling, "{table:?} dropped");
        assert_eq!(
            f.repaired,
            counts.broken_lines.len() as u64,
            "{table:?} repaired"
        );
        assert_eq!(f.skipped, 0, "{table:?} skipped");
        assert_eq!(
            count(&client, table.sql_name()).await as u64,
            f.loaded,
            "{table:?} rows"
        );
    }
}

#[tokio::test]
async fn refuses_a_non_empty_database_unless_told_to_replace() {
    let db = common::migrated_database().await;
    load_dir(&db.config, &common::sample_dir()).await;
    let err = load(&db.config, &options(&common::sample_dir()))
        .await
        .expect_err("must refuse");
    assert!(matches!(err, LoadError::NotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("pass --replace"), "{err}");

    let client = db.client().await;
    client
        .batch_execute("INSERT INTO cart_items (session, sku_id, count) VALUES ('t', 1, 2)")
        .await
        .unwrap();
    let mut opts = options(&common::sample_dir());
    opts.replace = true;
    let report = load(&db.config, &opts).await.expect("replace");
    assert_eq!(report.file("product.csv").unwrap().loaded, 6);
    assert_eq!(count(&client, "products").await, 6);
    assert_eq!(
        count(&client, "cart_items").await,
        0,
        "a reload empties carts of old skus"
    );
}

#[tokio::test]
async fn a_missing_file_or_wrong_header_is_named() {
    let db = common::migrated_database().await;
    let dir = TempDir::new("broken-set");
    common::copy_dir(&common::sample_dir(), dir.path());

    std::fs::remove_file(dir.path().join("questions.csv")).unwrap();
    let err = load(&db.config, &options(dir.path()))
        .await
        .expect_err("missing file");
    assert!(matches!(err, LoadError::MissingFile { .. }));
    assert!(
        err.to_string().contains("questions.csv does not exist"),
        "{err}"
    );

    common::copy_dir(&common::sample_dir(), dir.path());
    std::fs::write(dir.path().join("styles.csv"), "id,product_id,name\n1,1,x\n").unwrap();
    let err = load(&db.config, &options(dir.path()))
        .await
        .expect_err("bad header");
    let text = err.to_string();
    assert!(
        text.contains("styles.csv: the header is `id,product_id,name`"),
        "{text}"
    );
    assert!(
        text.contains("expected `id,productId,name,sale_price,original_price,default_style`"),
        "{text}"
    );

    // Nothing was touched by either failure.
    let client = db.client().await;
    assert_eq!(count(&client, "products").await, 0);
    assert_eq!(count(&client, "loader_deferred_ddl").await, 0);
}

#[tokio::test]
async fn an_unreachable_database_is_a_one_line_error() {
    let mut config = Config::new();
    config
        .host_path("/nonexistent-atelier-socket-dir")
        .port(5999)
        .user("postgres")
        .dbname("x");
    let err = load(&config, &options(&common::sample_dir()))
        .await
        .expect_err("no server");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot connect to PostgreSQL at /nonexistent-atelier-socket-dir:5999/x"),
        "{text}"
    );
    assert!(text.contains("is the server running"), "{text}");
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn an_interrupted_load_is_finished_by_the_next_run() {
    let db = common::migrated_database().await;
    load_dir(&db.config, &common::sample_dir()).await;
    let client = db.client().await;
    // What a load that died after dropping its indexes leaves behind.
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO loader_deferred_ddl (seq, phase, ddl)
                 SELECT 1, 2, pg_get_indexdef('reviews_helpful'::regclass);
             DROP INDEX reviews_helpful;
             COMMIT;",
        )
        .await
        .unwrap();
    finish_interrupted_load(&db.config, true)
        .await
        .expect("finish");
    assert_eq!(
        count(&client, "pg_indexes WHERE indexname = 'reviews_helpful'").await,
        1
    );
    assert_eq!(count(&client, "loader_deferred_ddl").await, 0);
}

/// A date PostgreSQL cannot take as written (year 0, year 10000) skips its row with a note;
/// the load goes on, and the first and last dates it can take load.
#[tokio::test]
async fn a_date_outside_years_1_to_9999_skips_its_row_not_the_load() {
    let dir = TempDir::new("loader-dates");
    common::copy_dir(&common::sample_dir(), dir.path());
    let questions = dir.path().join("questions.csv");
    let mut text = std::fs::read_to_string(&questions).unwrap();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    for (id, date) in [
        (101, -62_135_596_800_001_i64), // 0000-12-31T23:59:59.999Z
        (102, -62_135_596_800_000),     // 0001-01-01T00:00:00.000Z
        (103, 253_402_300_799_999),     // 9999-12-31T23:59:59.999Z
        (104, 253_402_300_800_000),     // 10000-01-01T00:00:00.000Z
    ] {
        text.push_str(&format!("{id},1,\"When?\",{date},\"a\",\"a@b.co\",0,0\n"));
    }
    std::fs::write(&questions, text).unwrap();
    let db = common::migrated_database().await;
    let report = load_dir(&db.config, dir.path()).await;
    let f = report.file("questions.csv").unwrap();
    assert_eq!((f.loaded, f.skipped), (8, 2));
    assert_eq!(f.notes.len(), 2);
    for note in &f.notes {
        assert!(
            matches!(&note.outcome, Outcome::Skipped(why) if why.contains("outside years 1 to 9999")),
            "{note:?}"
        );
    }
    let client = db.client().await;
    let loaded: Vec<String> = client
        .query(
            "SELECT to_char(date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')
               FROM questions WHERE id > 100 ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        loaded,
        ["0001-01-01 00:00:00.000", "9999-12-31 23:59:59.999"]
    );
}

/// The format's `null` is a missing value in every column, also where the data set always
/// gives one: such a row loads with the field NULL instead of being skipped (its review still
/// counts in the meta), every body shows the field as JSON null, the warm-up renders it as a
/// fill does, and a vote's refresh, which cuts held items at their keys, cuts around it.
#[tokio::test]
async fn a_null_in_any_column_loads_as_null_and_is_shown_as_null() {
    let dir = TempDir::new("loader-nulls");
    let append = |file: &str, rows: &str| append_to_sample_copy(&dir, file, rows);
    common::copy_dir(&common::sample_dir(), dir.path());
    append("product.csv", "901,null,null,null,\"null\",null\n");
    append("features.csv", "9001,901,null,null\n");
    append("styles.csv", "9001,901,null,null,null,1\n");
    append("photos.csv", "9001,9001,null,null\n");
    append("skus.csv", "9001,9001,null,3\n");
    append("related.csv", "9001,901,1\n");
    append(
        "reviews.csv",
        "9001,901,4,1600000000000,null,null,true,false,null,null,null,2\n\
         9002,901,5,1600000000001,\"Fine\",\"Fine.\",false,false,\"b\",\"b@x.co\",null,1\n",
    );
    append("reviews_photos.csv", "9001,9001,null\n");
    append("characteristics.csv", "9001,901,null\n");
    append("characteristic_reviews.csv", "9001,9001,9001,3\n");
    append(
        "questions.csv",
        "9001,901,null,1600000000000,null,null,0,1\n",
    );
    append(
        "answers.csv",
        "9001,9001,null,1600000000000,null,null,0,1\n",
    );
    append("answers_photos.csv", "9001,9001,null\n");
    let db = common::loaded_database(dir.path()).await;
    let client = db.client().await;
    for table in Table::ALL {
        let id: i64 = if table == Table::Products { 901 } else { 9001 };
        let sql = format!("SELECT count(*) FROM {} WHERE id = $1", table.sql_name());
        let n: i64 = client.query_one(&sql, &[&id]).await.unwrap().get(0);
        assert_eq!(n, 1, "{table:?}: the row with nulls was loaded");
    }

    let server = ready_server(&db).await;
    let a = server.addr;
    const DATE: &str = "2020-09-13T12:26:40.000Z";
    let review = |helpfulness: u32| {
        format!(
            r#"{{"review_id":9001,"rating":4,"summary":null,"recommend":true,"response":null,"body":null,"date":"{DATE}","reviewer_name":null,"helpfulness":{helpfulness},"photos":[{{"id":9001,"url":null}}]}}"#
        )
    };
    let other = r#"{"review_id":9002,"rating":5,"summary":"Fine","recommend":false,"response":null,"body":"Fine.","date":"2020-09-13T12:26:40.001Z","reviewer_name":"b","helpfulness":1,"photos":[]}"#;
    let product = r#"{"id":901,"name":null,"slogan":null,"description":null,"category":null,"default_price":null"#;
    let expected = [
        (
            "/products/901".to_string(),
            format!(r#"{product},"features":[{{"feature":null,"value":null}}]}}"#),
        ),
        (
            "/products/901/styles".into(),
            r#"{"product_id":"901","results":[{"style_id":9001,"name":null,"original_price":null,"sale_price":null,"default?":true,"photos":[{"thumbnail_url":null,"url":null}],"skus":{"9001":{"quantity":3,"size":null}}}]}"#.into(),
        ),
        (
            "/reviews?product_id=901".into(),
            format!(r#"{{"product":"901","page":0,"count":5,"results":[{},{other}]}}"#, review(2)),
        ),
        (
            "/reviews?product_id=901&sort=newest".into(),
            format!(r#"{{"product":"901","page":0,"count":5,"results":[{other},{}]}}"#, review(2)),
        ),
        (
            "/reviews/meta?product_id=901".into(),
            r#"{"product_id":"901","ratings":{"4":"1","5":"1"},"recommended":{"false":"1","true":"1"},"characteristics":{"null":{"id":9001,"value":"3.0000000000000000"}}}"#.into(),
        ),
        (
            "/qa/questions?product_id=901".into(),
            format!(r#"{{"product_id":"901","results":[{{"question_id":9001,"question_body":null,"question_date":"{DATE}","asker_name":null,"question_helpfulness":1,"reported":false,"answers":{{"9001":{{"id":9001,"body":null,"date":"{DATE}","answerer_name":null,"helpfulness":1,"photos":[null]}}}}}}]}}"#),
        ),
        (
            "/qa/questions/9001/answers".into(),
            format!(r#"{{"question":"9001","page":1,"count":5,"results":[{{"answer_id":9001,"body":null,"date":"{DATE}","answerer_name":null,"helpfulness":1,"photos":[{{"id":9001,"url":null}}]}}]}}"#),
        ),
    ];
    answers_200_with(a, &expected).await;
    let list = common::get(a, "/products?page=1&count=1000").await;
    assert!(list.body.contains(&format!("{product}}}")), "{}", list.body);
    let pool =
        atelier::pg::pool::Pool::new(db.config.clone(), 2, std::time::Duration::from_secs(5));
    let checked = common::every_entry_is_fresh(&server, &pool).await;
    for key in [
        Key::Product(901),
        Key::Styles(901),
        Key::Reviews {
            product_id: 901,
            order: ReviewOrder::Helpful,
        },
        Key::Reviews {
            product_id: 901,
            order: ReviewOrder::Newest,
        },
        Key::ReviewsMeta(901),
        Key::Questions(901),
        Key::Answers(9001),
    ] {
        assert!(
            checked.contains(&key),
            "{key:?} was precomputed and checked"
        );
    }

    // Votes re-render from the items held, cut at their keys around the nulls.
    let before = server.app.cache.stats();
    for _ in 0..2 {
        assert_eq!(common::put(a, "/reviews/9001/helpful").await.status, 204);
    }
    assert_eq!(common::put(a, "/qa/answers/9001/helpful").await.status, 204);
    common::settled(&server).await;
    let reply = common::get(a, "/reviews?product_id=901&sort=helpful").await;
    assert_eq!(
        reply.body,
        format!(
            r#"{{"product":"901","page":0,"count":5,"results":[{},{other}]}}"#,
            review(4)
        )
    );
    let reply = common::get(a, "/qa/questions?product_id=901").await;
    assert!(
        reply
            .body
            .contains(r#""answerer_name":null,"helpfulness":2,"photos":[null]"#),
        "{}",
        reply.body
    );
    let after = server.app.cache.stats();
    assert!(
        after.revoted > before.revoted,
        "the votes revoted the held items"
    );
    assert!(
        after.reanswered > before.reanswered,
        "the answer's vote reanswered the held item"
    );
    common::every_entry_is_fresh(&server, &pool).await;
}

#[tokio::test]
async fn quoted_fields_that_hold_line_breaks_load_whole_and_are_shown_with_them() {
    let dir = TempDir::new("loader-line-breaks");
    let append = |file: &str, rows: &str| append_to_sample_copy(&dir, file, rows);
    common::copy_dir(&common::sample_dir(), dir.path());
    append(
        "product.csv",
        "902,\"Two\nlines\",\"s\",\"A \"\"quoted\"\"\nand\r\nthird line\",\"c\",10\n",
    );
    append(
        "reviews.csv",
        "9101,902,4,1600000000000,\"Sum\",\"Body one\n\nbody two\",true,false,\"n\",\"n@x.co\",\"Re\r\nply\",2\n\
         9102,902,5,1600000000001,\"Next\",\"Plain.\",false,false,\"m\",\"m@x.co\",null,1\n\
         9103,902,7,1600000000002,\"Seven\",\"Out of range.\",true,false,\"o\",\"o@x.co\",null,0\n",
    );
    append(
        "questions.csv",
        "9101,902,\"Does it\nfold?\",1600000000000,\"q\",\"q@x.co\",0,1\n",
    );
    append(
        "answers.csv",
        "9101,9101,\"Yes,\nin two\",1600000000000,\"a\",\"a@x.co\",0,1\n",
    );
    let db = common::migrated_database().await;
    let report = load_dir(&db.config, dir.path()).await;
    // (file, lines, loaded, repaired, skipped): the sample's own counts plus the rows above,
    // each spanning its lines; photos.csv's line that lost its closing quote is still repaired
    // alone, though a quoted line follows it.
    for (file, lines, loaded, repaired, skipped) in [
        ("product.csv", 6 + 4, 6 + 1, 0, 0),
        ("photos.csv", 9, 8, 1, 0),
        ("reviews.csv", 9 + 6, 6 + 2, 0, 3 + 1),
        ("questions.csv", 6 + 2, 6 + 1, 0, 0),
        ("answers.csv", 7 + 2, 6 + 1, 1, 0),
    ] {
        let f = report.file(file).unwrap();
        assert_eq!(
            (f.lines, f.loaded, f.repaired, f.skipped),
            (lines, loaded, repaired, skipped),
            "{file}"
        );
    }

    // A row after a record of four lines is named by its own line: the header and the sample's
    // nine lines, then 11 to 14, 15, and 16.
    let reviews = report.file("reviews.csv").unwrap();
    let last = reviews.notes.last().map(|n| n.line);
    assert_eq!(last, Some(16), "{:?}", reviews.notes);

    let server = ready_server(&db).await;
    let a = server.addr;
    const DATE: &str = "2020-09-13T12:26:40.000Z";
    let expected = [
        (
            "/products/902",
            r#"{"id":902,"name":"Two\nlines","slogan":"s","description":"A \"quoted\"\nand\r\nthird line","category":"c","default_price":"10.00","features":[]}"#.to_owned(),
        ),
        (
            "/reviews?product_id=902",
            format!(
                r#"{{"product":"902","page":0,"count":5,"results":[{{"review_id":9101,"rating":4,"summary":"Sum","recommend":true,"response":"Re\r\nply","body":"Body one\n\nbody two","date":"{DATE}","reviewer_name":"n","helpfulness":2,"photos":[]}},{{"review_id":9102,"rating":5,"summary":"Next","recommend":false,"response":null,"body":"Plain.","date":"2020-09-13T12:26:40.001Z","reviewer_name":"m","helpfulness":1,"photos":[]}}]}}"#
            ),
        ),
        (
            "/qa/questions?product_id=902",
            format!(
                r#"{{"product_id":"902","results":[{{"question_id":9101,"question_body":"Does it\nfold?","question_date":"{DATE}","asker_name":"q","question_helpfulness":1,"reported":false,"answers":{{"9101":{{"id":9101,"body":"Yes,\nin two","date":"{DATE}","answerer_name":"a","helpfulness":1,"photos":[]}}}}}}]}}"#
            ),
        ),
    ];
    answers_200_with(a, &expected).await;
}

/// `text` with every field of every line that splits cleanly quoted, header included, as a CSV
/// writer that quotes all fields writes it; a line that does not split is kept as it is.
fn quote_every_field(text: &[u8]) -> Vec<u8> {
    let mut fields = atelier::dataset::csv_line::Fields::new();
    let mut out = Vec::new();
    // A byte-order mark stays in front of the file, outside the first field's quotes.
    const BOM: &[u8] = "\u{feff}".as_bytes();
    let text = match text.strip_prefix(BOM) {
        Some(rest) => {
            out.extend_from_slice(BOM);
            rest
        }
        None => text,
    };
    for line in text.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.is_empty() || fields.parse(body).is_err() {
            out.extend_from_slice(line);
            continue;
        }
        for i in 0..fields.len() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            for &b in fields.bytes(i) {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
        out.push(b'\n');
    }
    out
}

#[tokio::test]
async fn a_set_written_with_every_field_quoted_loads_the_same_rows() {
    let dir = TempDir::new("loader-quoted");
    common::copy_dir(&common::sample_dir(), dir.path());
    for table in Table::ALL {
        let path = dir.path().join(table.file_name());
        let quoted = quote_every_field(&std::fs::read(&path).unwrap());
        std::fs::write(&path, quoted).unwrap();
    }
    let header = std::fs::read_to_string(dir.path().join("product.csv")).unwrap();
    assert!(header.starts_with("\"id\",\"name\","), "{header}");

    let plain = common::migrated_database().await;
    load_dir(&plain.config, &common::sample_dir()).await;
    let quoted = common::migrated_database().await;
    let report = load_dir(&quoted.config, dir.path()).await;
    assert_eq!(report.file("product.csv").unwrap().loaded, 6);
    let (plain, quoted) = (plain.client().await, quoted.client().await);
    for table in Table::ALL {
        let sql = format!(
            "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '') FROM {} t",
            table.sql_name()
        );
        let a: String = plain.query_one(&sql, &[]).await.unwrap().get(0);
        let b: String = quoted.query_one(&sql, &[]).await.unwrap().get(0);
        assert!(!a.is_empty(), "{table:?} loaded");
        assert_eq!(a, b, "{table:?}");
    }
}
