//! `atelier load`: bulk-loads a data set directory into an empty schema.
//!
//! The steps, each chosen for speed on a small machine without giving up correctness:
//!
//! 1. Check every file exists and has the expected header before touching the database.
//! 2. Record the tables' indexes and constraints in `loader_deferred_ddl` and drop them, in one
//!    transaction: building them once at the end is far faster than maintaining them row by
//!    row, and a load that dies half-way leaves the list behind for the next run to finish.
//! 3. Stream each file, parents first, through [`convert`] on a thread of its own into
//!    `COPY ... FROM STDIN (FREEZE)` after a `TRUNCATE` in the same transaction, which lets
//!    PostgreSQL skip WAL (with `wal_level = minimal`) and later vacuum work. Rows that refer
//!    to missing parents are dropped and counted, so the foreign keys hold afterwards.
//! 4. Rebuild primary keys, then indexes, then foreign keys, on several connections at once.
//! 5. Move every id sequence past the largest loaded id, and ANALYZE.

pub mod convert;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Config};

use self::convert::{Converter, LoadedIds, Outcome};
use super::migrate::{migrate, MigrateError, SCHEMA_LOCK};
use super::{connect, DbError};
use crate::dataset::records::Records;
use crate::dataset::Table;
use crate::progress::{group_thousands, Progress};

/// Tables the loader empties and fills: the data set's, plus the cart, whose rows refer to
/// skus and so cannot outlive a reload.
fn managed_tables() -> Vec<&'static str> {
    let mut tables: Vec<&str> = Table::ALL.iter().map(|t| t.sql_name()).collect();
    tables.push("cart_items");
    tables
}

/// What to load, and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dir: PathBuf,
    /// Delete what the tables hold instead of refusing to load into a non-empty database.
    pub replace: bool,
    /// Connections used to rebuild indexes and constraints.
    pub jobs: usize,
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path} does not exist: a data set directory must hold the fourteen CSV files of the Atelier data set (see `atelier generate` to make one)")]
    MissingFile { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the header is `{found}`, expected `{expected}`: is this the right file?")]
    BadHeader {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the database already holds data ({table} has rows): pass --replace to delete it and load again")]
    NotEmpty { table: String },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("loading {file}: {source}")]
    Copy {
        file: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("loading {file}: the reader thread stopped unexpectedly")]
    ReaderLost { file: &'static str },
}

/// One line that was not loaded as it stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineNote {
    pub line: u64,
    pub outcome: Outcome,
}

/// What happened to one file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub file: &'static str,
    /// Data lines read (the header not counted).
    pub lines: u64,
    /// Rows written to the database, repaired ones included.
    pub loaded: u64,
    pub repaired: u64,
    pub skipped: u64,
    pub dropped: u64,
    /// The repaired and skipped lines (the first [`MAX_FIXES_NOTED`]) and the first
    /// [`MAX_DROPS_NOTED`] dropped ones, in line order.
    pub notes: Vec<LineNote>,
    pub elapsed: Duration,
}

/// Repaired and skipped lines are remembered up to this many per file: the format asks for
/// every one to be reported, and the data set has a few hundred; a file past this many is
/// broken, not quirky, and the rest of them are counted only (listing them would bury the
/// report).
pub const MAX_FIXES_NOTED: usize = 100_000;

/// Dropped lines (well-formed rows whose parent is missing, which the format asks only to
/// count) are remembered up to this many per file. The counts are always complete.
pub const MAX_DROPS_NOTED: usize = 10_000;

impl FileReport {
    /// Counts line `line`'s outcome, and remembers it if it is one to report.
    fn count(&mut self, line: u64, outcome: Outcome) {
        match &outcome {
            Outcome::Loaded => {
                self.loaded += 1;
                return;
            }
            Outcome::Repaired(_) => {
                self.loaded += 1;
                self.repaired += 1;
            }
            Outcome::Skipped(_) => self.skipped += 1,
            Outcome::Dropped(_) => self.dropped += 1,
        }
        let noted = match &outcome {
            Outcome::Dropped(_) => self.dropped <= MAX_DROPS_NOTED as u64,
            _ => self.repaired + self.skipped <= MAX_FIXES_NOTED as u64,
        };
        if noted {
            self.notes.push(LineNote { line, outcome });
        }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub files: Vec<FileReport>,
    pub copy_time: Duration,
    pub index_time: Duration,
    pub analyze_time: Duration,
    /// `pg_database_size` after the load.
    pub database_bytes: i64,
}

impl LoadReport {
    pub fn file(&self, name: &str) -> Option<&FileReport> {
        self.files.iter().find(|f| f.file == name)
    }

