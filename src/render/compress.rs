//! Compact bodies for the precomputed catalog: a whole body kept gzip-compressed (sent as it
//! is to clients that accept gzip, inflated for those that do not; written in its kind's
//! shared code once there is one, [`super::shared_codes`]), and a list's item buffer
//! packed ([`pack`]; unpacked to copy a page out of it): compressed against the catalog's
//! list dictionary once there is one, raw deflate before.
//!
//! libdeflate works on whole buffers, which is what a cached body is, and inflates several
//! times faster than a streaming zlib. Its compressors and decompressors hold state, so each
//! thread keeps its own.
//!
//! # The list dictionary
//!
//! Most lists are small (a question's two or three answers, a product's few reviews), and
//! deflate, which learns only from the buffer it compresses, saves little on them: the same
//! keys, dates and phrases are in every list. A zstd dictionary trained on the catalog's own
//! lists (the first few megabytes a warm-up renders) gives every list that knowledge up front:
//! measured on 2,000 random products of the full-scale set, a question's answers 758 → 355
//! bytes a product, reviews 802 → 539, questions 680 → 484 (docs/benchmarks.md, Dictionaries).
//! With `--compress dense` whole bodies get a dictionary of their own. A dictionary is one per
//! process and kind, trained once or restored with a snapshot, and never replaced: what was
//! packed against it can always be unpacked, and nothing packed carries a pointer to it.

use std::cell::RefCell;
use std::sync::OnceLock;

use libdeflater::{CompressionLvl, Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe::{CParameter, DParameter, FrameFormat};

/// libdeflate's level 1. A catalog's bodies are small, so much of the time goes to building
/// each body's codes rather than to finding matches: on a sample of the full-scale set's
/// bodies level 6 kept 1.7% fewer bytes (1% of the whole catalog) and took half as long
/// again, and deflate was a third of a full-scale warm-up's CPU (docs/benchmarks.md, Warm-up;
/// `cargo bench --bench cache -- gzip`).
const LEVEL: CompressionLvl = match CompressionLvl::new(1) {
    Ok(level) => level,
    Err(_) => CompressionLvl::fastest(),
};

thread_local! {
    /// The compressor, and a scratch buffer it writes into (kept, so that compressing a
    /// catalog is not millions of large allocations).
    static COMPRESSOR: RefCell<(Compressor, Vec<u8>)> =
        RefCell::new((Compressor::new(LEVEL), Vec::new()));
    static DECOMPRESSOR: RefCell<Decompressor> = RefCell::new(Decompressor::new());
}

/// Whether `compressed` bytes for `plain` bytes save enough to pay for inflating them: at
/// least an eighth.
fn worth_it(compressed: usize, plain: usize) -> bool {
    compressed + plain / 8 <= plain
}

/// `plain` as a gzip member, if that saves at least an eighth. The result holds no spare
/// capacity: it is kept for a long time, in millions.
pub fn gzip(plain: &[u8]) -> Option<Box<[u8]>> {
    compressed(plain, |c, out| {
        let bound = c.gzip_compress_bound(plain.len());
        out.resize(bound, 0);
        c.gzip_compress(plain, out).ok()
    })
}

/// Runs `compress` with this thread's compressor and scratch buffer; returns an exact copy of
/// what it wrote if that is worth keeping.
fn compressed(
    plain: &[u8],
    compress: impl FnOnce(&mut Compressor, &mut Vec<u8>) -> Option<usize>,
) -> Option<Box<[u8]>> {
    compressed_as(plain, Saving::Eighth, compress)
}

/// Whether a compression is kept only where it saves an eighth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saving {
    Eighth,
    /// Kept whatever it saves: one run of a list, whose runs together must save an eighth.
    Any,
}

