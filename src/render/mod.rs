//! Rendering: database rows to finished JSON bytes, one module per API area. This is the only
//! place response bodies are made — cache fills and tests alike go through it — so a cached
//! body is by construction what a fresh render gives.

pub mod cart;
pub mod compress;
pub mod json;
pub mod kept;
pub mod products;
pub mod qa;
pub mod reviews;
pub mod shared_codes;
pub mod stored;

use std::collections::HashMap;

use bytes::Bytes;

use crate::domain::PagingDigits;
use crate::pg::read::PhotoUrlRow;
use compress::{Codec, DictionaryKind};
use shared_codes::CodesKind;

/// A list as the cache and other lists share it: an `Arc` with no weak count, so that with a
/// 24-byte [`ItemList`] its box is 32 bytes, mimalloc's 32-byte class (a `std` `Arc`'s would
/// be 40, in the 48-byte class): five million lists at full scale.
pub type SharedList = triomphe::Arc<ItemList>;

/// A rendered resource: what the cache holds.
#[derive(Debug, Clone)]
pub enum Rendered {
    /// A whole body.
    Json(Bytes),
    /// A whole body kept gzip-compressed ([`Rendered::compacted`]).
    Gzip(Gzipped),
    /// A whole body packed against the body dictionary (`--compress dense`).
    Packed(PackedBody),
    /// The items of a paged list; each request wraps a slice of them.
    List(SharedList),
    /// The resource does not exist (404, or an empty list where the contract says so).
    NotFound,
}

/// A cache entry borrowed where it lies: a whole body as the on-demand cache holds it or as a
/// catalog slot keeps it, or a list as its own slot holds it (with no `Rendered` around it to
/// point at). A reader that copies the bytes out takes no count on them.
#[derive(Debug, Clone, Copy)]
pub enum RenderedRef<'a> {
    Body(&'a Rendered),
    /// A whole body (or 404) as a catalog slot keeps it.
    Kept(&'a kept::Kept),
    List(&'a ItemList),
}

impl<'a> From<&'a Rendered> for RenderedRef<'a> {
    fn from(entry: &'a Rendered) -> RenderedRef<'a> {
        match entry {
            Rendered::List(list) => RenderedRef::List(list),
            body => RenderedRef::Body(body),
        }
    }
}

/// How far the precomputed catalog compacts what it keeps: memory against the time a request
/// spends unpacking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compaction {
    /// Whole bodies gzip-compressed (sent as they are to clients that take gzip, behind their
    /// kind's prefix where written in a shared code: [`shared_codes`]), list buffers packed in
    /// runs (a page unpacks the runs it shows; [`compress::pack`]).
    #[default]
    All,
    /// Whole bodies only: list pages are copied from plain buffers.
    Bodies,
    /// Nothing.
    None,
    /// Whole bodies and list buffers packed against dictionaries trained on the catalog (one
    /// each), and unpacked for each request: the least memory, at the cost of unpacking on
    /// every hit and sending bodies plain. What the warm-up renders before its dictionary is
    /// trained (or all of a catalog too small to train on) is kept as [`Compaction::All`]
    /// keeps it, but with no lead page: whole bodies gzip (and sent gzip), lists deflated.
    Dense,
}

impl Compaction {
    /// Whether the catalog's lists are packed.
    pub fn packs_lists(self) -> bool {
        matches!(self, Compaction::All | Compaction::Dense)
    }

    /// The frame a list in `frame` keeps a gzip-ready lead page for: none when dense, where
    /// nothing is kept gzip.
    pub fn lead_frame(self, frame: Option<Frame>) -> Option<Frame> {
        match self {
            Compaction::All => frame,
            _ => None,
        }
    }

    /// Whether `list`, a list in `frame`, is packed in several runs with the codec a fresh
    /// render tries first ([`compress::list_codec`]) and has a lead page exactly where this
    /// compaction keeps one: then a refresh that changes a few items may pack again only the
    /// runs they are in (`ItemList::with_span_replaced`), and serves the pages a fresh render
    /// would. A list packed before the dictionary was trained, or with a lead page kept under
    /// other settings, is rendered whole instead. What this does not weigh: a fresh render
    /// keeps a list plain, or deflated, where packing it against the dictionary would not
    /// save an eighth; a list changed in place stays packed as it was.
    pub fn keeps_in_runs(self, list: &ItemList, frame: Frame) -> bool {
        self.packs_lists()
            && list.codec() == compress::list_codec()
            && list.has_lead_page() == self.lead_frame(Some(frame)).is_some()
            && list.runs() > 1
    }
}

/// A whole body gzipped (a whole member, or a body written in a shared code), with the digest
/// of its plain bytes (for its entity tags).
#[derive(Debug, Clone)]
pub struct Gzipped {
    /// A box, not `Bytes`: a `Rendered` that holds one is 40 bytes, not 48
    /// (`a_whole_body_is_40_bytes`).
    pub gz: Box<[u8]>,
    pub digest: u64,
    /// The shared code `gz` is written in, behind whose prefix it is sent
    /// ([`shared_codes`]); None for a whole gzip member.
    pub codes: Option<CodesKind>,
}

impl Gzipped {
    /// The plain bytes, inflated.
    pub fn plain(&self) -> Option<Bytes> {
        compress::gunzip_behind(shared_codes::prefix(self.codes)?, &self.gz).map(Bytes::from)
    }
}

/// A whole body packed against the process's body dictionary ([`compress::pack_against`]),
/// with the digest of its plain bytes (for its entity tag). Unpacked for every request, and
/// sent plain.
///
/// The bytes are boxed, not shared (`Bytes` or an `Arc`): the catalog keeps the body as one
/// allocation of its own ([`kept::Kept`]), and the box is 16 bytes against `Bytes`' 32
/// ([`Gzipped`]).
#[derive(Debug, Clone)]
pub struct PackedBody {
    packed: Box<[u8]>,
    len: u32,
    pub digest: u64,
}

impl PackedBody {
    /// `plain` packed, if the process has a body dictionary and packing saves an eighth.
    fn pack(plain: &[u8]) -> Option<PackedBody> {
        Some(PackedBody {
            packed: compress::pack_against(DictionaryKind::Bodies, plain)?,
            len: u32::try_from(plain.len()).ok()?,
            digest: digest(plain),
        })
    }

    /// The plain bytes, unpacked.
    pub fn plain(&self) -> Option<Bytes> {
        compress::unpack_against(DictionaryKind::Bodies, &self.packed, self.len as usize)
            .map(Bytes::from)
    }
}

impl Rendered {
    /// Whether `self` and `other` are the very same cached value, as far as a clone can
    /// tell: a plain body or a list is told by the bytes or box it shares with its clones, so
    /// an entry dropped and filled again is a new value even when its bytes are the old ones;
    /// a body kept compressed is copied when cloned (it is held in a box of its own, not in
    /// shared bytes), so it is told by its kept bytes, and a 404 is any 404. The catalog tells
    /// its own bodies apart by what their slots hold ([`kept::is_same`], for the sweep).
    pub fn is_same_value(&self, other: &Rendered) -> bool {
        let same = |a: &[u8], b: &[u8]| a.as_ptr() == b.as_ptr() && a.len() == b.len();
        match (self, other) {
            (Rendered::Json(a), Rendered::Json(b)) => same(a, b),
            (Rendered::Gzip(a), Rendered::Gzip(b)) => {
                a.digest == b.digest && a.gz == b.gz && a.codes == b.codes
            }
            (Rendered::Packed(a), Rendered::Packed(b)) => {
                a.digest == b.digest && a.packed == b.packed
            }
            (Rendered::List(a), Rendered::List(b)) => SharedList::ptr_eq(a, b),
            (Rendered::NotFound, Rendered::NotFound) => true,
            _ => false,
        }
    }

    /// Bytes held, for the cache's weight.
    pub fn weight(&self) -> usize {
        match self {
            Rendered::Json(b) => b.len(),
            Rendered::Gzip(g) => g.gz.len(),
            Rendered::Packed(p) => p.packed.len(),
            // The list's own box (its count and the list), besides what it holds.
            Rendered::List(l) => std::mem::size_of::<ItemList>() + 8 + l.weight(),
            Rendered::NotFound => 0,
        }
    }

    /// The same resource in less memory, for the precomputed catalog: a whole body
    /// gzip-compressed, a list's buffer packed, where that saves at least an eighth. A list
    /// in `frame` keeps its lead page gzip-ready ([`ItemList::compacted`]).
    pub fn compacted(self, frame: Option<Frame>) -> Rendered {
        self.compacted_as(Compaction::All, frame)
    }

    /// [`Rendered::compacted`], as far as `compaction` goes.
    pub fn compacted_as(self, compaction: Compaction, frame: Option<Frame>) -> Rendered {
        self.compacted_over(compaction, frame, None, None)
    }

    /// [`Rendered::compacted_as`], a whole body gzipped in the shared code of `codes` once the
    /// process has one ([`shared_codes`]), reusing what `previous` (the body this one
    /// replaces) keeps packed of a list's unchanged runs ([`ItemList::compacted_over`]).
    pub fn compacted_over(
        self,
        compaction: Compaction,
        frame: Option<Frame>,
        codes: Option<CodesKind>,
        previous: Option<&Rendered>,
    ) -> Rendered {
        match (compaction, &self) {
            (Compaction::None, _) | (Compaction::Bodies, Rendered::List(_)) => return self,
            _ => {}
        }
        match self {
            // Dense: against the body dictionary once there is one (gzip before it).
            Rendered::Json(plain) if compaction == Compaction::Dense => {
                match PackedBody::pack(&plain) {
                    Some(packed) => Rendered::Packed(packed),
                    None => Rendered::Json(plain).compacted_as(Compaction::All, None),
                }
            }
            Rendered::Json(plain) => match gzip_whole(&plain, codes) {
                Some((gz, codes)) => Rendered::Gzip(Gzipped {
                    gz,
                    digest: digest(&plain),
                    codes,
                }),
                None => Rendered::Json(plain),
            },
            // A list that does not shrink stays the very list it was: another order may read
            // its buffer through it.
            Rendered::List(list) if !list.is_compacted() => {
                let previous = match previous {
                    Some(Rendered::List(previous)) => Some(Replaced::packed(previous)),
                    _ => None,
                };
                match list.compacted_over(compaction.lead_frame(frame), previous) {
                    compact if compact.is_compacted() => Rendered::List(SharedList::new(compact)),
                    _ => Rendered::List(list),
                }
            }
            other => other,
        }
    }

    /// The plain bytes of a whole body (inflated or unpacked if need be); None for a list or
    /// a 404.
    pub fn plain(&self) -> Option<Bytes> {
        match self {
            Rendered::Json(b) => Some(b.clone()),
            Rendered::Gzip(g) => g.plain(),
            Rendered::Packed(p) => p.plain(),
            _ => None,
        }
    }
}

/// `plain` gzipped as the catalog keeps a whole body: in the shared code of `codes` once the
/// process has one, and as a whole member otherwise (or if that code's member would not save
/// an eighth); None if neither saves an eighth.
fn gzip_whole(plain: &[u8], codes: Option<CodesKind>) -> Option<(Box<[u8]>, Option<CodesKind>)> {
    if let Some((kind, code)) = codes.and_then(|k| Some((k, shared_codes::codes(k)?))) {
        let body = code.encode(plain);
        if compress::saves_enough(code.prefix().len() + body.len(), plain.len()) {
            return Some((body, Some(kind)));
        }
    }
    compress::gzip(plain).map(|gz| (gz, None))
}

/// Two values are equal when they serve the same bytes, however they are kept: a compacted
/// body equals its plain render.
impl PartialEq for Rendered {
    fn eq(&self, other: &Rendered) -> bool {
        match (self, other) {
            (Rendered::List(a), Rendered::List(b)) => a == b,
            (Rendered::NotFound, Rendered::NotFound) => true,
            (
                Rendered::Json(_) | Rendered::Gzip(_) | Rendered::Packed(_),
                Rendered::Json(_) | Rendered::Gzip(_) | Rendered::Packed(_),
            ) => {
                matches!((self.plain(), other.plain()), (Some(a), Some(b)) if a == b)
            }
            _ => false,
        }
    }
}

impl Eq for Rendered {}

/// A 64-bit digest of `body`, the same on every instance of one build: entity tags are made
/// from it. It tells versions of one resource apart, so it need not resist attack, only be
/// well mixed; eight bytes a step keeps it well under a microsecond for a typical body.
pub fn digest(body: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (body.len() as u64).wrapping_mul(K);
    let mut words = body.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K).rotate_left(31);
    }
    // A final avalanche, so that every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The rendered items of a list, comma-separated in one buffer, so that a page is copied, not
