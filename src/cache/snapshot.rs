//! Warm restarts: the precomputed catalog written to local disk with the change-feed position
//! it reflects, and loaded at start instead of scanning the database, then brought current by
//! the feed replaying `change_log` from that position.
//!
//! # Why a restored catalog is current
//!
//! A snapshot is written from the catalog as it is after the feed's position `P` was taken:
//! by then every change up to `P` had been applied, so each body it made stale was either
//! already refreshed or had a refresh under way. The writer leaves out every body whose
//! refresh is under way when it reads it (under the lock a refresh swaps its body in under),
//! so every body written is at least as new as `P`. At start the catalog is loaded before the
//! feed runs, and the feed then resumes from `P`: every change after it is refreshed as on a
//! running instance. A write this instance takes while it loads is recorded as a warm-up's
//! invalidations are, and its key is not loaded.
//!
//! # Never trusted blindly
//!
//! The file is written to a temporary name, synced and renamed, so a reader sees a whole file
//! or the previous one. It is read in frames, each with a CRC-32, and each body is checked as
//! it is decoded (`render::stored`). A snapshot is refused, and the instance warms from
//! scratch, if it was written by a build that renders differently (see [`render_digest`]) or with another
//! compaction, against another database or schema (its tables' columns), longer ago than
//! half the log's retention, or if the log no longer reaches back to its position (pruned
//! past it) or is behind it (a database restored from a backup). Damage found while loading
//! drops what was loaded.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{key_of, Held, REVIEWS_HELPFUL, REVIEWS_NEWEST, SLOT_KINDS};
use super::warm::{WarmStop, WarmupStatus};
use super::{CatalogSize, Key, ResponseCache};
use crate::pg::feed::{FeedPosition, FeedStatus};
use crate::pg::pool::Pool;
use crate::pg::DbError;
use crate::render::compress::{self, DictionaryKind};
use crate::render::shared_codes::{self, CodesKind, SharedCodes};
use crate::render::stored::{self, take_u32, take_u64, take_u8, Damaged};
use crate::render::{Compaction, Rendered, SharedList};

/// The file's name in the snapshot directory.
pub const FILE_NAME: &str = "catalog.snapshot";
const MAGIC: &[u8; 16] = b"atelier catalog\n";
const FORMAT: u32 = 5;

const HEADER: u8 = b'H';
const RECORDS: u8 = b'R';
const END: u8 = b'E';
/// A frame is written once its records pass this size.
const FRAME_TARGET: usize = 1 << 20;
/// No frame this build writes is larger (one product's bodies, past the target).
const FRAME_MAX: usize = 256 << 20;
/// The record kind of a products page (the catalog's slot kinds are below it).
const PRODUCTS_PAGE: u8 = SLOT_KINDS as u8;
/// What a snapshot being written is called until it is whole.
const TEMPORARY_SUFFIX: &str = ".tmp";

/// Removes temporary files a write left in `dir` when its process died (each as large as a
/// snapshot). Called at start, before any write of this instance.
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_NAME) && name.ends_with(TEMPORARY_SUFFIX) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %name, "removed a snapshot left half-written"),
                Err(e) => {
                    tracing::warn!(file = %name, cause = %e, "cannot remove a half-written snapshot")
                }
            }
        }
    }
}

/// Why a snapshot could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the snapshot {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("the snapshot {path} cannot be used: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("no snapshot now: {0}")]
    NotNow(&'static str),
    #[error("the database, checking a snapshot: {0}")]
    Database(#[from] DbError),
}

/// Counts for `/metrics` and the log.
#[derive(Debug, Default)]
pub struct SnapshotStatus {
    /// Catalogs restored from a snapshot.
    pub restored: AtomicU64,
    /// Snapshots found and not used (refused or damaged).
    pub refused: AtomicU64,
    /// Milliseconds the last restore took, from opening the file to the catalog loaded.
    pub last_restore_ms: AtomicU64,
    pub written: AtomicU64,
    pub write_failures: AtomicU64,
    pub last_write_ms: AtomicU64,
    pub last_write_bytes: AtomicU64,
    /// Why the last snapshot found was not used.
    pub last_refusal: std::sync::Mutex<Option<String>>,
    /// One write at a time (held by the writing thread).
    writing: std::sync::Mutex<()>,
}

/// What a written snapshot holds.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub bodies: u64,
    pub bytes: u64,
    /// Bodies left out because a refresh of them was under way.
    pub left_out: u64,
}

/// What a snapshot describes besides its bodies.
#[derive(Debug, Clone)]
struct Header {
    build: [u8; 32],
    compaction: u8,
    /// The shard the catalog is (index and count; a count of 0: the whole catalog).
    shard: (u32, u32),
    written_at_ms: u64,
    database: String,
    position: FeedPosition,
    /// The dictionaries bodies are packed against, by [`DictionaryKind`] (those the process
    /// had; [`crate::render::compress`]): checked as the header is read, installed once the
    /// bodies have loaded.
    dictionaries: [Option<Vec<u8>>; 2],
    /// The shared codes whole bodies and lead pages are gzipped in, by [`CodesKind`] (their
    /// lengths; those the process had; [`shared_codes`]): checked as the header is read,
    /// installed before the bodies load.
    codes: [Option<Vec<u8>>; shared_codes::KINDS],
}

/// The digest of the code that decides what a cached body's bytes are (computed by
/// `build.rs` from the sources that render, read and compact bodies, and `Cargo.lock`): a
/// snapshot written by a build with another may hold bodies this build would not make. A
/// deploy that changes only the HTTP edge, logging, configuration or the loader keeps it.
pub fn render_digest() -> [u8; 32] {
    const HEX: &str = env!("ATELIER_RENDER_DIGEST");
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = HEX
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    digest
}

