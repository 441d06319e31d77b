//! Schema migrations against a real PostgreSQL.

mod common;

use atelier::pg::migrate::{migrate, migrate_to, MIGRATIONS};
use tokio_postgres::Client;

/// Everything about the schema that a migration could change, as sorted text.
async fn schema_snapshot(client: &Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
               FROM information_schema.columns WHERE table_schema = 'public'
             UNION ALL
             SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
             UNION ALL
             SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'migration ' || version || ' ' || name || ' ' || checksum FROM schema_migrations
             ORDER BY 1",
            &[],
        )
        .await
        .expect("snapshot");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let db = common::empty_database().await;
    let mut client = db.client().await;
    assert_eq!(
        migrate(&mut client).await.expect("first migrate"),
        MIGRATIONS.len()
    );
    let first = schema_snapshot(&client).await;
    assert!(first
        .iter()
        .any(|l| l.starts_with("index CREATE INDEX reviews_helpful")));
    assert_eq!(migrate(&mut client).await.expect("second migrate"), 0);
    assert_eq!(schema_snapshot(&client).await, first);
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let db = common::empty_database().await;
    let mut a = db.client().await;
    let mut b = db.client().await;
    let (ra, rb) = tokio::join!(migrate(&mut a), migrate(&mut b));
    let applied = ra.expect("migrate a") + rb.expect("migrate b");
    assert_eq!(applied, MIGRATIONS.len());
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let db = common::migrated_database().await;
    let mut client = db.client().await;
    client
        .execute(
            "UPDATE schema_migrations SET checksum = checksum + 1 WHERE version = 1",
            &[],
        )
        .await
        .expect("tamper");
    let err = migrate(&mut client).await.expect_err("must refuse");
    assert!(err.to_string().contains("add a new migration"), "{err}");
}

#[tokio::test]
async fn the_schema_enforces_the_contract() {
    let db = common::migrated_database().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO products (id, name, slogan, description, category, default_price)
             VALUES (1, 'a', 'b', 'c', 'd', 10)",
        )
        .await
        .expect("insert a product");
    let bad = [
        "INSERT INTO reviews (product_id, rating, summary, body, recommend, reviewer_name, reviewer_email) VALUES (1, 6, 's', 'b', true, 'n', 'e')",
        "INSERT INTO reviews (product_id, rating, summary, body, recommend, reviewer_name, reviewer_email) VALUES (2, 5, 's', 'b', true, 'n', 'e')",
        "INSERT INTO styles (product_id, name, sale_price, original_price) VALUES (1, 'x', 0, 10)",
        "INSERT INTO products (name, slogan, description, category, default_price) VALUES ('a', 'b', 'c', 'd', -1)",
    ];
    for sql in bad {
        assert!(client.batch_execute(sql).await.is_err(), "accepted: {sql}");
    }
}

#[tokio::test]
async fn the_database_refuses_a_date_no_body_can_show() {
    let db = common::migrated_database().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO products (id, name, slogan, description, category, default_price)
                 VALUES (1, 'p', 's', 'd', 'c', 1);
             INSERT INTO reviews (id, product_id, rating, date, summary, body, recommend,
                                  reviewer_name, reviewer_email)
                 VALUES (1, 1, 5, '0001-01-01 00:00:00+00', 's', 'b', true, 'n', 'e@x.com');
             INSERT INTO questions (id, product_id, body, date, asker_name, asker_email)
                 VALUES (1, 1, 'q', '9999-12-31 23:59:59.999999+00', 'n', 'e@x.com');
             INSERT INTO answers (id, question_id, body, date, answerer_name, answerer_email)
                 VALUES (1, 1, 'a', '1969-12-31 23:59:59.5+00', 'n', 'e@x.com');",
        )
        .await
        .expect("years 1 to 9999 are taken");
    for (table, date) in [
        ("reviews", "infinity"),
        ("reviews", "-infinity"),
        ("questions", "10000-01-01 00:00:00+00"),
        ("answers", "0001-12-31 23:59:59 BC"),
    ] {
        let refused = client
            .batch_execute(&format!("UPDATE {table} SET date = '{date}' WHERE id = 1"))
            .await
            .expect_err(date);
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{table} {date}: {refused}"
        );
    }
}

/// The tables migration 12 locks.
const MIGRATION_12_TABLES: [&str; 10] = [
    "answers",
    "answers_photos",
    "questions",
    "reviews",
    "characteristics",
    "reviews_photos",
    "features",
    "skus",
    "styles",
    "products",
];

/// Migration 12 locks ten tables (dropping NOT NULLs) and never waits while it holds one, so
/// a read that holds a parent and then wants its child (styles, then skus) cannot deadlock with
/// it, and no read of another table queues behind it. Two readers hold `answers` and `styles`,
/// and one lets go first: a plain waiting `LOCK` in any one order of the ten would then hold
/// the freed table (and those after it) while it waits for the other, in one of the two runs.
#[tokio::test]
async fn migration_12_never_holds_a_table_while_it_waits_for_another() {
    for (first, second) in [("answers", "styles"), ("styles", "answers")] {
        let db = common::empty_database().await;
        let mut client = db.client().await;
        assert_eq!(migrate_to(&mut client, 11).await.expect("to 11"), 11);
        let mut first_reader = db.client().await;
        let mut second_reader = db.client().await;
        let holding_first = first_reader.transaction().await.unwrap();
        let holding_second = second_reader.transaction().await.unwrap();
        for (tx, table) in [(&holding_first, first), (&holding_second, second)] {
            tx.batch_execute(&format!("LOCK TABLE {table} IN ACCESS SHARE MODE"))
                .await
                .unwrap();
        }
        let migrating = tokio::spawn(async move { migrate_to(&mut client, 12).await });
        let other = db.client().await;
        other
            .batch_execute("SET lock_timeout = '2s'")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        readable(&other, &["answers", "styles"]).await;
        // The reader of `styles` goes on to its child, as a join of the two would.
        let styles_reader = if first == "styles" {
            &holding_first
        } else {
            &holding_second
        };
        styles_reader
            .batch_execute("SET LOCAL lock_timeout = '2s'; SELECT count(*) FROM skus")
            .await
            .expect("skus is not held while the migration waits for styles");
        holding_first.rollback().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!migrating.is_finished(), "it waits for {second}");
        let still_held = [second];
        readable(&other, &still_held).await;
        holding_second.rollback().await.unwrap();
        let applied = tokio::time::timeout(std::time::Duration::from_secs(10), migrating)
            .await
            .expect("applied once every table is free")
            .unwrap()
            .expect("migration 12");
        assert_eq!(applied, 1);
        let nullable: String = other
            .query_one(
                "SELECT is_nullable FROM information_schema.columns
                  WHERE table_name = 'reviews' AND column_name = 'summary'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(nullable, "YES");
    }
}

/// Reads every table of migration 12's but `held`, five times each: none may wait (the
/// client's lock_timeout fails a read that does).
async fn readable(client: &Client, held: &[&str]) {
    for table in MIGRATION_12_TABLES.iter().filter(|t| !held.contains(t)) {
        for _ in 0..5 {
            client
                .query(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap_or_else(|e| panic!("{table} is held while the migration waits: {e}"));
        }
    }
}