/// rendered: serving page 7 of a product's reviews copies bytes.
///
/// Lists of the same items in another order read the buffer of the list they were made from
/// ([`ItemList::reordered`]): a product's reviews are held once, with an index per sort order.
/// In the precomputed catalog the buffer is kept packed in runs of [`RUN_ITEMS`] items
/// ([`ItemList::compacted`]), and a page unpacks the runs it shows; the first items may be
/// held instead as the finished gzip body of the page a product page asks for
/// ([`ItemList::lead_page`]), sent as it is.
///
/// The catalog holds millions of these (6.5 million at full scale, most of them a question's
/// few answers), so a list is one small box and one allocation, its lead page included: only
/// a list in another order has a box beside it.
#[derive(Debug, Clone, Default)]
pub struct ItemList {
    /// How many items the list holds (a little-endian `u32`) and how they are kept (a
    /// [`Codec`], one byte, with [`LED`] set where the list has a lead page): [`LIST_HEAD`]
    /// bytes, here rather than in fields of their own, so that a list is 24 bytes. Then, for a
    /// list with a lead page, the lead's head ([`LEAD_HEAD`] bytes: the digest of its plain
    /// body, the length of its gzip body, where its items begin, how many it holds, whether
    /// it echoes its count and the shared code it is written in) and its gzip body (a whole
    /// member, or written in a shared code). Then the end offset of each item in the whole
    /// list's plain buffer, lead page included (the comma after it, if any, not included), as
    /// that many little-endian `u32`s; then the items (after the lead page's, if there is one)
    /// as the codec keeps them: plainly, or packed in runs of [`RUN_ITEMS`], several runs
    /// after a table of their ends (`u32`s, in the packed bytes after the table), one run
    /// alone.
    /// Empty in an empty list, and in a reordered list, which reads its base's.
    data: Box<[u8]>,
    /// Where the list is another's items in another order.
    reordered: Option<Box<Reordered>>,
}

/// The items of `base` in another order: `order[i]` is the position in `base` of item `i`.
/// A base is never itself reordered.
#[derive(Debug, Clone)]
struct Reordered {
    base: SharedList,
    order: Box<[u32]>,
}

/// The lead page of a product's reviews and questions is page 1 of the contract's default
/// `count`, which the storefront's product page asks for.
pub const LEAD_COUNT: u64 = crate::domain::DEFAULT_COUNT;

/// How many items one run of a packed list holds. The items after a list's lead page are
/// packed in runs of this many, each on its own (most lists fit in one): a page unpacks only
/// the runs its items are in, and a refresh re-packs only the runs whose items changed
/// ([`ItemList::compacted_over`]).
pub const RUN_ITEMS: usize = 32;

/// The first page of a list in the buffer's order, kept as the finished gzip body of that
/// page's response (a whole member, or written in its kind's shared code and sent behind the
/// code's prefix): the product page's request for it is answered without inflating, slicing
/// or copying anything. Kept in the list's own data ([`ItemList::data`]), not in
/// allocations of its own: at full scale a million and a half lists have one, and a box and
/// a gzip member apart cost them a size class's rounding and 32 bytes more each
/// (docs/benchmarks.md, Warm-up).
#[derive(Debug, Clone, Copy)]
struct Lead<'a> {
    body: GzipRef<'a>,
    /// Where the items begin in the body's plain bytes (after a head of a few dozen bytes).
    items_start: u16,
    /// How many items it holds: the list's first, at most [`LEAD_COUNT`].
    len: u8,
    /// Whether the body's head echoes its count ([`LEAD_COUNT`]): then it answers only a
    /// request for that count.
    echoes_count: bool,
}

/// A gzip body borrowed where it is kept, with the digest of its plain bytes (for its entity
/// tag) and the shared code it is written in, if any: a list's lead page
/// ([`ItemList::lead_page`]).
#[derive(Debug, Clone, Copy)]
pub struct GzipRef<'a> {
    pub gz: &'a [u8],
    pub digest: u64,
    pub codes: Option<CodesKind>,
}

impl GzipRef<'_> {
    /// The plain bytes, inflated.
    pub fn plain(&self) -> Option<Vec<u8>> {
        compress::gunzip_behind(shared_codes::prefix(self.codes)?, self.gz)
    }
}

impl<'a> From<&'a Gzipped> for GzipRef<'a> {
    fn from(body: &'a Gzipped) -> GzipRef<'a> {
        GzipRef {
            gz: &body.gz,
            digest: body.digest,
            codes: body.codes,
        }
    }
}

/// What wraps the pages of a list: the endpoint, and the id its head names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `GET /reviews` of a product.
    Reviews(i64),
    /// `GET /qa/questions` of a product.
    Questions(i64),
    /// `GET /qa/questions/{id}/answers`.
    Answers(i64),
}

impl Frame {
    /// Page `page` (1-based) of `count` items of `list`, as the endpoint sends it.
    pub fn page(self, list: &ItemList, page: u64, count: u64) -> Bytes {
        self.page_echoing(list, page, count, None)
    }

    /// [`Frame::page`] for a request whose `page` or `count` was past 2^64-1 when `digits` says
    /// how it wrote them: the head echoes them as written.
    pub fn page_echoing(
        self,
        list: &ItemList,
        page: u64,
        count: u64,
        digits: Option<&PagingDigits>,
    ) -> Bytes {
        let echo = Echo {
            page,
            count,
            digits,
        };
        envelope(&self.head(echo), list, page, count, b"]}")
    }

    /// The bytes before the items of a page; the bytes after them are always `]}`.
    fn head(self, echo: Echo<'_>) -> Vec<u8> {
        match self {
            Frame::Reviews(product_id) => reviews::page_head(product_id, echo),
            Frame::Questions(product_id) => qa::questions_head(product_id),
            Frame::Answers(question_id) => qa::answers_head(question_id, echo),
        }
    }

    /// The count of the lead page kept for lists in this frame: the product page asks for a
    /// product's reviews and questions; a question's answers are asked for far less often,
    /// and there are several times as many of them, so they keep none.
    fn lead_count(self) -> Option<u64> {
        match self {
            Frame::Reviews(_) | Frame::Questions(_) => Some(LEAD_COUNT),
            Frame::Answers(_) => None,
        }
    }

    /// The shared code its lead page is gzipped in, once the process has one.
    pub fn lead_codes(self) -> Option<CodesKind> {
        match self {
            Frame::Reviews(_) => Some(CodesKind::ReviewsLead),
            Frame::Questions(_) => Some(CodesKind::QuestionsLead),
            Frame::Answers(_) => None,
        }
    }

    /// Whether the head names the requested count (questions' does not).
    fn echoes_count(self) -> bool {
        !matches!(self, Frame::Questions(_))
    }
}

/// The bytes at the front of a list's data: its length and its codec ([`ItemList::data`]).
const LIST_HEAD: usize = 5;

/// The bit of a list's codec byte that says its data holds a lead page ([`ItemList::data`]).
const LED: u8 = 0x80;