fn compaction_code(compaction: Compaction) -> u8 {
    match compaction {
        Compaction::All => 0,
        Compaction::Bodies => 1,
        Compaction::None => 2,
        Compaction::Dense => 3,
    }
}

fn shard_code(shard: Option<crate::shard::Shard>) -> (u32, u32) {
    shard.map_or((0, 0), |s| (s.index, s.count))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Header {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&self.build);
        out.push(self.compaction);
        out.extend_from_slice(&self.shard.0.to_le_bytes());
        out.extend_from_slice(&self.shard.1.to_le_bytes());
        out.extend_from_slice(&self.written_at_ms.to_le_bytes());
        out.extend_from_slice(&(self.database.len() as u32).to_le_bytes());
        out.extend_from_slice(self.database.as_bytes());
        let p = &self.position;
        out.extend_from_slice(&p.high.to_le_bytes());
        out.extend_from_slice(&p.pending_from.to_le_bytes());
        out.extend_from_slice(&(p.pending.len() as u32).to_le_bytes());
        for xid in &p.pending {
            out.extend_from_slice(&xid.to_le_bytes());
        }
        for bytes in self.dictionaries.iter().chain(&self.codes) {
            let bytes = bytes.as_deref().unwrap_or_default();
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }

    fn decode(mut input: &[u8]) -> Result<Header, Damaged> {
        let input = &mut input;
        if take_u32(input)? != FORMAT {
            return Err(Damaged("written in another format"));
        }
        let mut build = [0; 32];
        for b in &mut build {
            *b = take_u8(input)?;
        }
        let compaction = take_u8(input)?;
        let shard = (take_u32(input)?, take_u32(input)?);
        let written_at_ms = take_u64(input)?;
        let len = take_u32(input)? as usize;
        if input.len() < len {
            return Err(Damaged("cut short"));
        }
        let (name, rest) = input.split_at(len);
        let database = String::from_utf8(name.to_vec()).map_err(|_| Damaged("a database name"))?;
        *input = rest;
        let high = take_i64(input)?;
        let pending_from = take_i64(input)?;
        let pending = (0..take_u32(input)?)
            .map(|_| take_i64(input))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dictionaries = [None, None];
        for dictionary in &mut dictionaries {
            let len = take_u32(input)? as usize;
            if input.len() < len {
                return Err(Damaged("cut short"));
            }
            let (bytes, rest) = input.split_at(len);
            // Checked here, so that a restore installs all of them or none, and refuses a
            // damaged one before loading anything.
            if len > 0 && !compress::usable(bytes) {
                return Err(Damaged("a dictionary zstd cannot use"));
            }
            *dictionary = (len > 0).then(|| bytes.to_vec());
            *input = rest;
        }
        let mut codes: [Option<Vec<u8>>; shared_codes::KINDS] = Default::default();
        for code in &mut codes {
            let len = take_u32(input)? as usize;
            if input.len() < len {
                return Err(Damaged("cut short"));
            }
            let (lengths, rest) = input.split_at(len);
            if len > 0 && SharedCodes::from_lengths(lengths).is_none() {
                return Err(Damaged("a shared code no body can be written in"));
            }
            *code = (len > 0).then(|| lengths.to_vec());
            *input = rest;
        }
        if !input.is_empty() {
            return Err(Damaged("a header longer than its fields"));
        }
        Ok(Header {
            build,
            compaction,
            shard,
            written_at_ms,
            database,
            position: FeedPosition {
                high,
                pending,
                pending_from,
            },
            dictionaries,
            codes,
        })
    }
}

fn take_i64(input: &mut &[u8]) -> Result<i64, Damaged> {
    take_u64(input).map(|n| n as i64)
}

/// Writes frames: each its length, the CRC-32 of its bytes, and its bytes (a kind, then the
/// kind's contents).
struct FrameWriter {
    out: BufWriter<File>,
    frame: Vec<u8>,
    bytes: u64,
}

impl FrameWriter {
    fn begin(&mut self, kind: u8) {
        self.frame.clear();
        self.frame.push(kind);
    }

    /// Ends the frame of records and begins the next once it is large enough.
    fn split_records(&mut self) -> std::io::Result<()> {
        if self.frame.len() >= FRAME_TARGET {
            self.end()?;
            self.begin(RECORDS);
        }
        Ok(())
    }

    fn end(&mut self) -> std::io::Result<()> {
        // A frame the reader would refuse must not be written.
        if self.frame.len() > FRAME_MAX {
            return Err(std::io::Error::other("a product's bodies overflow a frame"));
        }
        let len = u32::try_from(self.frame.len()).map_err(std::io::Error::other)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out
            .write_all(&libdeflater::crc32(&self.frame).to_le_bytes())?;
        self.out.write_all(&self.frame)?;
        self.bytes += 8 + self.frame.len() as u64;
        Ok(())
    }
}