fn compressed_as(
    plain: &[u8],
    saving: Saving,
    compress: impl FnOnce(&mut Compressor, &mut Vec<u8>) -> Option<usize>,
) -> Option<Box<[u8]>> {
    COMPRESSOR.with(|c| {
        let (compressor, scratch) = &mut *c.borrow_mut();
        let n = compress(compressor, scratch)?;
        (saving == Saving::Any || worth_it(n, plain.len())).then(|| Box::from(&scratch[..n]))
    })
}

/// Whether `packed` bytes of `plain` ones are worth keeping packed: they save an eighth.
pub fn saves_enough(packed: usize, plain: usize) -> bool {
    worth_it(packed, plain)
}

/// The bytes of a gzip member made by [`gzip`]; None if it is not one.
pub fn gunzip(gz: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0; gzip_size(gz)?];
    let n = DECOMPRESSOR
        .with(|d| d.borrow_mut().gzip_decompress(gz, &mut out))
        .ok()?;
    (n == out.len()).then_some(out)
}

/// The bytes of the gzip member that `prefix` and then `gz` make (a body written in a shared
/// code behind its kind's prefix, [`super::shared_codes`]; or a whole member behind an empty
/// prefix).
pub fn gunzip_behind(prefix: &[u8], gz: &[u8]) -> Option<Vec<u8>> {
    if prefix.is_empty() {
        return gunzip(gz);
    }
    let mut member = Vec::with_capacity(prefix.len() + gz.len());
    member.extend_from_slice(prefix);
    member.extend_from_slice(gz);
    gunzip(&member)
}

/// The most deflate expands: 258 bytes from each 2-bit code, give or take its block headers.
pub const MAX_DEFLATE_RATIO: usize = 1_032;

/// The size a gzip member says its contents have (its trailer's last four bytes, mod 2^32;
/// bodies here are far smaller), if plausible for its length: a header (10 bytes) and a
/// trailer (8) at least, and no more than deflate expands. What inflating it allocates.
pub fn gzip_size(gz: &[u8]) -> Option<usize> {
    trailer_size(gz, 18)
}

/// [`gzip_size`] for a body written in a shared code ([`super::shared_codes`]), which has no
/// header of its own: a byte of its block at least, and the trailer.
pub fn coded_size(body: &[u8]) -> Option<usize> {
    trailer_size(body, 9)
}

/// The size the gzip trailer ending `bytes` says, if `bytes` are at least `min_len` long and
/// no more than deflate expands.
fn trailer_size(bytes: &[u8], min_len: usize) -> Option<usize> {
    let at = bytes
        .len()
        .checked_sub(4)
        .filter(|_| bytes.len() >= min_len)?;
    let size = u32::from_le_bytes(bytes.get(at..)?.try_into().ok()?) as usize;
    (size <= bytes.len().saturating_mul(MAX_DEFLATE_RATIO)).then_some(size)
}

/// How a list's items are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// As they are.
    #[default]
    Plain,
    /// Raw deflate.
    Deflate,
    /// Packed against the process's list dictionary ([`pack_against`]).
    Dictionary,
}

/// zstd's level: the dictionary does most of the work. With level 3 packing the lists a
/// full-scale warm-up took 142 s, against 165 s deflating them (docs/benchmarks.md,
/// Dictionaries); level 9 measured 2–6% smaller, and zstd's higher levels are the slower ones.
const DICTIONARY_LEVEL: i32 = 3;

/// How large a trained dictionary may be: zstd's own default (it measured better than 64 KiB,
/// and 110 KiB once per process is nothing beside a catalog).
pub const DICTIONARY_MAX_BYTES: usize = 112_640;

/// What a dictionary is trained on, and packs: one per kind, since what lists share is not
/// what whole bodies share (one dictionary for both measured a reviews meta body twice the
/// size its own dictionary gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictionaryKind {
    /// The items of lists: reviews, questions, a question's answers.
    Lists,
    /// Whole bodies, with `--compress dense`: a product, its styles, related ids, reviews
    /// meta.
    Bodies,
}