    /// A table of counts per file, then every line that was repaired or skipped and the first
    /// `max_dropped` dropped ones of each file.
    pub fn render(&self, max_dropped: usize) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{:<28} {:>12} {:>12} {:>9} {:>9} {:>9} {:>10}\n",
            "file", "lines", "loaded", "repaired", "skipped", "dropped", "rows/s"
        );
        let mut total = FileReport::default();
        for f in &self.files {
            let rate = f.lines as f64 / f.elapsed.as_secs_f64().max(1e-3);
            let _ = writeln!(
                out,
                "{:<28} {:>12} {:>12} {:>9} {:>9} {:>9} {:>10}",
                f.file,
                group_thousands(f.lines),
                group_thousands(f.loaded),
                group_thousands(f.repaired),
                group_thousands(f.skipped),
                group_thousands(f.dropped),
                group_thousands(rate as u64)
            );
            total.lines += f.lines;
            total.loaded += f.loaded;
            total.repaired += f.repaired;
            total.skipped += f.skipped;
            total.dropped += f.dropped;
        }
        let _ = writeln!(
            out,
            "{:<28} {:>12} {:>12} {:>9} {:>9} {:>9}",
            "total",
            group_thousands(total.lines),
            group_thousands(total.loaded),
            group_thousands(total.repaired),
            group_thousands(total.skipped),
            group_thousands(total.dropped)
        );
        let _ = writeln!(
            out,
            "copy {:.1}s, indexes and constraints {:.1}s, analyze {:.1}s; database size {} MB",
            self.copy_time.as_secs_f64(),
            self.index_time.as_secs_f64(),
            self.analyze_time.as_secs_f64(),
            self.database_bytes / (1 << 20)
        );
        for f in &self.files {
            let (mut fixes_listed, mut drops_listed) = (0u64, 0u64);
            for note in &f.notes {
                let (what, why) = match &note.outcome {
                    Outcome::Repaired(w) => ("repaired", w),
                    Outcome::Skipped(w) => ("skipped", w),
                    Outcome::Dropped(_) if drops_listed >= max_dropped as u64 => continue,
                    Outcome::Dropped(w) => ("dropped", w),
                    Outcome::Loaded => continue,
                };
                match note.outcome {
                    Outcome::Dropped(_) => drops_listed += 1,
                    _ => fixes_listed += 1,
                }
                let _ = writeln!(out, "{}:{}: {what}: {why}", f.file, note.line);
            }
            let fixes_unlisted = (f.repaired + f.skipped).saturating_sub(fixes_listed);
            if fixes_unlisted > 0 {
                let _ = writeln!(
                    out,
                    "{}: ... and {fixes_unlisted} more repaired or skipped: past {MAX_FIXES_NOTED} \
                     in one file, the file is broken rather than quirky",
                    f.file
                );
            }
            let drops_unlisted = f.dropped.saturating_sub(drops_listed);
            if drops_unlisted > 0 {
                let _ = writeln!(out, "{}: ... and {drops_unlisted} more dropped", f.file);
            }
        }
        out
    }
}