/// The catalog's bodies as records, product by product (each product's bodies in slot
/// order, so that its newest reviews follow its helpful ones and can share their buffer), then
/// the answers, then the products pages of `generation`.
fn write_records(
    cache: &ResponseCache,
    generation: u64,
    frames: &mut FrameWriter,
) -> Result<Written, std::io::Error> {
    let counts = cache
        .store
        .slot_counts()
        .ok_or_else(|| std::io::Error::other("the catalog was dropped"))?;
    let mut written = Written {
        bodies: 0,
        bytes: 0,
        left_out: 0,
    };
    let answers = SLOT_KINDS - 1;
    let products = counts[..answers].iter().copied().max().unwrap_or(0);
    frames.begin(RECORDS);
    let mut record = |frames: &mut FrameWriter,
                      kind: usize,
                      id: usize,
                      helpful: &mut Option<SharedList>| {
        let key = key_of(kind, id);
        let Some(body) = cache.body_for_snapshot(&key) else {
            written.left_out += u64::from(cache.store.contains_key(&key));
            *helpful = None;
            return;
        };
        // The newest order is written as an index into the helpful order's buffer, written
        // just before. One that does not share it (a refresh swapped one order between the
        // two reads) is left out: the next read fills it.
        let previous = if kind == REVIEWS_NEWEST {
            match (&*body, helpful.as_deref()) {
                (Rendered::List(list), Some(base)) if list.shares_buffer_with(base) => Some(base),
                (Rendered::List(_), _) => {
                    written.left_out += 1;
                    return;
                }
                _ => None,
            }
        } else {
            None
        };
        frames.frame.push(kind as u8);
        frames.frame.extend_from_slice(&(id as u64).to_le_bytes());
        stored::encode(&body, previous, &mut frames.frame);
        *helpful = match (kind, &*body) {
            (REVIEWS_HELPFUL, Rendered::List(list)) => Some(SharedList::clone(list)),
            _ => None,
        };
        written.bodies += 1;
    };
    for id in 0..products {
        let mut helpful = None;
        for (kind, &count) in counts[..answers].iter().enumerate() {
            if id < count {
                record(frames, kind, id, &mut helpful);
            }
        }
        frames.split_records()?;
    }
    for id in 0..counts[answers] {
        record(frames, answers, id, &mut None);
        frames.split_records()?;
    }
    for (limit, offset, body) in cache.store.products_pages(generation) {
        frames.frame.push(PRODUCTS_PAGE);
        frames.frame.extend_from_slice(&limit.to_le_bytes());
        frames.frame.extend_from_slice(&offset.to_le_bytes());
        stored::encode(&body, None, &mut frames.frame);
        written.bodies += 1;
        frames.split_records()?;
    }
    frames.end()?;
    frames.begin(END);
    frames
        .frame
        .extend_from_slice(&written.bodies.to_le_bytes());
    frames.end()?;
    written.bytes = frames.bytes + MAGIC.len() as u64;
    Ok(written)
}

/// Writes `cache`'s catalog to `dir` as of `header`, atomically: a temporary file, synced,
/// renamed over the previous snapshot if `still_valid` says the catalog was not replaced
/// meanwhile.
fn write_file(
    cache: &ResponseCache,
    dir: &Path,
    header: &Header,
    generation: u64,
    still_valid: impl Fn() -> bool,
) -> Result<Written, SnapshotError> {
    let path = dir.join(FILE_NAME);
    // A name of its own per write: a writer still running (its caller gone) never shares one.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let temporary = dir.join(format!(
        "{FILE_NAME}.{}-{}{TEMPORARY_SUFFIX}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |context: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io {
            context,
            path,
            source,
        }
    };
    let written = (|| {
        std::fs::create_dir_all(dir)?;
        let file = File::create(&temporary)?;
        let mut frames = FrameWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            frame: Vec::with_capacity(2 * FRAME_TARGET),
            bytes: 0,
        };
        frames.out.write_all(MAGIC)?;
        frames.begin(HEADER);
        header.encode(&mut frames.frame);
        frames.end()?;
        let written = write_records(cache, generation, &mut frames)?;
        let file = frames.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(written)
    })()
    .map_err(io("cannot write the snapshot", &temporary));
    let written = match written {
        Ok(w) if still_valid() => w,
        Ok(_) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(SnapshotError::NotNow(
                "the catalog was emptied while it was written",
            ));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(e);
        }
    };
    std::fs::rename(&temporary, &path).map_err(io("cannot rename the snapshot to", &path))?;
    // The rename itself must reach the disk.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(written)
}

/// An open snapshot whose header has been read.
struct SnapshotFile {
    path: PathBuf,
    input: BufReader<File>,
    header: Header,
    frame: Vec<u8>,
}