/// The bytes of a lead page's head in its list's data, before its gzip body: the digest (8),
/// the body's length (4), where its items begin (2), how many it holds (1), and one byte of
/// flags: whether it echoes its count ([`ECHOES`]) and the shared code it is written in
/// ([`CodesKind::byte_of`], times [`CODES_UNIT`]).
const LEAD_HEAD: usize = 16;
const ECHOES: u8 = 1;
const CODES_UNIT: u8 = 2;

/// Starts a list's data: its length and its codec, and its lead page if it has one. (Over 4
/// billion items, or a lead page's gzip body over 4 GiB, is not a thing this server makes:
/// a page of five items at most, each from a request body of 64 KiB at most.)
fn push_list_head(data: &mut Vec<u8>, len: usize, codec: Codec, lead: Option<Lead<'_>>) {
    let u32_le = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    data.extend_from_slice(&u32_le(len));
    let Some(lead) = lead else {
        data.push(codec_byte(codec));
        return;
    };
    data.push(codec_byte(codec) | LED);
    data.extend_from_slice(&lead.body.digest.to_le_bytes());
    data.extend_from_slice(&u32_le(lead.body.gz.len()));
    data.extend_from_slice(&lead.items_start.to_le_bytes());
    data.push(lead.len);
    let codes = CodesKind::byte_of(lead.body.codes);
    data.push(u8::from(lead.echoes_count) * ECHOES + codes * CODES_UNIT);
    data.extend_from_slice(lead.body.gz);
}

/// The bytes of a list's data a lead page takes, head and gzip body (0 without one).
fn lead_size(lead: Option<Lead<'_>>) -> usize {
    lead.map_or(0, |lead| LEAD_HEAD + lead.body.gz.len())
}

/// The byte a list's head keeps its codec in, and back ([`ItemList::data`]).
fn codec_byte(codec: Codec) -> u8 {
    match codec {
        Codec::Plain => 0,
        Codec::Deflate => 1,
        Codec::Dictionary => 2,
    }
}

fn codec_of_byte(byte: u8) -> Option<Codec> {
    [Codec::Plain, Codec::Deflate, Codec::Dictionary]
        .into_iter()
        .find(|&codec| codec_byte(codec) == byte)
}

impl ItemList {
    pub fn len(&self) -> usize {
        match self.reordered.as_deref() {
            Some(reordered) => reordered.order.len(),
            None => self.own_len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The length its data records (0 for an empty or reordered list, whose data is empty).
    fn own_len(&self) -> usize {
        self.data
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize)
    }

    /// How its own data keeps the items (plainly, for an empty or reordered list).
    fn own_codec(&self) -> Codec {
        // Only this module writes the byte, always from a codec.
        self.data
            .get(4)
            .and_then(|&byte| codec_of_byte(byte & !LED))
            .unwrap_or_default()
    }

    /// The lead page its own data holds, if any ([`ItemList::data`]).
    fn own_lead(&self) -> Option<Lead<'_>> {
        if self.data.get(4)? & LED == 0 {
            return None;
        }
        let head = self.data.get(LIST_HEAD..LIST_HEAD + LEAD_HEAD)?;
        let gz_len = u32::from_le_bytes(head.get(8..12)?.try_into().ok()?) as usize;
        let gz_start = LIST_HEAD + LEAD_HEAD;
        let flags = *head.get(15)?;
        let codes = CodesKind::of_byte(flags / CODES_UNIT)?;
        Some(Lead {
            body: GzipRef {
                gz: self.data.get(gz_start..gz_start.checked_add(gz_len)?)?,
                digest: u64::from_le_bytes(head.get(..8)?.try_into().ok()?),
                codes,
            },
            items_start: u16::from_le_bytes(head.get(12..14)?.try_into().ok()?),
            len: *head.get(14)?,
            echoes_count: flags & ECHOES != 0,
        })
    }

    /// Where its own item ends begin in its data: after its head and lead page.
    fn own_ends_start(&self) -> usize {
        LIST_HEAD + lead_size(self.own_lead())
    }

    /// A list of `len` items kept as `codec` says, with `lead` as its lead page, whose item
    /// ends and items (`size` bytes) `fill` writes after its head and lead page (as
    /// [`ItemList::data`] describes them), in one exact allocation; an empty plain list holds
    /// no data at all.
    fn written(
        len: usize,
        codec: Codec,
        size: usize,
        lead: Option<Lead<'_>>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Self {
        if len == 0 && size == 0 && codec == Codec::Plain && lead.is_none() {
            return ItemList::default();
        }
        let mut data = Vec::with_capacity(LIST_HEAD + lead_size(lead) + size);
        push_list_head(&mut data, len, codec, lead);
        fill(&mut data);
        ItemList {
            data: data.into_boxed_slice(),
            reordered: None,
        }
    }

    /// A list of the items that end at `ends` in `items`, with `lead` as its lead page, in
    /// one exact allocation.
    fn from_parts(ends: &[u32], items: &[u8], codec: Codec, lead: Option<Lead<'_>>) -> Self {
        let size = ends.len() * 4 + items.len();
        ItemList::written(ends.len(), codec, size, lead, |data| {
            for end in ends {
                data.extend_from_slice(&end.to_le_bytes());
            }
            data.extend_from_slice(items);
        })
    }

    /// The list whose buffer this one reads: the one it was reordered from, or itself.
    fn base(&self) -> &ItemList {
        match self.reordered.as_deref() {
            Some(reordered) => &reordered.base,
            None => self,
        }
    }

    /// The list's order as positions in its base; None: the buffer's own order.
    fn order(&self) -> Option<&[u32]> {
        self.reordered.as_deref().map(|reordered| &*reordered.order)
    }

