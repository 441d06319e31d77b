//! The generator's files: format, determinism and quirks, checked with a strict CSV reader.

mod common;

use atelier::dataset::generate::{generate, GenerateOptions};
use atelier::dataset::manifest::Manifest;
use atelier::dataset::Table;
use common::TempDir;

fn generate_into(dir: &TempDir, scale: f64, seed: u64) -> Manifest {
    generate(&GenerateOptions {
        scale,
        seed,
        out: dir.path().to_path_buf(),
        quiet: true,
    })
    .expect("generate")
}

#[test]
fn files_parse_strictly_except_the_deliberately_broken_lines() {
    let dir = TempDir::new("gen-strict");
    let manifest = generate_into(&dir, 0.002, 7);
    assert_eq!(Manifest::read(dir.path()).expect("read manifest"), manifest);
    for table in Table::ALL {
        let counts = &manifest.files[&table];
        let text = std::fs::read_to_string(dir.path().join(table.file_name())).expect("read file");
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], table.header());
        assert_eq!(lines.len() as u64, counts.rows + 1, "{table:?}");
        for &broken in counts.broken_lines.iter().rev() {
            let line = lines.remove(broken as usize - 1);
            assert_eq!(
                line.matches('"').count() % 2,
                1,
                "line {broken} of {table:?} is not broken: {line}"
            );
        }
        let joined = lines.join("\n");
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(joined.as_bytes());
        let mut ids = std::collections::HashSet::new();
        for record in reader.records() {
            let record = record.unwrap_or_else(|e| panic!("{table:?}: {e}"));
            assert_eq!(record.len(), table.columns().len());
            let id: i64 = record[0].parse().expect("id");
            assert!(ids.insert(id), "{table:?}: duplicate id {id}");
            for (value, column) in record.iter().zip(table.columns()) {
                use atelier::dataset::Column::*;
                let ok = match column {
                    Id | Ref(_) | Int { .. } | EpochMillis => value.parse::<i64>().is_ok(),
                    Money => value.parse::<u32>().is_ok(),
                    OptMoney => value == "null" || value.parse::<u32>().is_ok(),
                    Bool => ["true", "false", "0", "1"].contains(&value),
                    Text => value != "null" && !value.is_empty(),
                    OptText => true,
                };
                assert!(ok, "{table:?}: {column:?} holds `{value}`");
            }
        }
    }
    // The fourteenth file, cart.csv, in its older shape.
    let cart = std::fs::read_to_string(dir.path().join("cart.csv")).expect("cart.csv");
    let mut lines = cart.lines();
    assert_eq!(lines.next(), Some("id,user_session,product_id,active"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len() as u64, manifest.legacy_cart_rows);
    assert!(!rows.is_empty());
    for row in rows {
        let fields: Vec<i64> = row
            .split(',')
            .map(|f| f.parse().expect("cart.csv holds integers"))
            .collect();
        assert_eq!(fields.len(), 4);
        assert!(fields[3] == 0 || fields[3] == 1);
    }

    let photos = &manifest.files[&Table::Photos];
    assert!(
        !photos.broken_lines.is_empty(),
        "no unbalanced quotes generated"
    );
    for table in [
        Table::Photos,
        Table::Related,
        Table::ReviewsPhotos,
        Table::CharacteristicReviews,
        Table::Answers,
    ] {
        assert!(
            manifest.files[&table].dangling > 0,
            "{table:?} has no dangling rows"
        );
    }
}

#[test]
fn same_seed_same_files_and_counts_follow_the_scale() {
    let a = TempDir::new("gen-a");
    let b = TempDir::new("gen-b");
    let c = TempDir::new("gen-c");
    let ma = generate_into(&a, 0.001, 11);
    let mb = generate_into(&b, 0.001, 11);
    generate_into(&c, 0.001, 12);
    assert_eq!(ma, mb);
    for table in Table::ALL {
        let read = |d: &TempDir| std::fs::read(d.path().join(table.file_name())).expect("read");
        assert_eq!(read(&a), read(&b), "{table:?} differs for the same seed");
    }
    assert_ne!(
        std::fs::read(a.path().join("reviews.csv")).unwrap(),
        std::fs::read(c.path().join("reviews.csv")).unwrap()
    );
    // Scale 0.001 of the real set: 1,000 products and about 5,775 reviews, 19,328 ratings.
    assert_eq!(ma.files[&Table::Products].rows, 1000);
    let near = |table: Table, expected: f64| {
        let rows = ma.files[&table].rows as f64;
        assert!(
            (rows - expected).abs() / expected < 0.1,
            "{table:?}: {rows} rows, expected about {expected}"
        );
    };
    near(Table::Features, 2219.0);
    near(Table::Styles, 1958.0);
    near(Table::Photos, 5656.0);
    near(Table::Skus, 11324.0);
    near(Table::Reviews, 5775.0);
    near(Table::Questions, 3519.0);
    near(Table::Answers, 6879.0);
    // Each review rates every characteristic of its product (one or four), so at this scale a
    // single product with hundreds of reviews moves the total.
    let ratings = ma.files[&Table::CharacteristicReviews].rows as f64;
    assert!(
        (ratings - 19328.0).abs() / 19328.0 < 0.35,
        "{ratings} ratings"
    );
}

#[test]
fn a_bad_scale_is_refused() {
    let dir = TempDir::new("gen-bad");
    let err = generate(&GenerateOptions {
        scale: -1.0,
        seed: 1,
        out: dir.path().into(),
        quiet: true,
    })
    .expect_err("negative scale");
    assert!(
        err.to_string()
            .contains("--scale must be a positive number"),
        "{err}"
    );
}