impl DictionaryKind {
    pub const ALL: [DictionaryKind; 2] = [DictionaryKind::Lists, DictionaryKind::Bodies];

    /// Its name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            DictionaryKind::Lists => "lists",
            DictionaryKind::Bodies => "bodies",
        }
    }

    /// Its place in arrays by kind (the process's dictionaries, a snapshot's).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A dictionary, prepared for packing and unpacking.
struct Dictionary {
    bytes: Box<[u8]>,
    encoder: EncoderDictionary<'static>,
    decoder: DecoderDictionary<'static>,
}

static DICTIONARIES: [OnceLock<Dictionary>; 2] = [OnceLock::new(), OnceLock::new()];

thread_local! {
    static PACKERS: RefCell<[Option<zstd::bulk::Compressor<'static>>; 2]> =
        const { RefCell::new([None, None]) };
    static UNPACKERS: RefCell<[Option<zstd::bulk::Decompressor<'static>>; 2]> =
        const { RefCell::new([None, None]) };
}

/// Why a dictionary cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum DictionaryError {
    #[error("this process already packs {} against another dictionary", .0.name())]
    Another(DictionaryKind),
    #[error("not a dictionary zstd can pack {} against", .0.name())]
    Unusable(DictionaryKind),
}

/// The process's dictionary of `kind`, if it has one: what a snapshot stores beside the
/// bodies packed against it.
pub fn dictionary(kind: DictionaryKind) -> Option<&'static [u8]> {
    DICTIONARIES[kind.index()].get().map(|d| &d.bytes[..])
}

/// Makes `bytes` the dictionary of `kind` that packing uses from now on. Installing the one
/// already installed does nothing; another is refused (what was packed against the first
/// must stay readable), and so are bytes zstd cannot use, or larger than any trained here.
pub fn install_dictionary(kind: DictionaryKind, bytes: &[u8]) -> Result<(), DictionaryError> {
    install_in(&DICTIONARIES[kind.index()], kind, bytes)
}

/// [`install_dictionary`], into `slot`.
fn install_in(
    slot: &OnceLock<Dictionary>,
    kind: DictionaryKind,
    bytes: &[u8],
) -> Result<(), DictionaryError> {
    if slot.get().is_none() && !usable(bytes) {
        return Err(DictionaryError::Unusable(kind));
    }
    let installed = slot.get_or_init(|| Dictionary {
        bytes: bytes.into(),
        encoder: EncoderDictionary::copy(bytes, DICTIONARY_LEVEL),
        decoder: DecoderDictionary::copy(bytes),
    });
    match *installed.bytes == *bytes {
        true => Ok(()),
        false => Err(DictionaryError::Another(kind)),
    }
}

/// Whether zstd can use `bytes` as a dictionary, and they are no larger than one trained here.
/// zstd's infallible constructors, which the prepared dictionaries are made with, panic on
/// bytes they cannot read (a damaged snapshot's, say): the fallible ones check them first.
pub fn usable(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= DICTIONARY_MAX_BYTES
        && zstd::zstd_safe::CDict::try_create(bytes, DICTIONARY_LEVEL).is_some()
        && zstd::zstd_safe::DDict::try_create(bytes).is_some()
}

/// A dictionary trained on `samples` of at most `max_bytes`; None if zstd cannot train one
/// from them (too few, or too small).
pub fn train_dictionary<S: AsRef<[u8]>>(samples: &[S], max_bytes: usize) -> Option<Vec<u8>> {
    let sizes: Vec<usize> = samples.iter().map(|s| s.as_ref().len()).collect();
    let mut joined = Vec::with_capacity(sizes.iter().sum());
    for sample in samples {
        joined.extend_from_slice(sample.as_ref());
    }
    match zstd::dict::from_continuous(&joined, &sizes, max_bytes) {
        Ok(dictionary) if !dictionary.is_empty() => Some(dictionary),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(cause = %e, samples = samples.len(), "no dictionary");
            None
        }
    }
}