    /// The lead page of the buffer this list reads, if it has one.
    fn lead(&self) -> Option<Lead<'_>> {
        self.base().own_lead()
    }

    /// The item ends, as stored: `len` little-endian `u32`s.
    fn ends_bytes(&self) -> &[u8] {
        let base = self.base();
        let start = base.own_ends_start();
        let at = start + base.own_len() * 4;
        base.data.get(start..at).unwrap_or_default()
    }

    /// The items as stored: after the lead page's, as the base's codec keeps them.
    fn stored_items(&self) -> &[u8] {
        let base = self.base();
        base.data
            .get(base.own_ends_start() + base.own_len() * 4..)
            .unwrap_or_default()
    }

    /// A list with this one's ends and `items`, kept as `codec` says, with `lead` as its lead
    /// page.
    fn with_items(&self, codec: Codec, items: &[u8], lead: Option<Lead<'_>>) -> ItemList {
        let ends = self.ends_bytes();
        ItemList::written(self.len(), codec, ends.len() + items.len(), lead, |data| {
            data.extend_from_slice(ends);
            data.extend_from_slice(items);
        })
    }

    /// Where item `p` of the buffer's own order ends (the comma after it not included); 0
    /// past the end.
    fn end(&self, p: usize) -> usize {
        let at = p.saturating_mul(4);
        self.ends_bytes()
            .get(at..at.saturating_add(4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize)
    }

    /// The length of the whole list's plain buffer.
    fn total(&self) -> usize {
        self.len().checked_sub(1).map_or(0, |last| self.end(last))
    }

    /// Whether the list is kept compacted: packed, or with a lead page.
    pub fn is_compacted(&self) -> bool {
        self.base().own_codec() != Codec::Plain || self.lead().is_some()
    }

    /// How the items of the buffer this list reads are kept.
    pub fn codec(&self) -> Codec {
        self.base().own_codec()
    }

    /// Whether the list's buffer holds its first items as a gzip-ready lead page.
    pub fn has_lead_page(&self) -> bool {
        self.lead().is_some()
    }

    /// The lead page its own data keeps, if any: none for a list reordered over another's,
    /// which serves no lead page.
    pub fn kept_lead_page(&self) -> Option<GzipRef<'_>> {
        self.own_lead().map(|lead| lead.body)
    }

    /// The plain items of the buffer this list holds (unpacked if need be); None for a list
    /// reordered over another's.
    pub fn own_items(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.order().is_none().then(|| self.buffer())
    }

    /// Item `p` of `buffer`, which is this list's own plain buffer ([`Self::own_items`]);
    /// None past the end, or for a list reordered over another's.
    pub fn own_item<'b>(&self, buffer: &'b [u8], p: usize) -> Option<&'b [u8]> {
        if self.order().is_some() || p >= self.len() {
            return None;
        }
        buffer.get(self.start(p)..self.end(p))
    }

    /// Whether `self` and `other` read their items from the very same buffer.
    pub fn shares_buffer_with(&self, other: &ItemList) -> bool {
        std::ptr::eq(self.base(), other.base())
    }

    /// Whether this list is the items of `base` in another order, reading `base`'s very
    /// buffer ([`Self::reordered`]).
    pub fn is_reordered_over(&self, base: &ItemList) -> bool {
        self.order().is_some() && self.shares_buffer_with(base)
    }

    /// Bytes held (for the cache's weight), besides the list's own box. A reordered list
    /// counts only its index: the buffer is counted once, by the list it was made from.
    pub fn weight(&self) -> usize {
        match self.reordered.as_deref() {
            None => self.data.len(),
            Some(reordered) => std::mem::size_of::<Reordered>() + reordered.order.len() * 4,
        }
    }

    /// The same list in less memory: with a lead page if `frame` keeps one and its body
    /// shrinks by an eighth, the rest of the buffer packed in runs ([`compress::pack`]) if that
    /// saves an eighth (the first run alone, and all of them together). A reordered list keeps no lead page: a copy of its buffer is packed under it, if that
    /// saves an eighth (otherwise it stays as it is, reading the buffer it shares).
    pub fn compacted(&self, frame: Option<Frame>) -> ItemList {
        self.compacted_over(frame, None)
    }

    /// [`Self::compacted`], reusing the packed runs of `previous` (the list this one replaces)
    /// whose items are the same: a refresh after one item changed re-packs one run or a few,
    /// not the whole list.
    pub fn compacted_over(&self, frame: Option<Frame>, previous: Option<Replaced>) -> ItemList {
        if self.is_compacted() {
            return self.clone();
        }
        if let Some(Reordered { base, order }) = self.reordered.as_deref() {
            let base = base.compacted_over(None, previous);
            if !base.is_compacted() {
                return self.clone();
            }
            return ItemList::over(SharedList::new(base), order.clone());
        }
        if let Some(led) = frame.and_then(|frame| self.with_lead(frame, previous)) {
            return led;
        }
        match self.pack_rest(0, self.stored_items(), previous) {
            Some((codec, packed)) => self.with_items(codec, &packed, None),
            None => self.clone(),
        }
    }

    /// `rest`, this plain list's items from position `lead_len` on, packed in runs of
    /// [`RUN_ITEMS`] (one run without its table, several after a table of their ends), each
    /// run `previous` holds with the same items taken as it is; None if a run does not pack
    /// (then the list stays plain).
    fn pack_rest(
        &self,
        lead_len: usize,
        rest: &[u8],
        previous: Option<Replaced>,
    ) -> Option<(Codec, Box<[u8]>)> {
        let runs = self.len().saturating_sub(lead_len).div_ceil(RUN_ITEMS);
        let rest_start = self.start(lead_len);
        let plain = |r: usize| {
            let (first, last) = run_bounds(self.len(), lead_len, r)?;
            rest.get(self.start(first) - rest_start..self.end(last) - rest_start)
        };
        let (codec, first) = compress::pack(plain(0)?)?;
        if runs <= 1 {
            return Some((codec, first));
        }
        // Runs `previous` keeps the same way, in the same places, with the same items.
        let reusable =
            previous.filter(|p| p.list.own_codec() == codec && p.list.lead_len() == lead_len);
        let mut packed = vec![first];
        for r in 1..runs {
            let (first, last) = run_bounds(self.len(), lead_len, r)?;
            let same = reusable
                .filter(|p| run_bounds(p.list.len(), lead_len, r) == Some((first, last)))
                .and_then(|p| {
                    let l = p.list;
                    let lengths_match = (first..=last)
                        .all(|q| self.end(q) - self.start(q) == l.end(q) - l.start(q));
                    lengths_match
                        .then(|| p.run_plain(r, first, last))
                        .flatten()
                        .filter(|held| plain(r) == Some(held.as_ref()))
                        .and_then(|_| l.run_packed(r))
                        .map(Box::from)
                });
            packed.push(match same {
                Some(kept) => {
                    #[cfg(test)]
                    tests::REUSED_RUNS.with(|n| n.set(n.get() + 1));
                    kept
                }
                None => compress::pack_as(codec, plain(r)?)?,
            });
        }
        let size: usize = packed.iter().map(|p| p.len()).sum();
        if !compress::saves_enough(runs * 4 + size, rest.len()) {
            return None;
        }
        let mut out = Vec::with_capacity(runs * 4 + size);
        push_runs(&mut out, &packed)?;
        Some((codec, out.into_boxed_slice()))
    }

    /// This list (a base packed in runs) with its items from position `at` on replaced by
    /// `items`, as many as they are: the lead page made again if they reach into it (for
    /// `frame`), the runs they reach into packed again, every other run taken as it is, so
    /// that a change of a few neighbouring items of a long list unpacks and packs a run or
    /// two, not the whole list. `parts` reads this list's items ([`Self::parts`]). None where
    /// the list is not a base packed in runs, the items run past its end, or a part does not
    /// unpack or pack (then the caller renders the list whole).
    pub(crate) fn with_span_replaced(
        &self,
        at: usize,
        items: &[Vec<u8>],
        frame: Frame,
        parts: &mut Parts<'_>,
    ) -> Option<ItemList> {
        let (n, codec, lead_len) = (self.len(), self.own_codec(), self.lead_len());
        let span = at..at.checked_add(items.len())?;
        if self.order().is_some() || codec == Codec::Plain || span.end > n || span.is_empty() {
            return None;
        }
        let new_item = |parts: &mut Parts<'_>, p: usize, out: &mut Vec<u8>| -> Option<()> {
            match span.contains(&p) {
                true => out.extend_from_slice(items.get(p - at)?),
                false => out.extend_from_slice(parts.item(p)?),
            }
            Some(())
        };
        let mut ends = Vec::with_capacity(n);
        let mut end = 0usize;
        for p in 0..n {
            let len = match span.contains(&p) {
                true => items.get(p - at)?.len(),
                false => self.end(p) - self.start(p),
            };
            let start = if p == 0 { 0 } else { end + 1 };
            end = start + len;
            ends.push(u32::try_from(end).ok()?);
        }
        let new_body;
        let lead = match self.lead() {
            Some(lead) if span.start < lead_len => {
                let mut items = Vec::new();
                for p in 0..lead_len {
                    if p > 0 {
                        items.push(b',');
                    }
                    new_item(parts, p, &mut items)?;
                }
                let items_start;
                (new_body, items_start) = lead_body(frame, frame.lead_count()?, &items)?;
                Some(Lead {
                    body: GzipRef::from(&new_body),
                    items_start,
                    len: lead.len,
                    echoes_count: lead.echoes_count,
                })
            }
            other => {
                #[cfg(test)]
                if other.is_some() {
                    tests::REUSED_LEADS.with(|n| n.set(n.get() + 1));
                }
                other
            }
        };
        let runs = self.runs();
        let mut packed: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(runs);
        let mut plain = Vec::new();
        for r in 0..runs {
            let (first, last) = run_bounds(n, lead_len, r)?;
            if last < span.start || first >= span.end {
                #[cfg(test)]
                tests::REUSED_RUNS.with(|n| n.set(n.get() + 1));
                packed.push(std::borrow::Cow::Borrowed(self.run_packed(r)?));
                continue;
            }
            plain.clear();
            for p in first..=last {
                if p > first {
                    plain.push(b',');
                }
                new_item(parts, p, &mut plain)?;
            }
            packed.push(std::borrow::Cow::Owned(
                compress::pack_as(codec, &plain)?.into_vec(),
            ));
        }
        let size: usize = packed.iter().map(|run| run.len()).sum();
        let mut items = Vec::with_capacity(runs * 4 + size);
        push_runs(&mut items, &packed)?;
        Some(ItemList::from_parts(&ends, &items, codec, lead))
    }

    /// Reads the items of the buffer this list reads, one part (the lead page, a run) unpacked
    /// when an item in it is first asked for.
    pub(crate) fn parts(&self) -> Parts<'_> {
        Parts::of(self.base())
    }

    /// How many items the lead page of the buffer this list reads holds (0 without one).
    fn lead_len(&self) -> usize {
        self.lead().map_or(0, |lead| lead.len as usize)
    }

    /// How many runs the items after the lead page are packed in: 0 for a list kept plain.
    fn runs(&self) -> usize {
        match self.codec() {
            Codec::Plain => 0,
            _ => self
                .len()
                .saturating_sub(self.lead_len())
                .div_ceil(RUN_ITEMS),
        }
    }

    /// Run `r` as kept.
    fn run_packed(&self, r: usize) -> Option<&[u8]> {
        let stored = self.stored_items();
        let runs = self.runs();
        if runs <= 1 {
            return (r == 0 && runs == 1).then_some(stored);
        }
        let end_of = |k: usize| {
            let at = k * 4;
            let bytes = stored.get(at..at + 4)?;
            Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
        };
        let start = if r == 0 { 0 } else { end_of(r - 1)? };
        stored.get(runs * 4..)?.get(start..end_of(r)?)
    }

    /// The plain bytes of run `r`: its items, comma-separated.
    fn run_plain(&self, r: usize) -> Option<Vec<u8>> {
        let (first, last) = run_bounds(self.len(), self.lead_len(), r)?;
        let len = self.end(last).checked_sub(self.start(first))?;
        compress::unpack(self.codec(), self.run_packed(r)?, len)
    }

    /// Whether the runs of a packed list are where its table says and no larger unpacked
    /// than deflate expands: what a list read back from a snapshot must show before a page
    /// sizes a buffer from its item ends.
    pub(crate) fn runs_fit(&self) -> bool {
        let runs = self.runs();
        if runs <= 1 {
            return true;
        }
        let stored = self.stored_items();
        let Some(data) = stored.len().checked_sub(runs * 4) else {
            return false;
        };
        let mut start = 0;
        for r in 0..runs {
            let Some(end) = stored
                .get(r * 4..r * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .map(|b| u32::from_le_bytes(b) as usize)
            else {
                return false;
            };
            let plain = run_bounds(self.len(), self.lead_len(), r)
                .map(|(first, last)| self.end(last).saturating_sub(self.start(first)));
            let fits = end > start
                && plain.is_some_and(|plain| {
                    plain <= (end - start).saturating_mul(compress::MAX_DEFLATE_RATIO)
                });
            if !fits {
                return false;
            }
            start = end;
        }
        start == data
    }

    /// The list with its lead page split off (see [`Lead`]); None where `frame` keeps none,
    /// the list is empty, reordered or already compacted, or the page would not shrink.
    fn with_lead(&self, frame: Frame, previous: Option<Replaced>) -> Option<ItemList> {
        let count = frame.lead_count()?;
        let len = usize::try_from(count).ok()?.min(self.len());
        if len == 0
            || self.reordered.is_some()
            || self.own_lead().is_some()
            || self.own_codec() != Codec::Plain
        {
            return None;
        }
        let items = self.stored_items();
        let split = self.end(len - 1);
        let (body, items_start) = lead_body(frame, count, items.get(..split)?)?;
        // The rest begins after the comma that follows the lead's last item.
        let rest = items.get(split + 1..).unwrap_or_default();
        let lead = Some(Lead {
            body: GzipRef::from(&body),
            items_start,
            len: u8::try_from(len).ok()?,
            echoes_count: frame.echoes_count(),
        });
        Some(match self.pack_rest(len, rest, previous) {
            Some((codec, packed)) => self.with_items(codec, &packed, lead),
            None => self.with_items(Codec::Plain, rest, lead),
        })
    }

    /// The lead page's body, if it is exactly page `page` of `count` items of this list: the
    /// page at offset 0, in the buffer's order, holding the lead's items and naming the
    /// lead's count where the endpoint echoes it.
    pub fn lead_page(&self, page: u64, count: u64) -> Option<GzipRef<'_>> {
        if self.order().is_some() {
            return None;
        }
        let lead = self.lead()?;
        // The page shows `count.min(len)` items, which must be the lead's. A lead never holds
        // more than its list, so the list's length matters only to a count past the lead's.
        let shown_is_lead = match count.cmp(&u64::from(lead.len)) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => self.len() == usize::from(lead.len),
        };
        let fits = page_offset(page, count) == 0
            && shown_is_lead
            && (!lead.echoes_count || count == LEAD_COUNT);
        fits.then_some(lead.body)
    }

    /// The plain buffer: the lead page's items and the rest, unpacked if need be (empty if
    /// a part is damaged, which one compressed here cannot be).
    fn buffer(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.lead().is_none() && self.codec() == Codec::Plain {
            return std::borrow::Cow::Borrowed(self.stored_items());
        }
        std::borrow::Cow::Owned(self.assembled().unwrap_or_default())
    }

    /// The plain buffer of a compacted list.
    fn assembled(&self) -> Option<Vec<u8>> {
        let total = self.total();
        let (mut out, rest_start) = match self.lead() {
            None => (Vec::with_capacity(total), 0),
            Some(lead) => {
                let lead_end = self.end((lead.len as usize).checked_sub(1)?);
                let start = lead.items_start as usize;
                let plain = lead.body.plain()?;
                let mut out = Vec::with_capacity(total);
                out.extend_from_slice(plain.get(start..start + lead_end)?);
                // The rest follows the comma after the lead's last item.
                (out, lead_end + 1)
            }
        };
        let rest_len = total.saturating_sub(rest_start);
        if rest_len > 0 {
            if self.lead().is_some() {
                out.push(b',');
            }
            match self.codec() {
                Codec::Plain => out.extend_from_slice(self.stored_items()),
                _ => {
                    let base = self.base();
                    for r in 0..base.runs() {
                        if r > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&base.run_plain(r)?);
                    }
                }
            }
        }
        Some(out)
    }

    /// The items of `list` in another order: `order[i]` is the index in `list` of item `i`.
    /// The buffer is shared, not copied: the new list reads the one `list` reads. None if
    /// `order` is not a permutation of `list`'s items.
    pub fn reordered(list: &SharedList, order: Vec<u32>) -> Option<ItemList> {
        let mut seen = vec![false; list.len()];
        for &i in &order {
            let slot = seen.get_mut(list.position(i as usize)?)?;
            if std::mem::replace(slot, true) {
                return None;
            }
        }
        if order.len() != list.len() {
            return None;
        }
        let order = order
            .into_iter()
            .map(|i| list.position(i as usize).map(|p| p as u32))
            .collect::<Option<Box<[u32]>>>()?;
        let base = match list.reordered.as_deref() {
            Some(reordered) => SharedList::clone(&reordered.base),
            None => SharedList::clone(list),
        };
        Some(ItemList::over(base, order))
    }

    /// The items of `base` (never itself reordered) in `order`, positions in `base`.
    fn over(base: SharedList, order: Box<[u32]>) -> ItemList {
        ItemList {
            data: Box::default(),
            reordered: Some(Box::new(Reordered { base, order })),
        }
    }

    /// Where item `i` of the list lies in the buffer's own order.
    fn position(&self, i: usize) -> Option<usize> {
        match self.order() {
            None => (i < self.len()).then_some(i),
            Some(order) => order.get(i).map(|&p| p as usize),
        }
    }

    /// Where item `p` of the buffer's own order starts.
    fn start(&self, p: usize) -> usize {
        if p == 0 {
            0
        } else {
            self.end(p - 1) + 1
        }
    }

    /// Appends page `page` (1-based) of `count` items to `out`, as JSON array contents:
    /// nothing past the end.
    pub fn write_page(&self, page: u64, count: u64, out: &mut Vec<u8>) {
        let skip = u64::try_from(page_offset(page, count)).unwrap_or(u64::MAX);
        self.write_slice(skip, count, out);
    }

    /// The list's positions `skip..skip + take` that exist.
    fn span(&self, skip: u64, take: u64) -> std::ops::Range<usize> {
        let len = self.len() as u64;
        skip.min(len) as usize..skip.saturating_add(take).min(len) as usize
    }

    /// Appends items `skip..skip + take` to `out`, as JSON array contents (no brackets).
    pub fn write_slice(&self, skip: u64, take: u64, out: &mut Vec<u8>) {
        let span = self.span(skip, take);
        if span.is_empty() {
            return;
        }
        if self.is_compacted() {
            // Only the parts the page shows are unpacked; a part that does not unpack (which
            // one packed here cannot) gives an empty page, not a broken one.
            let mut parts = Parts::of(self.base());
            let at = out.len();
            for (n, i) in span.enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                match self.position(i).and_then(|p| parts.item(p)) {
                    Some(item) => out.extend_from_slice(item),
                    None => {
                        out.truncate(at);
                        return;
                    }
                }
            }
            return;
        }
        let buffer = self.buffer();
        // `get`, not indexing: a buffer that failed to inflate (which one packed here cannot)
        // gives an empty page, not a panic.
        match self.order() {
            None => {
                let end = self.end(span.end - 1);
                if let Some(items) = buffer.get(self.start(span.start)..end) {
                    out.extend_from_slice(items);
                }
            }
            Some(order) => {
                for (n, &p) in order.get(span).unwrap_or_default().iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    let p = p as usize;
                    if let Some(item) = buffer.get(self.start(p)..self.end(p)) {
                        out.extend_from_slice(item);
                    }
                }
            }
        }
    }

    /// The length [`Self::write_slice`] appends, to size a buffer once.
    fn slice_len(&self, skip: u64, take: u64) -> usize {
        self.span(skip, take)
            .filter_map(|i| self.position(i))
            .map(|p| self.end(p).saturating_sub(self.start(p)) + 1)
            .sum()
    }

    /// The items in the list's order.
    fn items(&self) -> Vec<Vec<u8>> {
        let buffer = self.buffer();
        (0..self.len())
            .filter_map(|i| self.position(i))
            .map(|p| {
                let item = buffer.get(self.start(p)..self.end(p));
                item.unwrap_or_default().to_vec()
            })
            .collect()
    }
}