/// Checks that `dir` holds every file with the right header, then loads it.
pub async fn load(config: &Config, opts: &LoadOptions) -> Result<LoadReport, LoadError> {
    let files = check_files(&opts.dir)?;
    let mut client = connect(config).await?;
    migrate(&mut client).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(DbError::query("taking the schema lock"))?;
    let mut report = LoadReport::default();

    rebuild_deferred(
        config,
        opts,
        &mut Progress::new("finish earlier load", opts.quiet),
    )
    .await?;
    if let Some(table) = first_non_empty(&client).await? {
        if !opts.replace {
            return Err(LoadError::NotEmpty { table });
        }
    }
    defer_indexes_and_constraints(&mut client).await?;
    // The data set's tables are emptied one by one as they are copied; carts hold skus that
    // the new data may not have. (The TRUNCATE logs an "all" event.)
    client
        .batch_execute("TRUNCATE cart_items")
        .await
        .map_err(DbError::query("emptying cart_items"))?;

    let started = Instant::now();
    let mut loaded = LoadedIds::default();
    for (table, path) in files {
        let (file_report, ids) = copy_file(&mut client, table, &path, loaded, opts.quiet).await?;
        loaded = ids;
        report.files.push(file_report);
    }
    report.copy_time = started.elapsed();

    let started = Instant::now();
    rebuild_deferred(
        config,
        opts,
        &mut Progress::new("indexes, constraints", opts.quiet),
    )
    .await?;
    report.index_time = started.elapsed();

    let started = Instant::now();
    let mut progress = Progress::new("sequences, analyze", opts.quiet);
    reset_sequences(&client).await?;
    for table in managed_tables() {
        client
            .batch_execute(&format!("ANALYZE {table}"))
            .await
            .map_err(DbError::query(format!("analyzing {table}")))?;
    }
    progress.finish("done");
    report.analyze_time = started.elapsed();
    report.database_bytes = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .map_err(DbError::query("measuring the database"))?
        .get(0);
    Ok(report)
}

/// Every file of the data set with its path, after checking each one's header.
fn check_files(dir: &Path) -> Result<Vec<(Table, PathBuf)>, LoadError> {
    Table::ALL
        .iter()
        .map(|&table| {
            let path = dir.join(table.file_name());
            let file = File::open(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    LoadError::MissingFile { path: path.clone() }
                } else {
                    LoadError::Io {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
            let mut header = Vec::new();
            BufReader::new(file)
                .take(64 * 1024)
                .read_until(b'\n', &mut header)
                .map_err(|source| LoadError::Io {
                    path: path.clone(),
                    source,
                })?;
            let found = String::from_utf8_lossy(&header);
            let found = found
                .trim_start_matches('\u{feff}')
                .trim_end_matches(['\r', '\n']);
            if !header_names(found, table.header()) {
                return Err(LoadError::BadHeader {
                    path,
                    found: found.to_owned(),
                    expected: table.header().to_owned(),
                });
            }
            Ok((table, path))
        })
        .collect()
}

/// Whether `found` names the columns of `expected`, in its order: as written, or each name
/// quoted (as a CSV writer that quotes every field writes a header).
fn header_names(found: &str, expected: &str) -> bool {
    if found == expected {
        return true;
    }
    let mut fields = crate::dataset::csv_line::Fields::new();
    fields.parse(found.as_bytes()).is_ok()
        && (0..fields.len())
            .map(|i| fields.bytes(i))
            .eq(expected.split(',').map(str::as_bytes))
}

async fn first_non_empty(client: &Client) -> Result<Option<String>, DbError> {
    for table in managed_tables() {
        let row = client
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .map_err(DbError::query(format!("checking whether {table} is empty")))?;
        if row.get::<_, bool>(0) {
            return Ok(Some(table.to_owned()));
        }
    }
    Ok(None)
}

/// Phases of the deferred DDL, in the order they must be rebuilt.
const PHASE_KEYS: i16 = 1;
const PHASE_INDEXES: i16 = 2;
const PHASE_FOREIGN_KEYS: i16 = 3;

/// Saves the definitions of the managed tables' keys, indexes and foreign keys and drops them.
async fn defer_indexes_and_constraints(client: &mut Client) -> Result<(), DbError> {
    let tables: Vec<String> = managed_tables().into_iter().map(String::from).collect();
    let tx = client
        .transaction()
        .await
        .map_err(DbError::query("starting a transaction"))?;
    // Largest tables first within each phase, so parallel workers finish together.
    let rows = tx
        .query(
            "SELECT phase, create_sql, drop_sql FROM (
                 SELECT CASE c.contype WHEN 'f' THEN 3 ELSE 1 END AS phase,
                        format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
                               pg_get_constraintdef(c.oid)) AS create_sql,
                        format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) AS drop_sql,
                        c.conrelid AS rel
                   FROM pg_constraint c
                  WHERE c.conrelid = ANY ($1::text[]::regclass[]) AND c.contype IN ('p', 'u', 'f')
                 UNION ALL
                 SELECT 2, pg_get_indexdef(i.indexrelid), format('DROP INDEX %s', i.indexrelid::regclass),
                        i.indrelid
                   FROM pg_index i
                  WHERE i.indrelid = ANY ($1::text[]::regclass[])
                    AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                     WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
             ) d
             ORDER BY phase, (SELECT reltuples FROM pg_class WHERE oid = d.rel) DESC, create_sql",
            &[&tables],
        )
        .await
        .map_err(DbError::query("reading index and constraint definitions"))?;
    let next = tx
        .query_one("SELECT coalesce(max(seq), 0) FROM loader_deferred_ddl", &[])
        .await
        .map_err(DbError::query("reading loader_deferred_ddl"))?
        .get::<_, i32>(0);
    for (i, row) in rows.iter().enumerate() {
        let phase: i32 = row.get(0);
        let create: String = row.get(1);
        tx.execute(
            "INSERT INTO loader_deferred_ddl (seq, phase, ddl) VALUES ($1, $2, $3)",
            &[&(next + 1 + i as i32), &(phase as i16), &create],
        )
        .await
        .map_err(DbError::query("saving a definition"))?;
    }
    // Drop in reverse: foreign keys, then indexes, then the keys they depend on.
    for row in rows.iter().rev() {
        let drop: String = row.get(2);
        tx.batch_execute(&drop)
            .await
            .map_err(DbError::query(format!("running `{drop}`")))?;
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing the dropped definitions"))
}