/// `items` packed: against the list dictionary if the process has one, raw deflate if not (or
/// if the dictionary does not pack them); None if neither saves an eighth.
pub fn pack(items: &[u8]) -> Option<(Codec, Box<[u8]>)> {
    match pack_against(DictionaryKind::Lists, items) {
        Some(packed) => Some((Codec::Dictionary, packed)),
        None => deflate(items).map(|raw| (Codec::Deflate, raw)),
    }
}

/// The codec [`pack`] tries first for a list's items now: the list dictionary once the
/// process has one (it falls back to deflate for items the dictionary does not shrink).
pub fn list_codec() -> Codec {
    match dictionary(DictionaryKind::Lists) {
        Some(_) => Codec::Dictionary,
        None => Codec::Deflate,
    }
}

/// `items` packed as `codec` (as [`pack`] packs them, for the runs of a list [`pack`] chose
/// `codec` for), whatever that saves: the runs of a list together must save an eighth
/// ([`saves_enough`]). None for [`Codec::Plain`], or past [`MAX_DEFLATE_RATIO`] against a
/// dictionary.
pub fn pack_as(codec: Codec, items: &[u8]) -> Option<Box<[u8]>> {
    match codec {
        Codec::Plain => None,
        Codec::Deflate => deflate_as(items, Saving::Any),
        Codec::Dictionary => pack_against_as(DictionaryKind::Lists, items, Saving::Any),
    }
}

/// The `len` bytes that `raw` holds packed as `codec`; None if it does not.
pub fn unpack(codec: Codec, raw: &[u8], len: usize) -> Option<Vec<u8>> {
    match codec {
        Codec::Plain => (raw.len() == len).then(|| raw.to_vec()),
        Codec::Deflate => inflate(raw, len),
        Codec::Dictionary => unpack_against(DictionaryKind::Lists, raw, len),
    }
}

/// `plain` packed against the process's dictionary of `kind`: a zstd frame without its magic
/// number, checksum or sizes. None if there is no such dictionary, or packing saves less than
/// an eighth, or `plain` is more than [`MAX_DEFLATE_RATIO`] times what it packs to (a
/// snapshot's reader refuses any further expansion, as for deflate).
pub fn pack_against(kind: DictionaryKind, plain: &[u8]) -> Option<Box<[u8]>> {
    pack_against_as(kind, plain, Saving::Eighth)
}

fn pack_against_as(kind: DictionaryKind, plain: &[u8], saving: Saving) -> Option<Box<[u8]>> {
    let dictionary = DICTIONARIES[kind.index()].get()?;
    let packed = compressed_as(plain, saving, |_, out| {
        PACKERS.with(|packers| {
            let mut packers = packers.borrow_mut();
            let packer = &mut packers[kind.index()];
            if packer.is_none() {
                *packer = packer_for(dictionary);
            }
            out.resize(zstd::zstd_safe::compress_bound(plain.len()), 0);
            packer
                .as_mut()?
                .compress_to_buffer(plain, &mut out[..])
                .ok()
        })
    })?;
    (plain.len() <= packed.len().saturating_mul(MAX_DEFLATE_RATIO)).then_some(packed)
}

/// The `len` bytes that `raw` holds packed against the dictionary of `kind`; None if it does
/// not, or the process has no such dictionary.
pub fn unpack_against(kind: DictionaryKind, raw: &[u8], len: usize) -> Option<Vec<u8>> {
    let dictionary = DICTIONARIES[kind.index()].get()?;
    let mut out = Vec::with_capacity(len);
    let n = UNPACKERS.with(|unpackers| {
        let mut unpackers = unpackers.borrow_mut();
        let unpacker = &mut unpackers[kind.index()];
        if unpacker.is_none() {
            let mut new =
                zstd::bulk::Decompressor::with_prepared_dictionary(&dictionary.decoder).ok()?;
            new.set_parameter(DParameter::Format(FrameFormat::Magicless))
                .ok()?;
            *unpacker = Some(new);
        }
        unpacker.as_mut()?.decompress_to_buffer(raw, &mut out).ok()
    })?;
    (n == len && out.len() == len).then_some(out)
}