/// The list a new one replaces, whose packed runs of the same items the new one takes as they
/// are ([`ItemList::compacted_over`]).
#[derive(Debug, Clone, Copy)]
pub struct Replaced<'a> {
    /// The buffer the replaced list reads.
    list: &'a ItemList,
    /// That buffer's plain bytes, where the caller has them unpacked already.
    plain: Option<&'a [u8]>,
}

impl<'a> Replaced<'a> {
    /// `list`, whose runs are unpacked to be compared.
    pub fn packed(list: &'a ItemList) -> Replaced<'a> {
        Replaced {
            list: list.base(),
            plain: None,
        }
    }

    /// `list`, with its own plain buffer ([`ItemList::own_items`]) at hand (a buffer of
    /// another length is not taken for it).
    pub fn unpacked(list: &'a ItemList, plain: &'a [u8]) -> Replaced<'a> {
        let list = list.base();
        Replaced {
            list,
            plain: (plain.len() == list.total()).then_some(plain),
        }
    }

    /// The plain bytes of run `r`, items `first` to `last`.
    fn run_plain(&self, r: usize, first: usize, last: usize) -> Option<std::borrow::Cow<'a, [u8]>> {
        let l = self.list;
        match self.plain {
            Some(plain) => plain
                .get(l.start(first)..l.end(last))
                .map(std::borrow::Cow::Borrowed),
            None => l.run_plain(r).map(std::borrow::Cow::Owned),
        }
    }
}

/// The gzip body of page 1 of `count` items in `frame` holding `items` (comma-separated): a
/// list's lead page ([`Lead`]), and where the items begin in its plain bytes.
fn lead_body(frame: Frame, count: u64, items: &[u8]) -> Option<(Gzipped, u16)> {
    let head = frame.head(Echo {
        page: 1,
        count,
        digits: None,
    });
    let mut body = Vec::with_capacity(head.len() + items.len() + 2);
    body.extend_from_slice(&head);
    body.extend_from_slice(items);
    body.extend_from_slice(b"]}");
    let (gz, codes) = gzip_whole(&body, frame.lead_codes())?;
    let gz = Gzipped {
        gz,
        digest: digest(&body),
        codes,
    };
    Some((gz, u16::try_from(head.len()).ok()?))
}

/// Appends packed `runs` as a list keeps them: one run as it is, several after a table of
/// their ends. None past 4 GiB.
fn push_runs(out: &mut Vec<u8>, runs: &[impl AsRef<[u8]>]) -> Option<()> {
    if runs.len() > 1 {
        let mut end = 0u32;
        for run in runs {
            end = end.checked_add(u32::try_from(run.as_ref().len()).ok()?)?;
            out.extend_from_slice(&end.to_le_bytes());
        }
    }
    for run in runs {
        out.extend_from_slice(run.as_ref());
    }
    Some(())
}