/// Runs every statement left in `loader_deferred_ddl`, phase by phase, on `opts.jobs`
/// connections, deleting each row in the transaction that runs its statement.
async fn rebuild_deferred(
    config: &Config,
    opts: &LoadOptions,
    progress: &mut Progress,
) -> Result<(), DbError> {
    let mut rebuilt = 0;
    for phase in [PHASE_KEYS, PHASE_INDEXES, PHASE_FOREIGN_KEYS] {
        let client = connect(config).await?;
        let rows = client
            .query(
                "SELECT seq, ddl FROM loader_deferred_ddl WHERE phase = $1 ORDER BY seq",
                &[&phase],
            )
            .await
            .map_err(DbError::query("reading loader_deferred_ddl"))?;
        drop(client);
        if rows.is_empty() {
            continue;
        }
        rebuilt += rows.len();
        let queue: Arc<std::sync::Mutex<Vec<(i32, String)>>> = Arc::new(std::sync::Mutex::new(
            rows.iter().rev().map(|r| (r.get(0), r.get(1))).collect(),
        ));
        let mut workers = Vec::new();
        for _ in 0..opts.jobs.max(1) {
            let queue = Arc::clone(&queue);
            let config = config.clone();
            let quiet = opts.quiet;
            workers.push(tokio::spawn(async move {
                let mut client = connect(&config).await?;
                loop {
                    let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                    let Some((seq, ddl)) = next else {
                        return Ok::<(), DbError>(());
                    };
                    let started = Instant::now();
                    let tx = client
                        .transaction()
                        .await
                        .map_err(DbError::query("starting a transaction"))?;
                    tx.batch_execute(&ddl)
                        .await
                        .map_err(DbError::query(format!("running `{ddl}`")))?;
                    tx.execute("DELETE FROM loader_deferred_ddl WHERE seq = $1", &[&seq])
                        .await
                        .map_err(DbError::query("updating loader_deferred_ddl"))?;
                    tx.commit()
                        .await
                        .map_err(DbError::query(format!("committing `{ddl}`")))?;
                    if !quiet {
                        eprintln!("  {:>7.1}s  {}", started.elapsed().as_secs_f64(), ddl);
                    }
                }
            }));
        }
        for worker in workers {
            match worker.await {
                Ok(result) => result?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }
    if rebuilt > 0 {
        progress.finish(&format!("{rebuilt} indexes and constraints built"));
    }
    Ok(())
}

/// Moves each identity sequence past the largest id, so the next insert cannot collide.
async fn reset_sequences(client: &Client) -> Result<(), DbError> {
    for table in managed_tables() {
        if table == "cart_items" {
            continue;
        }
        client
            .query_one(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(max(id), 1), max(id) IS NOT NULL) FROM {table}"
                ),
                &[],
            )
            .await
            .map_err(DbError::query(format!("resetting the id sequence of {table}")))?;
    }
    Ok(())
}