/// A compressor for `dictionary`'s frames, as small as zstd makes them.
fn packer_for(dictionary: &'static Dictionary) -> Option<zstd::bulk::Compressor<'static>> {
    let mut packer = zstd::bulk::Compressor::with_prepared_dictionary(&dictionary.encoder).ok()?;
    for parameter in [
        CParameter::Format(FrameFormat::Magicless),
        CParameter::ContentSizeFlag(false),
        CParameter::ChecksumFlag(false),
        CParameter::DictIdFlag(false),
    ] {
        packer.set_parameter(parameter).ok()?;
    }
    Some(packer)
}

/// `plain` as raw deflate, if that saves at least an eighth (no spare capacity either).
pub fn deflate(plain: &[u8]) -> Option<Box<[u8]>> {
    deflate_as(plain, Saving::Eighth)
}

fn deflate_as(plain: &[u8], saving: Saving) -> Option<Box<[u8]>> {
    compressed_as(plain, saving, |c, out| {
        let bound = c.deflate_compress_bound(plain.len());
        out.resize(bound, 0);
        c.deflate_compress(plain, out).ok()
    })
}

/// The `len` bytes that `raw` deflates; None if it is not that.
pub fn inflate(raw: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0; len];
    let n = DECOMPRESSOR
        .with(|d| d.borrow_mut().deflate_decompress(raw, &mut out))
        .ok()?;
    (n == len).then_some(out)
}