impl SnapshotFile {
    /// Opens `dir`'s snapshot; None if there is none.
    fn open(dir: &Path) -> Result<Option<SnapshotFile>, SnapshotError> {
        let path = dir.join(FILE_NAME);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SnapshotError::Io {
                    context: "cannot open the snapshot",
                    path,
                    source,
                })
            }
        };
        let damaged = |why: &str| SnapshotError::Damaged {
            path: path.clone(),
            why: why.into(),
        };
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0; 16];
        if input.read_exact(&mut magic).is_err() || &magic != MAGIC {
            return Err(damaged("not a catalog snapshot"));
        }
        let mut frame = Vec::new();
        if read_frame(&mut input, &mut frame).map_err(damaged)? != HEADER {
            return Err(damaged("no header"));
        }
        let header = Header::decode(&frame[1..]).map_err(|e| damaged(e.0))?;
        Ok(Some(SnapshotFile {
            path,
            input,
            header,
            frame,
        }))
    }

    fn damaged(&self, why: impl Into<String>) -> SnapshotError {
        SnapshotError::Damaged {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    fn refused(&self, why: impl Into<String>) -> SnapshotError {
        SnapshotError::Refused {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    /// Reads the next frame into `self.frame`, checked; returns its kind.
    fn next_frame(&mut self) -> Result<u8, SnapshotError> {
        read_frame(&mut self.input, &mut self.frame).map_err(|why| self.damaged(why))
    }

    /// Loads every record into `cache`'s catalog (opened by the caller, inside a warm-up),
    /// products pages under `generation`. Stops early, keeping what it loaded, when the
    /// catalog's budget is spent.
    fn load(
        mut self,
        cache: &ResponseCache,
        warmup: &WarmupStatus,
        generation: u64,
    ) -> Result<u64, SnapshotError> {
        let mut bodies = 0u64;
        loop {
            match self.next_frame()? {
                RECORDS => {}
                END => {
                    let mut rest = &self.frame[1..];
                    let recorded = take_u64(&mut rest).map_err(|e| self.damaged(e.0))?;
                    if recorded != bodies {
                        return Err(self.damaged("fewer bodies than it says"));
                    }
                    return Ok(bodies);
                }
                _ => return Err(self.damaged("an unknown frame")),
            }
            let stored = Stored {
                dictionaries: self.header.dictionaries.each_ref().map(Option::is_some),
                codes: self.header.codes.each_ref().map(Option::is_some),
            };
            let batch = decode_records(&self.frame[1..], generation, warmup, stored)
                .map_err(|e| self.damaged(e.0))?;
            bodies += batch.len() as u64;
            match cache.insert_warm(batch, warmup) {
                Ok(()) => {}
                Err(WarmStop::BudgetFull) => return Ok(bodies),
                Err(WarmStop::Interrupted) => {
                    return Err(SnapshotError::NotNow("everything changed while it loaded"))
                }
            }
        }
    }
}

/// Why a snapshot with `header` cannot describe `database` now, if it cannot (see the
/// module's doc).
fn refusal(
    header: &Header,
    database: &crate::pg::restore::DatabaseState,
    compaction: Compaction,
    shard: Option<crate::shard::Shard>,
    retention: Duration,
) -> Option<String> {
    let age = Duration::from_millis(now_ms().saturating_sub(header.written_at_ms));
    Some(if header.build != render_digest() {
        "written by a build that renders differently".into()
    } else if header.compaction != compaction_code(compaction) {
        "written with another --compress".into()
    } else if header.shard != shard_code(shard) {
        "written for another --shard".into()
    } else if header.database != database.identity {
        format!(
            "written against another database ({}, this is {})",
            header.database, database.identity
        )
    } else if age > retention / 2 {
        format!(
            "written {} s ago, more than half the change log's retention",
            age.as_secs()
        )
    } else if database.pruned_through > header.position.high {
        "the change log has been pruned past its position".into()
    } else if database.log_high < header.position.high
        || database.next_xid < header.position.pending_from
    {
        "the database is behind its position (was it restored from a backup?)".into()
    } else {
        return None;
    })
}

/// Reads the next frame of `input` into `frame`, its length bounded and its checksum checked;
/// returns its kind, or why it is damaged.
fn read_frame(input: &mut impl Read, frame: &mut Vec<u8>) -> Result<u8, &'static str> {
    let mut head = [0; 8];
    input.read_exact(&mut head).map_err(|_| "cut short")?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > FRAME_MAX {
        return Err("a frame's length");
    }
    frame.resize(len, 0);
    input.read_exact(frame).map_err(|_| "cut short")?;
    if libdeflater::crc32(frame) != crc {
        return Err("a frame's checksum does not match");
    }
    Ok(frame[0])
}

/// Which dictionaries (by [`DictionaryKind`]) and shared codes (by [`CodesKind`]) a snapshot
/// stored.
#[derive(Debug, Clone, Copy, Default)]
struct Stored {
    dictionaries: [bool; 2],
    codes: [bool; shared_codes::KINDS],
}

/// The bodies of one frame of records, counting products as the warm-up does. `stored`: the
/// dictionaries and codes the snapshot stored; a body packed against a dictionary, or written
/// in a code, that it did not store is damage, not a body the process's own can read.
fn decode_records(
    mut input: &[u8],
    generation: u64,
    warmup: &WarmupStatus,
    stored: Stored,
) -> Result<Vec<(Key, Rendered)>, Damaged> {
    let input = &mut input;
    let mut batch = Vec::new();
    // The last record's list, if it was a product's helpful reviews: the next may share it.
    let mut helpful: Option<(u64, SharedList)> = None;
    while !input.is_empty() {
        let kind = take_u8(input)?;
        if kind == PRODUCTS_PAGE {
            let (limit, offset) = (take_i64(input)?, take_i64(input)?);
            let key = Key::ProductsPage {
                generation,
                limit,
                offset,
            };
            batch.push((key, stored::decode(input, None)?));
            helpful = None;
            continue;
        }
        let kind = usize::from(kind);
        if kind >= SLOT_KINDS {
            return Err(Damaged("an unknown kind of record"));
        }
        let id = take_u64(input)?;
        let index = usize::try_from(id)
            .ok()
            .filter(|&i| i64::try_from(i).is_ok())
            .ok_or(Damaged("an id"))?;
        let previous = match &helpful {
            Some((of, list)) if kind == REVIEWS_NEWEST && *of == id => Some(list),
            _ => None,
        };
        let body = stored::decode(input, previous)?;
        if stored::dictionary_of(&body).is_some_and(|kind| !stored.dictionaries[kind.index()]) {
            return Err(Damaged(
                "a body packed against a dictionary the snapshot lacks",
            ));
        }
        if stored::codes_of(&body).is_some_and(|kind| !stored.codes[kind.index()]) {
            return Err(Damaged(
                "a body written in a shared code the snapshot lacks",
            ));
        }
        helpful = match (kind, &body) {
            (REVIEWS_HELPFUL, Rendered::List(list)) => Some((id, SharedList::clone(list))),
            _ => None,
        };
        if kind == 0 {
            warmup.products_done.fetch_add(1, Ordering::Relaxed);
        }
        batch.push((key_of(kind, index), body));
    }
    Ok(batch)
}

impl ResponseCache {
    /// `key`'s body for a snapshot, from the catalog or (a body that outgrew the catalog's
    /// share) the on-demand cache: None if a refresh of it is under way (the body may predate
    /// a change the snapshot's position covers). Read under the lock a refresh swaps its body
    /// in under.
    fn body_for_snapshot(&self, key: &Key) -> Option<Held> {
        let refreshing = self.refreshing.lock().ok()?;
        if refreshing.contains_key(key) {
            return None;
        }
        let body = self.store.peek_held(key);
        drop(refreshing);
        body
    }
}

/// Writes `cache`'s catalog to `dir`, as of the feed's current position. Refuses (NotNow)
/// while the catalog is being warmed or restored, before a first warm-up, or while the feed is
/// not connected and following the log.
pub async fn save(
    cache: &Arc<ResponseCache>,
    pool: &Pool,
    dir: &Path,
    feed: &Arc<FeedStatus>,
    warmup: &Arc<WarmupStatus>,
    status: &Arc<SnapshotStatus>,
) -> Result<Written, SnapshotError> {
    let started = Instant::now();
    let written = write_current(cache, pool, dir, feed, warmup, status).await;
    match &written {
        Ok(w) => {
            status.written.fetch_add(1, Ordering::Relaxed);
            status
                .last_write_ms
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            status.last_write_bytes.store(w.bytes, Ordering::Relaxed);
        }
        Err(_) => {
            status.write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    written
}

async fn write_current(
    cache: &Arc<ResponseCache>,
    pool: &Pool,
    dir: &Path,
    feed: &Arc<FeedStatus>,
    warmup: &Arc<WarmupStatus>,
    status: &Arc<SnapshotStatus>,
) -> Result<Written, SnapshotError> {
    let build = render_digest();
    let clears = cache.clears.load(Ordering::Acquire);
    if !warmup.first_done.load(Ordering::Acquire)
        || warmup.running.load(Ordering::Acquire)
        || cache.restoring.load(Ordering::Acquire)
    {
        return Err(SnapshotError::NotNow("the catalog is not warm"));
    }
    // A position read while connected is at most a poll interval old.
    if !feed.is_established() || !feed.is_connected() || feed.is_catching_up() {
        return Err(SnapshotError::NotNow(
            "the change feed is not following the log",
        ));
    }
    let database = pool
        .run(|c| async move { crate::pg::restore::identity(&c.client).await })
        .await?;
    // Taken after the checks above: every change it covers has been applied.
    let position = feed
        .position()
        .ok_or(SnapshotError::NotNow("the change feed has no position yet"))?;
    let header = Header {
        build,
        compaction: compaction_code(cache.compaction),
        shard: shard_code(cache.shard),
        written_at_ms: now_ms(),
        database,
        position,
        dictionaries: DictionaryKind::ALL
            .map(|kind| compress::dictionary(kind).map(<[u8]>::to_vec)),
        codes: CodesKind::ALL.map(|kind| shared_codes::codes(kind).map(|c| c.lengths().to_vec())),
    };
    let generation = cache.products_generation.load(Ordering::Acquire);
    let (cache, dir, warmup, status) = (
        Arc::clone(cache),
        dir.to_path_buf(),
        Arc::clone(warmup),
        Arc::clone(status),
    );
    // The writer holds the one-at-a-time lock itself: it keeps running if its caller is
    // dropped (an aborted periodic write), and the next write waits for it.
    tokio::task::spawn_blocking(move || {
        let _one_at_a_time = status.writing.lock();
        write_file(&cache, &dir, &header, generation, || {
            catalog_kept(&cache, clears, &warmup)
        })
    })
    .await
    .unwrap_or_else(|e| {
        Err(SnapshotError::NotNow(if e.is_panic() {
            "the writer panicked"
        } else {
            "the runtime is shutting down"
        }))
    })
}

/// Whether `cache`'s catalog is the one it held when it had been emptied `clears` times: not
/// emptied since (the count goes up before the cache is emptied), nor being warmed again.
fn catalog_kept(cache: &ResponseCache, clears: u64, warmup: &WarmupStatus) -> bool {
    cache.clears.load(Ordering::Acquire) == clears && !warmup.running.load(Ordering::Acquire)
}

/// Loads `dir`'s snapshot into `cache`'s catalog if there is one it can trust; returns the
/// feed position to resume from. The caller has called [`ResponseCache::begin_restore`] (before
/// serving: a write taken from then on is not overwritten by the snapshot), which gave
/// `generation`; the warm-up's record of invalidations ends here, whatever happens. None:
/// there is no snapshot. An error: there was one and it was not used (whatever was loaded of
/// it is dropped); the caller warms from scratch.
pub async fn restore(
    cache: &Arc<ResponseCache>,
    database: &tokio_postgres::Config,
    settings: &crate::config::SnapshotSettings,
    retention: Duration,
    generation: u64,
    warmup: &Arc<WarmupStatus>,
    status: &SnapshotStatus,
) -> Result<Option<FeedPosition>, SnapshotError> {
    let started = Instant::now();
    let opened = {
        let dir = settings.dir.clone();
        tokio::task::spawn_blocking(move || SnapshotFile::open(&dir))
            .await
            .unwrap_or_else(|_| Err(SnapshotError::NotNow("the runtime is shutting down")))
    };
    let loaded = match opened {
        Ok(None) => Ok(None),
        Ok(Some(snapshot)) => {
            tokio::time::sleep(settings.pause_before_load).await;
            load_checked(cache, database, snapshot, retention, generation, warmup)
                .await
                .map(Some)
        }
        Err(e) => Err(e),
    };
    cache.end_warmup();
    match loaded {
        Ok(Some(position)) => {
            status.restored.fetch_add(1, Ordering::Relaxed);
            status
                .last_restore_ms
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            Ok(Some(position))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            status.refused.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut why) = status.last_refusal.lock() {
                *why = Some(e.to_string());
            }
            Err(e)
        }
    }
}

/// How long a restore waits for the database's state (a count of the whole catalog).
const STATE_LIMIT: Duration = Duration::from_secs(60);

async fn load_checked(
    cache: &Arc<ResponseCache>,
    database: &tokio_postgres::Config,
    snapshot: SnapshotFile,
    retention: Duration,
    generation: u64,
    warmup: &Arc<WarmupStatus>,
) -> Result<FeedPosition, SnapshotError> {
    let state = tokio::time::timeout(STATE_LIMIT, async {
        let client = crate::pg::connect(database).await?;
        crate::pg::restore::database_state(&client)
            .await
            .map_err(DbError::query("reading the database's state for a restore"))
    })
    .await
    .map_err(|_| DbError::Unavailable("the database's state took too long to read".into()))??;
    if let Some(why) = refusal(
        &snapshot.header,
        &state,
        cache.compaction,
        cache.shard,
        retention,
    ) {
        return Err(snapshot.refused(why));
    }
    // The bodies were packed against these dictionaries; a process that packs against others
    // (trained by a warm-up that ran before this restore) cannot read them. They are installed
    // once every body has loaded (reads go to the database until then), so that a snapshot
    // refused halfway leaves none of its dictionaries behind.
    let dictionaries = snapshot.header.dictionaries.clone();
    for (kind, wanted) in DictionaryKind::ALL.into_iter().zip(&dictionaries) {
        if let (Some(wanted), Some(installed)) = (wanted, compress::dictionary(kind)) {
            if wanted[..] != *installed {
                let e = compress::DictionaryError::Another(kind);
                return Err(snapshot.refused(e.to_string()));
            }
        }
    }
    // Likewise the shared codes; but they are installed before the bodies load, and kept if
    // the snapshot is refused halfway: a code is only a way of writing bodies, and a warm-up
    // after the refusal writes in it as well as in one of its own.
    for (kind, wanted) in CodesKind::ALL.into_iter().zip(&snapshot.header.codes) {
        if let Some(wanted) = wanted {
            if let Err(e) = shared_codes::install(kind, wanted) {
                return Err(snapshot.refused(e.to_string()));
            }
        }
    }
    let path = snapshot.path.clone();
    let position = snapshot.header.position.clone();
    // Slots for the catalog as it is now (products created since the snapshot included).
    let size = CatalogSize {
        products: state.products,
        max_product_id: state.max_product_id,
        questions: state.questions,
        max_question_id: state.max_question_id,
    };
    warmup.running.store(true, Ordering::Release);
    warmup.products_done.store(0, Ordering::Relaxed);
    warmup
        .products_total
        .store(size.products.max(0) as u64, Ordering::Relaxed);
    cache.open_catalog(size);
    let loaded = {
        let (cache, warmup) = (Arc::clone(cache), Arc::clone(warmup));
        tokio::task::spawn_blocking(move || snapshot.load(&cache, &warmup, generation))
            .await
            .unwrap_or_else(|_| Err(SnapshotError::NotNow("the loader stopped")))
    };
    let loaded = loaded.and_then(|bodies| {
        for (kind, dictionary) in DictionaryKind::ALL.into_iter().zip(&dictionaries) {
            if let Some(dictionary) = dictionary {
                compress::install_dictionary(kind, dictionary).map_err(|e| {
                    SnapshotError::Refused {
                        path: path.clone(),
                        why: e.to_string(),
                    }
                })?;
            }
        }
        Ok(bodies)
    });
    cache.store.settle_budget();
    warmup.running.store(false, Ordering::Release);
    match loaded {
        Ok(bodies) => {
            tracing::info!(
                bodies,
                after_seq = position.high,
                "catalog restored from a snapshot; the change feed replays the log from its position"
            );
            Ok(position)
        }
        Err(e) => {
            cache.clear();
            Err(e)
        }
    }
}

impl ResponseCache {
    /// Starts a restore: from here a write's keys are recorded (the restore does not load
    /// them), and reads go to the database until [`Self::end_restore`]. Returns the products
    /// list's generation the snapshot's pages are loaded into.
    pub fn begin_restore(&self) -> u64 {
        self.restoring.store(true, Ordering::Release);
        self.begin_warmup()
    }

    /// Ends a restore: the restored catalog is current (or was dropped), and reads are served
    /// from the cache again.
    pub fn end_restore(&self) {
        self.restoring.store(false, Ordering::Release);
    }

    /// Whether reads bypass the cache for a restore.
    pub fn is_restoring(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("atelier-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }

    fn header() -> Header {
        Header {
            build: [1; 32],
            compaction: 0,
            shard: (0, 0),
            written_at_ms: now_ms(),
            database: "1/1".into(),
            position: FeedPosition {
                high: 1,
                pending: Vec::new(),
                pending_from: 1,
            },
            dictionaries: [None, None],
            codes: Default::default(),
        }
    }

    /// A cache with a catalog holding products 1 and 2.
    fn catalog() -> ResponseCache {
        let cache = ResponseCache::new(1 << 20);
        cache.open_catalog(CatalogSize {
            products: 2,
            max_product_id: 2,
            ..Default::default()
        });
        for id in [1, 2] {
            assert!(cache.precompute(
                Key::Product(id),
                Rendered::Json(bytes::Bytes::from_static(b"{}"))
            ));
        }
        cache
    }

    #[test]
    fn a_body_packed_against_a_dictionary_the_snapshot_lacks_is_damage() {
        compress::test_dictionary(DictionaryKind::Lists);
        // One item of a few answers: the list's bytes are what matter here.
        let mut builder = crate::render::ItemListBuilder::default();
        builder
            .next_item()
            .extend_from_slice(&crate::render::compress::tests::answers(12));
        builder.end_item();
        let plain = builder.finish();
        let packed = plain.compacted(None);
        assert_eq!(packed.codec(), compress::Codec::Dictionary);
        let mut records = vec![(SLOT_KINDS - 1) as u8];
        records.extend_from_slice(&12u64.to_le_bytes());
        stored::encode(&Rendered::List(SharedList::new(packed)), None, &mut records);
        let warmup = WarmupStatus::default();
        let read = decode_records(&records, 0, &warmup, only_dictionaries([true, false]))
            .expect("with the dictionary");
        assert!(matches!(&read[0].1, Rendered::List(l) if **l == plain));
        assert!(matches!(
            decode_records(&records, 0, &warmup, only_dictionaries([false, true])),
            Err(Damaged(why)) if why.contains("lacks")
        ));

        // A whole body packed against the body dictionary, likewise.
        compress::test_dictionary(DictionaryKind::Bodies);
        let plain = bytes::Bytes::from(compress::tests::product(12));
        let packed = Rendered::Json(plain.clone()).compacted_as(Compaction::Dense, None);
        assert!(matches!(packed, Rendered::Packed(_)));
        let mut records = vec![0];
        records.extend_from_slice(&12u64.to_le_bytes());
        stored::encode(&packed, None, &mut records);
        let read = decode_records(&records, 0, &warmup, only_dictionaries([false, true]))
            .expect("with it");
        assert_eq!(read[0].1.plain(), Some(plain));
        assert!(matches!(
            decode_records(&records, 0, &warmup, only_dictionaries([true, false])),
            Err(Damaged(why)) if why.contains("lacks")
        ));
    }

    /// What a snapshot that stored these dictionaries, and no shared code, stored.
    fn only_dictionaries(dictionaries: [bool; 2]) -> Stored {
        Stored {
            dictionaries,
            codes: [false; shared_codes::KINDS],
        }
    }

    #[test]
    fn a_body_written_in_a_shared_code_the_snapshot_lacks_is_damage() {
        shared_codes::test_codes(CodesKind::Styles);
        let plain = bytes::Bytes::from(compress::tests::product(12));
        let coded = Rendered::Json(plain.clone()).compacted_over(
            Compaction::All,
            None,
            Some(CodesKind::Styles),
            None,
        );
        assert!(matches!(&coded, Rendered::Gzip(g) if g.codes == Some(CodesKind::Styles)));
        let mut records = vec![1];
        records.extend_from_slice(&12u64.to_le_bytes());
        stored::encode(&coded, None, &mut records);
        let warmup = WarmupStatus::default();
        let mut stored = Stored::default();
        stored.codes[CodesKind::Styles.index()] = true;
        let read = decode_records(&records, 0, &warmup, stored).expect("with the code");
        assert_eq!(read[0].1, coded);
        assert_eq!(read[0].1.plain(), Some(plain));
        let mut others = Stored::default();
        others.codes[CodesKind::Meta.index()] = true;
        others.codes[CodesKind::Product.index()] = true;
        assert!(matches!(
            decode_records(&records, 0, &warmup, others),
            Err(Damaged(why)) if why.contains("lacks")
        ));
    }

    #[test]
    fn a_write_leaves_out_bodies_being_refreshed_and_replaces_the_file_only_when_whole() {
        let dir = temporary_dir("snapshot-write");
        let cache = catalog();
        let _queue = cache.refresh_queue();
        cache.stale(
            vec![Key::Product(2)],
            &crate::cache::refresh::Reuse::Nothing,
        );
        let written = write_file(&cache, &dir, &header(), 0, || true).expect("written");
        assert_eq!((written.bodies, written.left_out), (1, 1));
        let first = std::fs::read(dir.join(FILE_NAME)).expect("the snapshot");
        assert_eq!(first.len() as u64, written.bytes);

        // A write whose catalog was emptied meanwhile leaves the previous file as it was, and
        // no temporary file.
        cache.insert(
            Key::Product(2),
            Rendered::Json(bytes::Bytes::from_static(b"{\"x\":1}")),
        );
        assert!(matches!(
            write_file(&cache, &dir, &header(), 0, || false),
            Err(SnapshotError::NotNow(_))
        ));
        assert_eq!(std::fs::read(dir.join(FILE_NAME)).expect("kept"), first);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("listed")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);

        // A temporary file left by a process that died is removed at start; the snapshot stays.
        std::fs::write(
            dir.join(format!("{FILE_NAME}.123-0{TEMPORARY_SUFFIX}")),
            b"half",
        )
        .expect("written");
        remove_leftovers(&dir);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("listed")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_snapshot_written_across_an_emptying_an_exit_or_a_warm_up_is_thrown_away() {
        let cache = catalog();
        let warmup = WarmupStatus::default();
        let clears = cache.clears.load(Ordering::Acquire);
        assert!(catalog_kept(&cache, clears, &warmup));
        cache.clear();
        assert!(!catalog_kept(&cache, clears, &warmup));
        let clears = cache.clears.load(Ordering::Acquire);
        cache.abandon_catalog_for_exit();
        assert!(!catalog_kept(&cache, clears, &warmup), "abandoned at exit");
        let clears = cache.clears.load(Ordering::Acquire);
        warmup.running.store(true, Ordering::Release);
        assert!(!catalog_kept(&cache, clears, &warmup));
    }

    #[test]
    fn a_header_reads_back_as_written() {
        let header = Header {
            build: [7; 32],
            compaction: 1,
            shard: (2, 3),
            written_at_ms: 123,
            database: "42/7".into(),
            position: FeedPosition {
                high: 99,
                pending: vec![5, 8],
                pending_from: 10,
            },
            dictionaries: [Some(b"a dictionary".to_vec()), None],
            codes: [
                None,
                Some(shared_codes::SymbolCounts::default().lengths()),
                None,
                None,
                Some(shared_codes::SymbolCounts::default().lengths()),
            ],
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        let read = Header::decode(&out).expect("decodes");
        // A dictionary zstd cannot use, or one larger than any trained here, is damage.
        // (The magic, then nothing zstd can parse as entropy tables; under 8 bytes zstd would
        // take it as raw content.)
        let mut unreadable = vec![0x37, 0xa4, 0x30, 0xec];
        unreadable.extend_from_slice(&[0xff; 300]);
        for dictionary in [unreadable, vec![b'a'; 200_000]] {
            let damaged = Header {
                dictionaries: [None, Some(dictionary)],
                ..header.clone()
            };
            let mut out = Vec::new();
            damaged.encode(&mut out);
            assert!(
                matches!(Header::decode(&out), Err(Damaged(why)) if why.contains("dictionary"))
            );
        }
        assert_eq!(read.position, header.position);
        assert_eq!(read.database, header.database);
        assert_eq!(
            (read.build, read.compaction, read.shard, read.written_at_ms),
            ([7; 32], 1, (2, 3), 123)
        );
        assert_eq!(read.dictionaries, header.dictionaries);
        assert_eq!(read.codes, header.codes);
        // Lengths that are not a whole code are damage.
        let mut lengths = shared_codes::SymbolCounts::default().lengths();
        lengths[3] += 1;
        let damaged = Header {
            codes: [Some(lengths), None, None, None, None],
            ..header.clone()
        };
        let mut damaged_out = Vec::new();
        damaged.encode(&mut damaged_out);
        assert!(
            matches!(Header::decode(&damaged_out), Err(Damaged(why)) if why.contains("shared code"))
        );
        for cut in 0..out.len() {
            assert!(Header::decode(&out[..cut]).is_err());
        }
    }

    #[test]
    fn a_snapshot_that_does_not_describe_the_database_now_is_refused() {
        let header = Header {
            build: render_digest(),
            compaction: compaction_code(Compaction::All),
            shard: (0, 0),
            written_at_ms: now_ms(),
            database: "42/7".into(),
            position: FeedPosition {
                high: 100,
                pending: vec![900],
                pending_from: 1_000,
            },
            dictionaries: [None, None],
            codes: Default::default(),
        };
        let database = crate::pg::restore::DatabaseState {
            identity: "42/7".into(),
            log_high: 150,
            pruned_through: 80,
            next_xid: 1_200,
            products: 1,
            max_product_id: 1,
            questions: 0,
            max_question_id: 0,
        };
        let day = Duration::from_secs(86_400);
        let refused = |h: &Header, d: &crate::pg::restore::DatabaseState, c, r| {
            refusal(h, d, c, None, r).unwrap_or_default()
        };
        assert_eq!(
            refusal(&header, &database, Compaction::All, None, day),
            None
        );
        let shard = Some(crate::shard::Shard { index: 0, count: 2 });
        assert!(refusal(&header, &database, Compaction::All, shard, day)
            .unwrap_or_default()
            .contains("--shard"));
        let changed = |f: fn(&mut Header)| {
            let mut h = header.clone();
            f(&mut h);
            h
        };
        let moved = |f: fn(&mut crate::pg::restore::DatabaseState)| {
            let mut d = database.clone();
            f(&mut d);
            d
        };
        assert!(refused(
            &changed(|h| h.build[0] ^= 1),
            &database,
            Compaction::All,
            day
        )
        .contains("renders differently"));
        assert!(refused(&header, &database, Compaction::None, day).contains("--compress"));
        assert!(refused(
            &header,
            &moved(|d| d.identity = "42/8".into()),
            Compaction::All,
            day
        )
        .contains("another database"));
        assert!(refused(
            &changed(|h| h.written_at_ms -= 43_300_000),
            &database,
            Compaction::All,
            day
        )
        .contains("retention"));
        assert!(refused(
            &header,
            &moved(|d| d.pruned_through = 101),
            Compaction::All,
            day
        )
        .contains("pruned past"));
        assert!(
            refused(&header, &moved(|d| d.log_high = 99), Compaction::All, day).contains("behind")
        );
        assert!(
            refused(&header, &moved(|d| d.next_xid = 999), Compaction::All, day).contains("behind")
        );
    }
}