/// Bytes handed to COPY at a time.
const CHUNK: usize = 256 * 1024;

/// Streams one file into its table. Returns the file's report and the loaded ids, with this
/// table's ids added when other tables refer to it.
async fn copy_file(
    client: &mut Client,
    table: Table,
    path: &Path,
    parents: LoadedIds,
    quiet: bool,
) -> Result<(FileReport, LoadedIds), LoadError> {
    let file = table.file_name();
    let (chunks_tx, mut chunks_rx) = mpsc::channel::<Bytes>(8);
    let (done_tx, done_rx) = oneshot::channel();
    let reader_path = path.to_path_buf();
    std::thread::Builder::new()
        .name(format!("read {file}"))
        .spawn(move || {
            let result = read_file(table, &reader_path, &parents, &chunks_tx, quiet);
            let _ = done_tx.send((result, parents));
        })
        .map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;

    let columns = table.sql_columns().join(", ");
    let tx = client
        .transaction()
        .await
        .map_err(DbError::query("starting a transaction"))?;
    // The change-log triggers would log every row (and the TRUNCATE); the file logs one
    // "all" event instead. Disabled inside this transaction only: ALTER TABLE takes the
    // table's exclusive lock, so no other session ever sees the triggers off.
    tx.batch_execute(&format!(
        "ALTER TABLE {t} DISABLE TRIGGER USER; TRUNCATE {t}",
        t = table.sql_name()
    ))
    .await
    .map_err(DbError::query(format!("truncating {}", table.sql_name())))?;
    let copy = async {
        let sink = tx
            .copy_in::<_, Bytes>(&format!(
                "COPY {} ({columns}) FROM STDIN (FREEZE)",
                table.sql_name()
            ))
            .await?;
        futures_util::pin_mut!(sink);
        while let Some(chunk) = chunks_rx.recv().await {
            sink.send(chunk).await?;
        }
        sink.finish().await
    };
    let copied = copy.await;
    drop(chunks_rx); // stops the reader if the COPY failed
    let (read, mut loaded) = done_rx.await.map_err(|_| LoadError::ReaderLost { file })?;
    let copied = copied.map_err(|source| LoadError::Copy { file, source })?;
    let (report, ids) = read?;
    // The file's rows and one "all" event commit together: every server instance empties
    // its cache as soon as the new rows are visible, not minutes later at the end of the load.
    tx.batch_execute(&format!(
        "ALTER TABLE {} ENABLE TRIGGER USER; SELECT atelier_log_change('all', 0, NULL)",
        table.sql_name()
    ))
    .await
    .map_err(|source| LoadError::Copy { file, source })?;
    tx.commit()
        .await
        .map_err(|source| LoadError::Copy { file, source })?;
    debug_assert_eq!(copied, report.loaded);

    if let Some(ids) = ids {
        loaded.put(table, ids);
    }
    Ok((report, loaded))
}

/// The reader thread: lines in, COPY chunks out.
fn read_file(
    table: Table,
    path: &Path,
    parents: &LoadedIds,
    chunks: &mpsc::Sender<Bytes>,
    quiet: bool,
) -> Result<(FileReport, Option<convert::IdSet>), LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut report = FileReport {
        file: table.file_name(),
        ..FileReport::default()
    };
    let mut progress = Progress::new(table.file_name(), quiet);
    let mut converter = Converter::new(table, parents);
    let mut header = Vec::new();
    reader.read_until(b'\n', &mut header).map_err(io)?;
    let header_bytes = header.len() as u64;
    let mut records = Records::new(reader, table.columns().len());
    let mut record = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(CHUNK + 64 * 1024);
    while let Some(span) = records.next_into(&mut record).map_err(io)? {
        if record.is_empty() && records.at_end().map_err(io)? {
            break; // a blank last line is the end of the file, not a row
        }
        report.lines += span.lines;
        report.count(span.first_line, converter.convert(&record, &mut out));
        if out.len() >= CHUNK {
            let chunk = Bytes::from(std::mem::replace(
                &mut out,
                Vec::with_capacity(CHUNK + 64 * 1024),
            ));
            if chunks.blocking_send(chunk).is_err() {
                return Err(LoadError::ReaderLost {
                    file: table.file_name(),
                });
            }
            progress.update(report.lines, header_bytes + records.consumed(), size);
        }
    }
    if !out.is_empty() && chunks.blocking_send(Bytes::from(out)).is_err() {
        return Err(LoadError::ReaderLost {
            file: table.file_name(),
        });
    }
    report.elapsed = progress.elapsed();
    progress.finish(&format!(
        "{} rows loaded, {} repaired, {} skipped, {} dropped",
        group_thousands(report.loaded),
        report.repaired,
        report.skipped,
        report.dropped
    ));
    let ids = converter.into_ids();
    Ok((report, table.is_parent().then_some(ids)))
}