/// The place of item `id` in an order of `n` items that descends by a key the items show: a
/// binary search for the first place whose key is not above the sought one, then a look
/// through the items that show the sought key (which the order ranks by what they do not
/// show) for `id`. `against(at)` is the sought key against that of the item at place `at`
/// (`Less`: the item's is greater, so it comes before), with the item's id; None where an
/// item cannot be read, or `id` is not where its key says.
pub(crate) fn place_by_key(
    n: usize,
    id: i64,
    mut against: impl FnMut(usize) -> Option<(std::cmp::Ordering, i64)>,
) -> Option<usize> {
    let (mut low, mut high) = (0, n);
    while low < high {
        let mid = low + (high - low) / 2;
        match against(mid)?.0 {
            std::cmp::Ordering::Less => low = mid + 1,
            _ => high = mid,
        }
    }
    (low..n).find_map(|at| match against(at) {
        Some((std::cmp::Ordering::Equal, item)) => (item == id).then_some(Some(at)),
        _ => Some(None),
    })?
}

/// The first and last positions of run `r` of a list of `len` items whose lead page holds
/// `lead_len`; None past the last run.
fn run_bounds(len: usize, lead_len: usize, r: usize) -> Option<(usize, usize)> {
    let first = lead_len.checked_add(r.checked_mul(RUN_ITEMS)?)?;
    (first < len).then(|| (first, (first + RUN_ITEMS).min(len) - 1))
}

/// The items of a compacted list (a base, never reordered), each part it is kept in (the lead
/// page, a run) unpacked once, when an item in it is first asked for.
pub(crate) struct Parts<'a> {
    list: &'a ItemList,
    lead: Option<Option<Vec<u8>>>,
    runs: HashMap<usize, Option<Vec<u8>>>,
}

impl<'a> Parts<'a> {
    fn of(list: &'a ItemList) -> Parts<'a> {
        Parts {
            list,
            lead: None,
            runs: HashMap::new(),
        }
    }

    /// Item `p` of the buffer's own order.
    pub(crate) fn item(&mut self, p: usize) -> Option<&[u8]> {
        let list = self.list;
        let (start, end) = (list.start(p), list.end(p));
        let lead_len = list.lead_len();
        if p < lead_len {
            let lead = list.lead()?;
            let plain = self
                .lead
                .get_or_insert_with(|| lead.body.plain())
                .as_deref()?;
            let at = lead.items_start as usize;
            return plain.get(at + start..at + end);
        }
        let (run, first) = match list.codec() {
            // The rest plainly, after the lead page.
            Codec::Plain => {
                return list
                    .stored_items()
                    .get(start - list.start(lead_len)..end - list.start(lead_len))
            }
            _ => {
                let r = (p - lead_len) / RUN_ITEMS;
                (r, lead_len + r * RUN_ITEMS)
            }
        };
        let plain = self
            .runs
            .entry(run)
            .or_insert_with(|| list.run_plain(run))
            .as_deref()?;
        let offset = list.start(first);
        plain.get(start - offset..end - offset)
    }
}

/// Two lists are equal when they hold the same items in the same order, however stored: a
/// reordered or packed list equals the same items rendered plainly in that order.
impl PartialEq for ItemList {
    fn eq(&self, other: &ItemList) -> bool {
        self.len() == other.len() && self.items() == other.items()
    }
}

impl Eq for ItemList {}

/// Builds an [`ItemList`] one item at a time.
#[derive(Debug, Default)]
pub struct ItemListBuilder {
    json: Vec<u8>,
    ends: Vec<u32>,
}

impl ItemListBuilder {
    /// The buffer to write the next item into; call [`Self::end_item`] after writing it.
    pub fn next_item(&mut self) -> &mut Vec<u8> {
        if !self.ends.is_empty() {
            self.json.push(b',');
        }
        &mut self.json
    }

    pub fn end_item(&mut self) {
        // Bodies over 4 GB are not a thing this server makes; saturate rather than wrap.
        self.ends
            .push(u32::try_from(self.json.len()).unwrap_or(u32::MAX));
    }

    pub fn finish(self) -> ItemList {
        ItemList::from_parts(&self.ends, &self.json, Codec::Plain, None)
    }
}

/// What a page's head echoes of the request's `page` and `count`: the numbers, or, where the
/// request gave one past 2^64-1, both as it wrote them.
#[derive(Debug, Clone, Copy)]
struct Echo<'a> {
    page: u64,
    count: u64,
    digits: Option<&'a PagingDigits>,
}

impl Echo<'_> {
    fn push_page(&self, out: &mut Vec<u8>) {
        match self.digits {
            Some(d) => out.extend_from_slice(d.page.as_bytes()),
            None => json::push_int(out, self.page),
        }
    }

    fn push_count(&self, out: &mut Vec<u8>) {
        match self.digits {
            Some(d) => out.extend_from_slice(d.count.as_bytes()),
            None => json::push_int(out, self.count),
        }
    }

    /// `(page-1)*count`, which `/reviews` echoes as its `page`.
    fn push_offset(&self, out: &mut Vec<u8>) {
        match self.digits {
            Some(d) => crate::digits::push_page_offset(out, &d.page, &d.count),
            None => json::push_uint(out, page_offset(self.page, self.count)),
        }
    }
}

/// The zero-based row offset of page `page` (1-based) of `count` rows, in 128 bits: the
/// product of two numbers up to 2^64-1 (past that, the echo computes its own, from the digits).
pub fn page_offset(page: u64, count: u64) -> u128 {
    u128::from(page.saturating_sub(1)) * u128::from(count)
}

/// A key of a rendered item (`,"date":`) with its searcher, built once where the key is
/// declared (`static DATE: ItemKey = item_key!(b",\"date\":");`): `memmem::find` builds one
/// for every call, which costs more than the search in a short item, and a vote's refresh
/// cuts every item of a product's reviews at four keys.
pub(crate) struct ItemKey(pub(crate) std::sync::LazyLock<memchr::memmem::Finder<'static>>);

/// An [`ItemKey`] for the bytes `$key`, to declare as a `static`.
macro_rules! item_key {
    ($key:expr) => {
        $crate::render::ItemKey(std::sync::LazyLock::new(|| {
            memchr::memmem::Finder::new($key)
        }))
    };
}
pub(crate) use item_key;

/// Where the first `key` at or after `from` begins in `item`, an item this module rendered: a
/// key is found by its quotes, and inside a JSON string every quote is escaped, so only the
/// key itself matches.
pub(crate) fn key_at(item: &[u8], from: usize, key: &ItemKey) -> Option<usize> {
    Some(from + key.0.find(item.get(from..)?)?)
}

/// Where the value of the first `key` at or after `from` begins in `item` ([`key_at`]).
pub(crate) fn value_at(item: &[u8], from: usize, key: &ItemKey) -> Option<usize> {
    Some(key_at(item, from, key)? + key.0.needle().len())
}

/// The integer `digits` spell.
pub(crate) fn int_of<T: std::str::FromStr>(digits: &[u8]) -> Option<T> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The id an item begins with: the integer after `prefix` (`{"review_id":`), up to its comma.
pub(crate) fn leading_id(item: &[u8], prefix: &[u8]) -> Option<i64> {
    let rest = item.strip_prefix(prefix)?;
    int_of(rest.get(..rest.iter().position(|&b| b == b',')?)?)
}

/// A map by row id. foldhash rather than std's SipHash: the ids are the database's (sequences
/// and the data set's), never a client's choice that could collide on purpose, and grouping
/// rows is a warm-up's most frequent map work.
pub(crate) type ById<V> = HashMap<i64, V, foldhash::fast::RandomState>;

/// Groups rows by a parent id (a photo's review or answer, an answer's question), keeping
/// their order within each group.
pub(crate) fn group_by<T>(rows: &[T], parent: impl Fn(&T) -> i64) -> ById<Vec<&T>> {
    let mut groups = ById::with_capacity_and_hasher(rows.len(), Default::default());
    for row in rows {
        groups.entry(parent(row)).or_insert_with(Vec::new).push(row);
    }
    groups
}

/// Photos grouped by the row they belong to (a review, an answer), each group in the order
/// given: grouped once for a product, then read for each of its lists.
pub struct PhotosByOwner<'a>(ById<Vec<&'a PhotoUrlRow>>);

impl<'a> PhotosByOwner<'a> {
    pub fn new(photos: &'a [PhotoUrlRow]) -> PhotosByOwner<'a> {
        PhotosByOwner(group_by(photos, |p| p.owner_id))
    }

    /// The photos of the row `owner`, if it has any.
    pub(crate) fn of(&self, owner: i64) -> Option<&Vec<&'a PhotoUrlRow>> {
        self.0.get(&owner)
    }
}

/// `[{"id":2,"url":"…"}]`: the photos of a review or of an answer in `/answers`.
pub(crate) fn push_id_url_photos(out: &mut Vec<u8>, photos: Option<&Vec<&PhotoUrlRow>>) {
    out.push(b'[');
    for (i, p) in photos.into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        json::push_int(out, p.id);
        out.extend_from_slice(b",\"url\":");
        json::push_opt_str(out, p.url.as_deref());
        out.push(b'}');
    }
    out.push(b']');
}

/// Page `page` of `count` items of `list`, wrapped in the bytes before and after it.
pub fn envelope(head: &[u8], list: &ItemList, page: u64, count: u64, tail: &[u8]) -> Bytes {
    let skip = u64::try_from(page_offset(page, count)).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(head.len() + list.slice_len(skip, count) + tail.len());
    out.extend_from_slice(head);
    list.write_slice(skip, count, &mut out);
    out.extend_from_slice(tail);
    Bytes::from(out)
}

