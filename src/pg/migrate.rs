//! Schema migrations: the files in `sql/`, applied in order and recorded in
//! `schema_migrations`, each in its own transaction under an advisory lock so that several
//! instances starting at once apply each migration exactly once.

use tokio_postgres::Client;

use super::DbError;

/// One migration: its version (the number its file name starts with), name and SQL.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. The SQL is compiled into the binary, so a deployed server
/// always carries the schema it expects.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../../sql/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "change_feed",
        sql: include_str!("../../sql/0002_change_feed.sql"),
    },
    Migration {
        version: 3,
        name: "change_log_xid",
        sql: include_str!("../../sql/0003_change_log_xid.sql"),
    },
    Migration {
        version: 4,
        name: "cart_keys",
        sql: include_str!("../../sql/0004_cart_keys.sql"),
    },
    Migration {
        version: 5,
        name: "serving_role",
        sql: include_str!("../../sql/0005_serving_role.sql"),
    },
    Migration {
        version: 6,
        name: "applied_requests",
        sql: include_str!("../../sql/0006_applied_requests.sql"),
    },
    Migration {
        version: 7,
        name: "schema_version",
        sql: include_str!("../../sql/0007_schema_version.sql"),
    },
    Migration {
        version: 8,
        name: "characteristic_means",
        sql: include_str!("../../sql/0008_characteristic_means.sql"),
    },
    Migration {
        version: 9,
        name: "dates_a_body_can_show",
        sql: include_str!("../../sql/0009_dates_a_body_can_show.sql"),
    },
    Migration {
        version: 10,
        name: "review_votes_logged",
        sql: include_str!("../../sql/0010_review_votes_logged.sql"),
    },
    Migration {
        version: 11,
        name: "question_answers_logged",
        sql: include_str!("../../sql/0011_question_answers_logged.sql"),
    },
    Migration {
        version: 12,
        name: "null_text_is_shown_null",
        sql: include_str!("../../sql/0012_null_text_is_shown_null.sql"),
    },
    Migration {
        version: 13,
        name: "review_votes_name_the_review",
        sql: include_str!("../../sql/0013_review_votes_name_the_review.sql"),
    },
];

/// The newest migration this build carries.
pub fn newest_known() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Key of the advisory lock that serialises migrations (and bulk loads) across processes.
pub const SCHEMA_LOCK: i64 = 0x0061_7465_6c69_6572; // "atelier"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration {version} ({name}) was applied with different SQL than this build carries: the sql/ file changed after it was applied; add a new migration instead of editing an old one")]
    Changed { version: i32, name: String },
    #[error("the database has migration {version}, which this build does not know: it was migrated by a newer atelier; run that build (or a later one) against it")]
    Unknown { version: i32 },
}

/// Applies every migration not yet applied; returns how many it applied.
pub async fn migrate(client: &mut Client) -> Result<usize, MigrateError> {
    migrate_to(client, i32::MAX).await
}

/// A transaction holding the schema lock until it ends: one migrator at a time.
async fn schema_locked(client: &mut Client) -> Result<tokio_postgres::Transaction<'_>, DbError> {
    let tx = client
        .transaction()
        .await
        .map_err(DbError::query("starting a migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(DbError::query("taking the schema lock"))?;
    Ok(tx)
}

/// Applies every migration up to `version` not yet applied (for tests of a migration on a
/// database as an older build left it); returns how many it applied.
pub async fn migrate_to(client: &mut Client, version: i32) -> Result<usize, MigrateError> {
    // Under the schema lock: two processes racing through IF NOT EXISTS can both pass the
    // check, and the loser fails on whichever catalog entry it meets first (the table, its
    // row type, its index), each with its own error code.
    let tx = schema_locked(client).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text        NOT NULL,
             checksum   bigint      NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(DbError::query("creating schema_migrations"))?;
    tx.commit()
        .await
        .map_err(DbError::query("creating schema_migrations"))?;

    let mut applied = 0;
    for migration in MIGRATIONS.iter().filter(|m| m.version <= version) {
        let tx = schema_locked(client).await?;
        let row = tx
            .query_opt(
                "SELECT checksum FROM schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await
            .map_err(DbError::query("reading schema_migrations"))?;
        let checksum = checksum(migration.sql);
        match row {
            Some(row) if row.get::<_, i64>(0) == checksum => continue,
            Some(_) => {
                return Err(MigrateError::Changed {
                    version: migration.version,
                    name: migration.name.into(),
                })
            }
            None => {}
        }
        tx.batch_execute(migration.sql)
            .await
            .map_err(DbError::query(format!(
                "applying migration {} ({})",
                migration.version, migration.name
            )))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &checksum],
        )
        .await
        .map_err(DbError::query("recording a migration"))?;
        tx.commit()
            .await
            .map_err(DbError::query("committing a migration"))?;
        applied += 1;
    }

    let newest = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .map_err(DbError::query("reading schema_migrations"))?
        .get::<_, Option<i32>>(0);
    let known = newest_known();
    if let Some(version) = newest.filter(|&v| v > known) {
        return Err(MigrateError::Unknown { version });
    }
    Ok(applied)
}

/// The newest migration the database has, if it is older than this build's newest: a server
/// of this build reads through statements that may need what the missing migrations add (an
/// index, a trigger that logs a change), so it must not serve such a database. Read through
/// `atelier_schema_version()`, which the serving role may call. A database without that
/// function (one older than migration 7, or never migrated) comes back as `Some(0)`.
pub async fn behind(client: &Client) -> Result<Option<i32>, DbError> {
    use tokio_postgres::error::SqlState;
    let known = newest_known();
    let listed = match client
        .query_one("SELECT atelier_schema_version()", &[])
        .await
    {
        Ok(row) => row.get::<_, String>(0),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => return Ok(Some(0)),
        Err(e) => return Err(DbError::query("reading the schema version")(e)),
    };
    // "1:checksum,2:checksum,..."
    let newest = listed
        .split(',')
        .filter_map(|entry| entry.split(':').next()?.parse::<i32>().ok())
        .max()
        .unwrap_or(0);
    Ok((newest < known).then_some(newest))
}

/// FNV-1a of the SQL text, to notice a migration edited after it was applied.
fn checksum(sql: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in sql.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