/// Finishes the rebuild of an earlier load that stopped half-way (if any).
pub async fn finish_interrupted_load(config: &Config, quiet: bool) -> Result<(), DbError> {
    let opts = LoadOptions {
        dir: PathBuf::new(),
        replace: false,
        jobs: 2,
        quiet,
    };
    rebuild_deferred(
        config,
        &opts,
        &mut Progress::new("finish earlier load", quiet),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::{header_names, FileReport, LoadReport, Outcome, MAX_DROPS_NOTED};

    #[test]
    fn a_header_may_quote_its_names_but_not_change_them() {
        let expected = "id,styleId,size,quantity";
        assert!(header_names(expected, expected));
        assert!(header_names(
            r#""id","styleId","size","quantity""#,
            expected
        ));
        assert!(header_names(r#"id,"styleId",size,"quantity""#, expected));
        for wrong in [
            "id,styleId,size",
            "id,styleId,size,quantity,extra",
            "id,style_id,size,quantity",
            r#""id","styleId","size","quantity"#,
            "id, styleId, size, quantity",
            r#""id,styleId",size,quantity"#,
        ] {
            assert!(!header_names(wrong, expected), "{wrong}");
        }
    }

    fn file_with(repaired: u64, skipped: u64, dropped: u64) -> FileReport {
        let mut f = FileReport {
            file: "photos.csv",
            ..Default::default()
        };
        let mut line = 0;
        for (n, outcome) in [
            (repaired, Outcome::Repaired("a closing quote added".into())),
            (skipped, Outcome::Skipped("too few fields".into())),
            (dropped, Outcome::Dropped("no such style".into())),
        ] {
            for _ in 0..n {
                line += 1;
                f.count(line, outcome.clone());
            }
        }
        f.count(line + 1, Outcome::Loaded);
        f
    }

    #[test]
    fn every_repaired_and_skipped_line_is_kept_past_the_dropped_lines_limit() {
        let over = MAX_DROPS_NOTED as u64 + 5;
        let f = file_with(over, 3, over);
        assert_eq!(
            (f.loaded, f.repaired, f.skipped, f.dropped),
            (over + 1, over, 3, over)
        );
        let kept = |what: fn(&Outcome) -> bool| f.notes.iter().filter(|n| what(&n.outcome)).count();
        assert_eq!(kept(|o| matches!(o, Outcome::Repaired(_))), over as usize);
        assert_eq!(kept(|o| matches!(o, Outcome::Skipped(_))), 3);
        assert_eq!(kept(|o| matches!(o, Outcome::Dropped(_))), MAX_DROPS_NOTED);
    }

    #[test]
    fn the_report_lists_every_repaired_and_skipped_line_and_the_first_dropped_ones() {
        let report = LoadReport {
            files: vec![file_with(30, 2, 25)],
            ..Default::default()
        };
        let shown = report.render(20);
        let listed = |what: &str| shown.matches(&format!(": {what}: ")).count();
        assert_eq!(listed("repaired"), 30, "{shown}");
        assert_eq!(listed("skipped"), 2, "{shown}");
        assert_eq!(listed("dropped"), 20, "{shown}");
        assert!(shown.contains("photos.csv:1: repaired: a closing quote added"));
        assert!(
            shown.contains("photos.csv: ... and 5 more dropped"),
            "{shown}"
        );
        assert!(!shown.contains("more repaired or skipped"), "{shown}");
    }
}