/// A rendered body frozen for the cache, holding no spare capacity: a body grown by pushes
/// holds up to twice its length, and the cache keeps millions of them.
pub fn frozen(body: Vec<u8>) -> Bytes {
    Bytes::from(body.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    thread_local! {
        /// Runs [`ItemList::compacted_over`] took from the list it replaces, on this thread.
        pub(super) static REUSED_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Lead pages [`ItemList::with_span_replaced`] took as they were, on this thread.
        pub(super) static REUSED_LEADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    use super::*;

    #[test]
    fn a_packed_body_is_the_same_value_as_its_clone_and_not_as_another() {
        compress::test_dictionary(DictionaryKind::Bodies);
        let plain = Bytes::from(compress::tests::product(3));
        let packed = Rendered::Json(plain.clone()).compacted_as(Compaction::Dense, None);
        let Rendered::Packed(p) = &packed else {
            panic!("not packed: {packed:?}")
        };
        assert_eq!(p.digest, digest(&plain));
        assert_eq!(packed.plain(), Some(plain.clone()));
        assert!(packed.weight() < plain.len() / 2);
        // A clone (an on-demand entry's, as the sweep reads it) is the value it was cloned
        // from; another body is not.
        assert!(packed.is_same_value(&packed.clone()));
        let other = Rendered::Json(Bytes::from(compress::tests::product(4)))
            .compacted_as(Compaction::Dense, None);
        assert!(!packed.is_same_value(&other));
    }

    #[test]
    fn a_compacted_body_serves_the_same_bytes_in_less_memory() {
        let plain = Bytes::from(br#"{"name":"a style","photos":[]}"#.repeat(30));
        let body = Rendered::Json(plain.clone());
        let compact = body.clone().compacted(None);
        let Rendered::Gzip(g) = &compact else {
            panic!("not compacted: {compact:?}")
        };
        assert_eq!(g.digest, digest(&plain));
        assert!(compact.weight() < body.weight() / 4);
        assert_eq!(compact.plain(), Some(plain));
        // A clone copies the kept bytes, and is still the value it was cloned from (as the sweep
        // reads an on-demand entry); another body is not.
        assert!(compact.is_same_value(&compact.clone()));
        let other = Rendered::Json(Bytes::from(br#"{"name":"another","photos":[]}"#.repeat(30)));
        assert!(!compact.is_same_value(&other.compacted(None)));
        assert_eq!(compact, body);
        assert_ne!(compact, Rendered::Json(Bytes::from_static(b"[]")));
        let small = Rendered::Json(Bytes::from_static(b"[1,2]"));
        assert!(matches!(small.clone().compacted(None), Rendered::Json(_)));
        assert_eq!(Rendered::NotFound.compacted(None), Rendered::NotFound);
    }

    fn slice(list: &ItemList, skip: u64, take: u64) -> Vec<u8> {
        let mut out = Vec::new();
        list.write_slice(skip, take, &mut out);
        assert_eq!(
            out.len() + usize::from(!out.is_empty()),
            list.slice_len(skip, take)
        );
        out
    }

    fn list_of(items: &[&str]) -> ItemList {
        let mut b = ItemListBuilder::default();
        for item in items {
            b.next_item().extend_from_slice(item.as_bytes());
            b.end_item();
        }
        b.finish()
    }

    #[test]
    fn slices_pages() {
        let list = list_of(&["{\"a\":1}", "2", "[3]"]);
        assert_eq!(slice(&list, 0, 5), b"{\"a\":1},2,[3]");
        assert_eq!(slice(&list, 1, 1), b"2");
        assert_eq!(slice(&list, 1, u64::MAX), b"2,[3]");
        assert_eq!(slice(&list, 2, 1), b"[3]");
        assert_eq!(slice(&list, 3, 1), b"");
        assert_eq!(slice(&list, u64::MAX, u64::MAX), b"");
        assert_eq!(slice(&ItemList::default(), 0, 5), b"");
    }

    #[test]
    fn a_reordered_list_shares_the_buffer_and_equals_a_list_rendered_in_its_order() {
        let list = SharedList::new(list_of(&[
            "\"a review\"",
            "\"another review\"",
            "\"a third\"",
        ]));
        let reordered =
            SharedList::new(ItemList::reordered(&list, vec![2, 0, 1]).expect("a permutation"));
        assert!(reordered.shares_buffer_with(&list), "shared, not copied");
        assert!(reordered.data.is_empty());
        assert_eq!(
            slice(&reordered, 0, 5),
            b"\"a third\",\"a review\",\"another review\""
        );
        assert_eq!(slice(&reordered, 1, 1), b"\"a review\"");
        assert_eq!(slice(&reordered, 2, 9), b"\"another review\"");
        assert_eq!(
            *reordered,
            list_of(&["\"a third\"", "\"a review\"", "\"another review\""])
        );
        assert_ne!(*reordered, *list);
        assert_eq!(reordered.weight(), std::mem::size_of::<Reordered>() + 3 * 4);
        // Reordering a reordered list composes the orders.
        let back = ItemList::reordered(&reordered, vec![1, 2, 0]).expect("a permutation");
        assert_eq!(back, *list);
        assert!(
            back.shares_buffer_with(&list),
            "the base, not the reordered list"
        );
        // Deflated, then reordered: the same pages, from a buffer that is smaller.
        let long: Vec<String> = (0..40)
            .map(|i| format!("{{\"review_id\":{i},\"body\":\"the same words again\"}}"))
            .collect();
        let long = SharedList::new(list_of(
            &long.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        let deflated = SharedList::new(long.compacted(None));
        assert!(deflated.is_compacted() && deflated.weight() < long.weight() / 2);
        assert_eq!(deflated, long);
        // A reordered list compacted: its buffer deflated under it, the order kept.
        let newest = SharedList::new(
            ItemList::reordered(&long, (0..40).rev().collect()).expect("a permutation"),
        );
        let compacted = newest.compacted(Some(Frame::Reviews(1)));
        assert!(compacted.is_compacted() && !compacted.has_lead_page());
        assert_eq!(compacted, *newest);
        // Lists too short to shrink stay as they are, the orders still sharing one buffer.
        let short = SharedList::new(list_of(&["\"a\"", "\"b\""]));
        let newest =
            SharedList::new(ItemList::reordered(&short, vec![1, 0]).expect("a permutation"));
        let frame = Some(Frame::Reviews(1));
        let (Rendered::List(h), Rendered::List(n)) = (
            Rendered::List(SharedList::clone(&short)).compacted(frame),
            Rendered::List(SharedList::clone(&newest)).compacted(frame),
        ) else {
            panic!("lists")
        };
        assert!(SharedList::ptr_eq(&h, &short) && SharedList::ptr_eq(&n, &newest));
        assert!(n.shares_buffer_with(&h));
        assert!(newest.compacted(frame).shares_buffer_with(&short));
        assert_eq!(slice(&deflated, 7, 3), slice(&long, 7, 3));
        let order: Vec<u32> = (0..40).rev().collect();
        assert_eq!(
            ItemList::reordered(&deflated, order.clone()),
            ItemList::reordered(&long, order.clone())
        );
        assert_eq!(
            slice(
                &ItemList::reordered(&deflated, order.clone()).expect("a permutation"),
                5,
                2
            ),
            slice(
                &ItemList::reordered(&long, order).expect("a permutation"),
                5,
                2
            )
        );
        for bad in [vec![0, 0, 1], vec![0, 1], vec![0, 1, 3], vec![0, 1, 2, 0]] {
            assert!(ItemList::reordered(&list, bad.clone()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_list_is_one_small_box_and_one_allocation() {
        // The catalog holds 6.5 million lists at full scale: with its count, a list's box is
        // 32 bytes, mimalloc's 32-byte class (48 while a list was 32 bytes in a `std` `Arc`).
        assert!(std::mem::size_of::<ItemList>() <= 24);
        assert_eq!(std::mem::size_of::<SharedList>(), 8);
        // The box: one count and the list.
        assert!(std::mem::size_of::<usize>() + std::mem::size_of::<ItemList>() <= 32);
        // What another order adds, boxed apart (a million of them): 24 bytes, mimalloc's
        // 24-byte class.
        assert!(std::mem::size_of::<Reordered>() <= 24);
        let list = list_of(&["{\"answer_id\":1}", "{\"answer_id\":2}"]);
        assert!(list.reordered.is_none());
        assert_eq!(list.data.len(), LIST_HEAD + 2 * 4 + list.total());
        assert_eq!(list.weight(), list.data.len());
        assert_eq!(slice(&list, 0, 2), b"{\"answer_id\":1},{\"answer_id\":2}");
        // A lead page is in the list's own data, not in a box and a member of its own (a
        // million and a half of them at full scale).
        for n in [3, 5, 40] {
            let led = reviews(n).compacted(Some(Frame::Reviews(1)));
            let lead = led.lead_page(1, 5).expect("a lead page");
            assert!(led.reordered.is_none());
            let data = led.data.as_ptr_range();
            let gz = lead.gz.as_ptr_range();
            assert!(data.start <= gz.start && gz.end <= data.end, "{n} items");
            assert_eq!(led.weight(), led.data.len());
            assert_eq!(
                led.data.len(),
                LIST_HEAD + LEAD_HEAD + lead.gz.len() + n * 4 + led.stored_items().len()
            );
        }
    }

    #[test]
    fn a_whole_body_is_40_bytes() {
        // An on-demand entry holds a `Rendered`: the bytes in a box, not `Bytes`, keep it small
        // (docs/benchmarks.md, Warm-up). The catalog keeps a whole body as one allocation of
        // its own ([`kept::Kept`]), and a lead page in its list's data.
        assert!(std::mem::size_of::<Rendered>() <= 40);
    }

    fn reviews(n: usize) -> ItemList {
        let items: Vec<String> = (0..n)
            .map(|i| {
                let words = "the same words again and again ".repeat(4);
                format!("{{\"review_id\":{i},\"body\":\"{words}\"}}")
            })
            .collect();
        list_of(&items.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn a_lead_page_is_kept_gzip_ready_and_every_page_is_still_cut_right() {
        for n in [1, 4, 5, 6, 13] {
            let plain = SharedList::new(reviews(n));
            let frame = Frame::Reviews(42);
            let led = SharedList::new(plain.compacted(Some(frame)));
            assert!(led.has_lead_page(), "{n} items");
            assert_eq!(*led, *plain, "{n} items");
            for (page, count) in [(1, 5), (1, 1), (2, 5), (1, 100), (3, 2), (0, 5), (9, 9)] {
                assert_eq!(
                    frame.page(&led, page, count),
                    frame.page(&plain, page, count),
                    "{n} items, page {page} of {count}"
                );
            }
            // The lead answers page 1 of 5 (page 0 is the same offset), in the buffer's order.
            let lead = led.lead_page(1, 5).expect("page 1 of 5");
            assert_eq!(lead.plain().unwrap(), frame.page(&plain, 1, 5));
            assert_eq!(lead.digest, digest(&frame.page(&plain, 1, 5)));
            assert!(led.lead_page(0, 5).is_some());
            for (page, count) in [(2, 5), (1, 4), (1, 6)] {
                assert!(
                    led.lead_page(page, count).is_none(),
                    "{n}: {page} of {count}"
                );
            }
            let newest = ItemList::reordered(&led, (0..n as u32).rev().collect()).unwrap();
            assert!(newest.lead_page(1, 5).is_none(), "another order");
            assert!(newest.shares_buffer_with(&led));
            assert_eq!(
                newest,
                ItemList::reordered(&plain, (0..n as u32).rev().collect()).unwrap()
            );
        }
        // A question's page names no count: the lead answers any count that shows its items.
        let questions = Frame::Questions(7);
        let three = reviews(3).compacted(Some(questions));
        assert!(three.lead_page(1, 100).is_some() && three.lead_page(1, 3).is_some());
        assert!(three.lead_page(1, 2).is_none() && three.lead_page(2, 100).is_none());
        let lead = three.lead_page(1, 100).unwrap();
        assert_eq!(lead.plain().unwrap(), questions.page(&reviews(3), 1, 100));
        // Answers keep no lead; nor does an empty list.
        assert!(!reviews(9)
            .compacted(Some(Frame::Answers(1)))
            .has_lead_page());
        assert!(!reviews(0)
            .compacted(Some(Frame::Reviews(1)))
            .has_lead_page());
        let long = reviews(40);
        assert!(long.compacted(Some(Frame::Reviews(1))).weight() < long.weight() / 2);
    }

    /// `n` items of varied lengths, `changed` ones (by position) with other text.
    fn varied(n: usize, changed: &[usize]) -> ItemList {
        let items: Vec<String> = (0..n)
            .map(|i| {
                let words = "words again ".repeat(1 + i % 7);
                let mark = if changed.contains(&i) {
                    "changed"
                } else {
                    "same"
                };
                format!("{{\"id\":{i},\"body\":\"{words}{mark}\"}}")
            })
            .collect();
        list_of(&items.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `plain` packed in runs of deflate with no lead page: as a list packed before the
    /// dictionary was trained is kept.
    fn deflated_in_runs(plain: &ItemList) -> ItemList {
        let items = plain.stored_items();
        let runs: Vec<Vec<u8>> = (0..)
            .map_while(|r| run_bounds(plain.len(), 0, r))
            .map(|(first, last)| {
                let run = &items[plain.start(first)..plain.end(last)];
                compress::pack_as(Codec::Deflate, run).unwrap().into_vec()
            })
            .collect();
        let mut data = Vec::new();
        push_list_head(&mut data, plain.len(), Codec::Deflate, None);
        data.extend_from_slice(plain.ends_bytes());
        push_runs(&mut data, &runs).unwrap();
        let list = ItemList {
            data: data.into_boxed_slice(),
            reordered: None,
        };
        assert_eq!(list, *plain);
        list
    }

    #[test]
    fn only_a_list_packed_in_runs_as_a_fresh_render_packs_it_is_changed_in_place() {
        compress::test_dictionary(DictionaryKind::Lists);
        let frame = Frame::Questions(3);
        let plain = varied(4 * RUN_ITEMS, &[]);
        let kept = |compaction: Compaction, list: &ItemList| match Rendered::List(SharedList::new(
            list.clone(),
        ))
        .compacted_as(compaction, Some(frame))
        {
            Rendered::List(list) => (*list).clone(),
            other => panic!("not a list: {other:?}"),
        };
        let (all, dense) = (
            kept(Compaction::All, &plain),
            kept(Compaction::Dense, &plain),
        );
        assert!(Compaction::All.keeps_in_runs(&all, frame));
        assert!(Compaction::Dense.keeps_in_runs(&dense, frame));
        // A lead page where the compaction keeps none, or none where it keeps one.
        assert!(!Compaction::Dense.keeps_in_runs(&all, frame));
        assert!(!Compaction::All.keeps_in_runs(&dense, frame));
        // Lists the compaction does not pack, or a list kept plain.
        for compaction in [Compaction::Bodies, Compaction::None] {
            assert!(!compaction.keeps_in_runs(&all, frame));
        }
        assert!(!Compaction::All.keeps_in_runs(&plain, frame));
        // Packed in one run.
        let short = kept(Compaction::Dense, &varied(RUN_ITEMS, &[]));
        assert_eq!((short.codec(), short.runs()), (Codec::Dictionary, 1));
        assert!(!Compaction::Dense.keeps_in_runs(&short, frame));
        // Deflated in runs, as before the dictionary was trained.
        let deflated = deflated_in_runs(&plain);
        assert!(deflated.runs() > 1);
        assert!(!Compaction::Dense.keeps_in_runs(&deflated, frame));
    }

    #[test]
    fn a_long_list_is_packed_in_runs_and_every_page_is_still_cut_right() {
        for n in [RUN_ITEMS, RUN_ITEMS + 1, 3 * RUN_ITEMS + 7, 200] {
            let plain = SharedList::new(varied(n, &[]));
            for frame in [None, Some(Frame::Reviews(4))] {
                let packed = SharedList::new(plain.compacted(frame));
                assert!(packed.is_compacted() && packed.runs_fit());
                let rest = n - packed.lead_len();
                assert_eq!(packed.runs(), rest.div_ceil(RUN_ITEMS), "{n} items");
                assert_eq!(*packed, *plain);
                let order: Vec<u32> = (0..n as u32).map(|i| (i * 7) % n as u32).collect();
                let reordered = (order.iter().collect::<std::collections::HashSet<_>>().len() == n)
                    .then(|| {
                        (
                            ItemList::reordered(&packed, order.clone()).unwrap(),
                            ItemList::reordered(&plain, order).unwrap(),
                        )
                    });
                for (page, count) in [(1, 5), (2, 5), (1, 1), (7, 3), (1, 1000), (2, 31), (4, 33)] {
                    let frame = Frame::Reviews(4);
                    assert_eq!(
                        frame.page(&packed, page, count),
                        frame.page(&plain, page, count),
                        "{n} items, page {page} of {count}"
                    );
                    if let Some((packed, plain)) = &reordered {
                        assert_eq!(
                            frame.page(packed, page, count),
                            frame.page(plain, page, count)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_refresh_re_packs_only_the_runs_whose_items_changed() {
        // Another test may install the list dictionary at any time: installed first, every
        // list here packs against it.
        compress::test_dictionary(DictionaryKind::Lists);
        let n = 5 * RUN_ITEMS;
        let frame = Some(Frame::Reviews(4));
        let before = varied(n, &[]).compacted(frame);
        let runs = before.runs();
        assert_eq!(runs, (n - LEAD_COUNT as usize).div_ceil(RUN_ITEMS));
        // One item of the third run changed: the other runs but the first (packed afresh,
        // for its codec) are taken from the list it replaces, and it reads the same.
        let changed = LEAD_COUNT as usize + 2 * RUN_ITEMS + 3;
        let after = varied(n, &[changed]);
        REUSED_RUNS.with(|r| r.set(0));
        let packed = after.compacted_over(frame, Some(Replaced::packed(&before)));
        assert_eq!(REUSED_RUNS.with(|r| r.get()), runs - 2);
        assert_eq!(packed, after);
        assert_ne!(packed, before);
        // The same with the replaced list's plain buffer at hand, as a revote has it.
        let plain = before.own_items().unwrap();
        REUSED_RUNS.with(|r| r.set(0));
        let packed = after.compacted_over(frame, Some(Replaced::unpacked(&before, &plain)));
        assert_eq!(REUSED_RUNS.with(|r| r.get()), runs - 2);
        assert_eq!(packed, after);
        // An item added at the end: every run before the last is the same.
        let longer = varied(n + 1, &[]);
        REUSED_RUNS.with(|r| r.set(0));
        let packed = longer.compacted_over(frame, Some(Replaced::packed(&before)));
        assert_eq!(REUSED_RUNS.with(|r| r.get()), runs - 2);
        assert_eq!(packed, longer);
        // Nothing of another list is taken: an item of each run changed.
        let all: Vec<usize> = (0..n).step_by(RUN_ITEMS / 2).collect();
        let other = varied(n, &all);
        REUSED_RUNS.with(|r| r.set(0));
        assert_eq!(
            other.compacted_over(frame, Some(Replaced::packed(&before))),
            other
        );
        assert_eq!(REUSED_RUNS.with(|r| r.get()), 0);
        // Nor of the same items with no lead page: its runs start elsewhere.
        let unled = varied(n, &[]).compacted(None);
        let plain = unled.own_items().unwrap();
        for previous in [Replaced::packed(&unled), Replaced::unpacked(&unled, &plain)] {
            REUSED_RUNS.with(|r| r.set(0));
            assert_eq!(after.compacted_over(frame, Some(previous)), after);
            assert_eq!(REUSED_RUNS.with(|r| r.get()), 0);
        }
    }
}