/// A dictionary of `kind` for unit tests, trained on small lists of answers (or on product
/// bodies) and installed; or the one a test installed already: there is one per process.
#[cfg(test)]
pub(crate) fn test_dictionary(kind: DictionaryKind) -> &'static [u8] {
    if let Some(installed) = dictionary(kind) {
        return installed;
    }
    let sample = match kind {
        DictionaryKind::Lists => tests::answers,
        DictionaryKind::Bodies => tests::product,
    };
    let samples: Vec<Vec<u8>> = (0..2_000).map(sample).collect();
    let sampled: usize = samples.iter().map(Vec::len).sum();
    if let Some(trained) = train_dictionary(&samples, DICTIONARY_MAX_BYTES.min(sampled / 4)) {
        let _ = install_dictionary(kind, &trained);
    }
    dictionary(kind).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn round_trips_and_declines_what_does_not_shrink() {
        let text = br#"{"id":1,"name":"Camo Onesie","slogan":"Blend in"}"#.repeat(20);
        let gz = gzip(&text).expect("repetitive text shrinks");
        assert!(gz.len() < text.len() / 4);
        assert_eq!(
            Vec::from(gz.clone()).capacity(),
            gz.len(),
            "no spare capacity"
        );
        assert_eq!(gunzip(&gz).as_deref(), Some(&text[..]));
        let raw = deflate(&text).expect("shrinks");
        assert_eq!(inflate(&raw, text.len()).as_deref(), Some(&text[..]));
        assert_eq!(
            inflate(&raw, text.len() - 1),
            None,
            "a wrong length is refused"
        );
        assert_eq!(gzip(b"[1]"), None, "too small to shrink");
        assert_eq!(gunzip(b"not gzip at all"), None);
        assert_eq!(gunzip(b""), None);
    }

    /// A question's answers, as the catalog keeps them: small, and alike in all but their
    /// values.
    pub(crate) fn answers(question: u32) -> Vec<u8> {
        let words = [
            "soft", "fits", "true", "to", "size", "warm", "runs", "small", "great",
        ];
        (0..1 + question % 4)
            .map(|i| {
                let n = question * 7 + i;
                let body: Vec<&str> = (0..6).map(|w| words[((n + w) % 9) as usize]).collect();
                format!(
                    r#"{{"answer_id":{n},"body":"{}","date":"2021-0{}-1{}T00:00:00.000Z","answerer_name":"shopper{}","helpfulness":{},"photos":[]}}"#,
                    body.join(" "),
                    1 + n % 9,
                    n % 10,
                    n % 97,
                    n % 13
                )
            })
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes()
    }

    /// A product's detail, as the catalog keeps it: small, alike in all but its values.
    pub(crate) fn product(id: u32) -> Vec<u8> {
        format!(
            r#"{{"id":{id},"campus":"hr-rfp","name":"Camo Onesie {id}","slogan":"Blend in to your crowd","description":"The So Fatigues will wake you up and fit you in.","category":"Jackets","default_price":"{}.00","created_at":"2021-08-13T14:38:44.509Z","updated_at":"2021-08-13T14:38:44.509Z","features":[{{"feature":"Fabric","value":"Canvas"}},{{"feature":"Buttons","value":"Brass"}}]}}"#,
            40 + id % 160
        )
        .into_bytes()
    }

    #[test]
    fn a_dictionary_zstd_cannot_read_is_refused_not_a_panic() {
        // The dictionary magic, then nothing zstd can parse as entropy tables.
        let mut damaged = vec![0x37, 0xa4, 0x30, 0xec];
        damaged.extend_from_slice(&[0xff; 300]);
        let too_large = vec![b'a'; DICTIONARY_MAX_BYTES + 1];
        for bytes in [&damaged[..], &[][..], &too_large[..]] {
            assert!(!usable(bytes));
            // Installing them (into a slot of this test's own) is a refusal, not zstd's panic.
            let slot = OnceLock::new();
            assert!(matches!(
                install_in(&slot, DictionaryKind::Bodies, bytes),
                Err(DictionaryError::Unusable(DictionaryKind::Bodies))
            ));
            assert!(slot.get().is_none());
        }
        let trained = test_dictionary(DictionaryKind::Lists);
        assert!(usable(trained));
        assert!(usable(b"raw content: any bytes without the magic"));
        let slot = OnceLock::new();
        install_in(&slot, DictionaryKind::Lists, trained).expect("installs");
        assert!(matches!(
            install_in(&slot, DictionaryKind::Lists, b"raw content"),
            Err(DictionaryError::Another(DictionaryKind::Lists))
        ));
    }

    #[test]
    fn small_lists_pack_smaller_against_a_dictionary_and_unpack_exactly() {
        let lists = DictionaryKind::Lists;
        let trained = test_dictionary(lists).to_vec();
        assert!(!trained.is_empty(), "trained and installed");
        install_dictionary(lists, &trained).expect("the same one again");
        assert!(
            install_dictionary(lists, b"another dictionary").is_err(),
            "lists packed against the first must stay readable"
        );
        assert_eq!(dictionary(lists), Some(&trained[..]));

        let (mut packed_total, mut deflated_total) = (0, 0);
        for question in 5_000..5_200 {
            let items = answers(question);
            let (codec, packed) = pack(&items).expect("a list of answers packs");
            assert_eq!(codec, Codec::Dictionary);
            assert_eq!(unpack(codec, &packed, items.len()), Some(items.clone()));
            assert_eq!(
                unpack(codec, &packed, items.len() - 1),
                None,
                "a wrong length"
            );
            assert_eq!(unpack(codec, &packed[1..], items.len()), None, "damaged");
            packed_total += packed.len();
            deflated_total += deflate(&items).map_or(items.len(), |d| d.len());
        }
        assert!(
            packed_total * 2 < deflated_total,
            "{packed_total} bytes against the dictionary, {deflated_total} deflated"
        );
        assert_eq!(pack(b"[1]"), None, "too small to shrink");
    }
}
