//! What a catalog snapshot is checked against before it is trusted: which database this is,
//! how far its change log reaches, and how large its catalog is now.

use tokio_postgres::{Client, Error};

/// The database as a restore sees it, in one statement (one snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseState {
    /// The cluster's system identifier and timeline, the database's oid, the migrations it
    /// has and a digest of its tables' columns: a snapshot written against another database
    /// (a cluster made anew, one recovered to a point in time or promoted), before a migration,
    /// or before a table was changed by hand, names another.
    pub identity: String,
    /// The highest sequence number the log has had (its pruned mark if it is empty).
    pub log_high: i64,
    /// The highest sequence number pruning has deleted.
    pub pruned_through: i64,
    /// The current snapshot's `xmax`: no transaction id at or past it has been used.
    pub next_xid: i64,
    pub products: i64,
    pub max_product_id: i64,
    pub questions: i64,
    pub max_question_id: i64,
}

/// The identity [`DatabaseState`] names, alone (for writing a snapshot).
pub async fn identity(client: &Client) -> Result<String, Error> {
    let row = client.query_one(IDENTITY, &[]).await?;
    row.try_get(0)
}

const IDENTITY: &str = "
    SELECT (SELECT system_identifier::text FROM pg_control_system()) || '/' ||
           (SELECT timeline_id::text FROM pg_control_checkpoint()) || '/' ||
           (SELECT oid::text FROM pg_database WHERE datname = current_database()) || '/' ||
           atelier_schema_version() || '/' ||
           (SELECT md5(coalesce(string_agg(table_name || '.' || column_name || ' ' || data_type,
                                           ',' ORDER BY table_name, column_name), ''))
              FROM information_schema.columns WHERE table_schema = 'public')";

/// The database's state, on a connection of the restore's own: counting a full-scale catalog
/// takes longer than the pool's statement time limit allows.
pub async fn database_state(client: &Client) -> Result<DatabaseState, Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT ({IDENTITY}),
                        greatest((SELECT max(seq) FROM change_log), p.through), p.through,
                        pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                        (SELECT count(*) FROM products), (SELECT coalesce(max(id), 0) FROM products),
                        (SELECT count(*) FROM questions), (SELECT coalesce(max(id), 0) FROM questions)
                   FROM change_log_pruned AS p"
            ),
            &[],
        )
        .await?;
    Ok(DatabaseState {
        identity: row.try_get(0)?,
        log_high: row.try_get(1)?,
        pruned_through: row.try_get(2)?,
        next_xid: row.try_get(3)?,
        products: row.try_get(4)?,
        max_product_id: row.try_get(5)?,
        questions: row.try_get(6)?,
        max_question_id: row.try_get(7)?,
    })
}
