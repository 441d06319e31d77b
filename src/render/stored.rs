//! Rendered bodies as a catalog snapshot stores them (`cache::snapshot`): the bytes a body is
//! kept in, written as they are, and read back checked, so that a damaged or foreign file can
//! make a restore fail but never make a body that panics or serves out of bounds.
//!
//! A product's reviews in the newest order share the helpful order's buffer in memory; the
//! snapshot keeps that sharing, writing the newest order as its index into the list before it.

use bytes::Bytes;

use super::compress::{self, Codec, DictionaryKind};
use super::shared_codes::CodesKind;
use super::{GzipRef, Gzipped, ItemList, Lead, PackedBody, Rendered, SharedList, LEAD_COUNT};

const JSON: u8 = 0;
const GZIP: u8 = 1;
const LIST: u8 = 2;
const NOT_FOUND: u8 = 3;
/// A list in another order over the previous record's buffer.
const REORDERED: u8 = 4;
/// A whole body packed against the body dictionary.
const PACKED: u8 = 5;
/// A whole body gzipped in its kind's shared code (which the snapshot stores before its
/// bodies).
const CODED: u8 = 6;

const DEFLATED: u8 = 1;
const ORDERED: u8 = 2;
const LED: u8 = 4;
/// Packed against the process's list dictionary (which the snapshot stores before its bodies).
const DICTIONARY: u8 = 8;

/// The dictionary `body` was packed against, if any: a snapshot holding it must hold that
/// dictionary too.
pub fn dictionary_of(body: &Rendered) -> Option<DictionaryKind> {
    match body {
        Rendered::List(list) if list.codec() == Codec::Dictionary => Some(DictionaryKind::Lists),
        Rendered::Packed(_) => Some(DictionaryKind::Bodies),
        _ => None,
    }
}

/// The shared code `body` was written in, if any: a snapshot holding it must hold that code
/// too.
pub fn codes_of(body: &Rendered) -> Option<CodesKind> {
    match body {
        Rendered::Gzip(g) => g.codes,
        Rendered::List(list) => list.lead().and_then(|lead| lead.body.codes),
        _ => None,
    }
}

/// Bytes that do not describe a body this build could have written.
#[derive(Debug, thiserror::Error)]
#[error("a stored body is damaged: {0}")]
pub struct Damaged(pub &'static str);

/// Appends `body` to `out`. `previous` is the list written just before, if any: a list that
/// shares its buffer is written as an index into it.
pub fn encode(body: &Rendered, previous: Option<&ItemList>, out: &mut Vec<u8>) {
    match body {
        Rendered::Json(json) => {
            out.push(JSON);
            put_bytes(out, json);
        }
        Rendered::Gzip(gz) => {
            match gz.codes {
                None => out.push(GZIP),
                Some(kind) => {
                    out.push(CODED);
                    out.push(CodesKind::byte_of(Some(kind)));
                }
            }
            out.extend_from_slice(&gz.digest.to_le_bytes());
            put_bytes(out, &gz.gz);
        }
        Rendered::Packed(p) => {
            out.push(PACKED);
            out.extend_from_slice(&p.digest.to_le_bytes());
            out.extend_from_slice(&p.len.to_le_bytes());
            put_bytes(out, &p.packed);
        }
        Rendered::NotFound => out.push(NOT_FOUND),
        Rendered::List(list) => match (list.order(), previous) {
            (Some(order), Some(base))
                if base.order().is_none() && list.shares_buffer_with(base) =>
            {
                out.push(REORDERED);
                put_u32s(out, order);
            }
            _ => {
                out.push(LIST);
                encode_list(list, out);
            }
        },
    }
}

fn encode_list(list: &ItemList, out: &mut Vec<u8>) {
    let mut flags = 0;
    for (set, flag) in [
        (list.codec() == Codec::Deflate, DEFLATED),
        (list.codec() == Codec::Dictionary, DICTIONARY),
        (list.order().is_some(), ORDERED),
        (list.lead().is_some(), LED),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(flags);
    put_bytes(out, list.stored_items());
    // The ends are kept as the little-endian `u32`s `put_u32s` writes.
    out.extend_from_slice(&len_u32(list.len()).to_le_bytes());
    out.extend_from_slice(list.ends_bytes());
    if let Some(order) = list.order() {
        // (The reader refuses this: a caller writes reordered lists after their base.)
        put_u32s(out, order);
    }
    if let Some(lead) = list.lead() {
        out.extend_from_slice(&lead.body.digest.to_le_bytes());
        put_bytes(out, lead.body.gz);
        out.extend_from_slice(&u32::from(lead.items_start).to_le_bytes());
        out.extend_from_slice(&u32::from(lead.len).to_le_bytes());
        if lead.echoes_count {
            out.push(1);
            out.extend_from_slice(&LEAD_COUNT.to_le_bytes());
        } else {
            out.push(0);
        }
        out.push(CodesKind::byte_of(lead.body.codes));
    }
}

/// The shared code a record names ([`CodesKind::byte_of`]).
fn take_codes(input: &mut &[u8]) -> Result<Option<CodesKind>, Damaged> {
    CodesKind::of_byte(take_u8(input)?).ok_or(Damaged("an unknown kind of shared code"))
}

/// Reads one body from the front of `input`, advancing it. `previous` is the list read just
/// before, for a list written as an index into it.
pub fn decode(input: &mut &[u8], previous: Option<&SharedList>) -> Result<Rendered, Damaged> {
    Ok(match take_u8(input)? {
        JSON => Rendered::Json(take_bytes(input)?),
        tag @ (GZIP | CODED) => {
            let codes = match tag {
                GZIP => None,
                _ => Some(take_codes(input)?.ok_or(Damaged("a shared-code body without a code"))?),
            };
            let digest = take_u64(input)?;
            let gz = take_boxed(input)?;
            plain_size(&gz, codes)?;
            Rendered::Gzip(Gzipped { digest, gz, codes })
        }
        PACKED => {
            let digest = take_u64(input)?;
            let len = take_u32(input)?;
            let packed = take_boxed(input)?;
            // As for a list: no further than deflate expands, which packing enforces.
            if len == 0 || len as usize > packed.len().saturating_mul(compress::MAX_DEFLATE_RATIO) {
                return Err(Damaged("a packed body's size"));
            }
            Rendered::Packed(PackedBody {
                packed,
                len,
                digest,
            })
        }
        NOT_FOUND => Rendered::NotFound,
        LIST => Rendered::List(SharedList::new(decode_list(input)?)),
        REORDERED => {
            let base = previous
                .filter(|base| base.order().is_none())
                .ok_or(Damaged("a reordered list with no list before it"))?;
            let order = take_u32s(input)?;
            let list = ItemList::reordered(base, order)
                .ok_or(Damaged("an order that is not a permutation of its list"))?;
            Rendered::List(SharedList::new(list))
        }
        _ => return Err(Damaged("an unknown kind of body")),
    })
}

fn decode_list(input: &mut &[u8]) -> Result<ItemList, Damaged> {
    let flags = take_u8(input)?;
    if flags & !(DEFLATED | ORDERED | LED | DICTIONARY) != 0 {
        return Err(Damaged("unknown list flags"));
    }
    let codec = match (flags & DEFLATED != 0, flags & DICTIONARY != 0) {
        (false, false) => Codec::Plain,
        (true, false) => Codec::Deflate,
        // Whether the snapshot holds the dictionary is its reader's to check.
        (false, true) => Codec::Dictionary,
        (true, true) => return Err(Damaged("a list packed two ways")),
    };
    let json = take_bytes(input)?;
    let ends = take_u32s(input)?;
    // Items are never empty: each ends past the comma after the one before.
    if ends.windows(2).any(|w| w[1] <= w[0].saturating_add(1)) || ends.first() == Some(&0) {
        return Err(Damaged("item ends out of order"));
    }
    // A list in another order is written as an index into the list before it, never alone
    // (alone, its buffer would be held but not counted against the budget).
    if flags & ORDERED != 0 {
        return Err(Damaged("a reordered list with a buffer of its own"));
    }
    let lead = if flags & LED != 0 {
        let digest = take_u64(input)?;
        let gz = take_boxed(input)?;
        let items_start = u16::try_from(take_u32(input)?)
            .map_err(|_| Damaged("a lead page's head longer than this build writes"))?;
        let len = take_u32(input)?;
        let echoes_count = match take_u8(input)? {
            0 => false,
            // A lead page is page 1 of the contract's default count, the only count it echoes.
            1 if take_u64(input)? == LEAD_COUNT => true,
            1 => return Err(Damaged("a lead page's count")),
            _ => return Err(Damaged("a lead page's count flag")),
        };
        let codes = take_codes(input)?;
        if len == 0 || len as usize > ends.len() {
            return Err(Damaged("a lead page longer than its list"));
        }
        let len = u8::try_from(len)
            .ok()
            .filter(|&len| u64::from(len) <= LEAD_COUNT)
            .ok_or(Damaged("a lead page longer than this build writes"))?;
        // The lead's items lie within its body.
        let lead_end = ends[len as usize - 1] as usize;
        if (items_start as usize).saturating_add(lead_end) > plain_size(&gz, codes)? {
            return Err(Damaged("a lead page shorter than its items"));
        }
        // The body is held here until the list copies it into its data.
        let lead = Gzipped { gz, digest, codes };
        Some((lead, items_start, len, echoes_count))
    } else {
        None
    };
    // What the buffer holds must be what the ends say: the items after the lead page's,
    // plainly, or packed no further than deflate can expand (1,032 to 1, which packing
    // enforces), so that a page never sizes a buffer from a length the body does not have.
    let total = ends.last().map_or(0, |&end| end as usize);
    let rest = match &lead {
        None => total,
        Some((_, _, len, _)) => total.saturating_sub(ends[*len as usize - 1] as usize + 1),
    };
    let fits = if codec != Codec::Plain {
        rest > 0 && rest <= json.len().saturating_mul(compress::MAX_DEFLATE_RATIO)
    } else {
        rest == json.len()
    };
    if !fits {
        return Err(Damaged("a list's buffer does not hold its items"));
    }
    let lead = lead
        .as_ref()
        .map(|(body, items_start, len, echoes_count)| Lead {
            body: GzipRef::from(body),
            items_start: *items_start,
            len: *len,
            echoes_count: *echoes_count,
        });
    let list = ItemList::from_parts(&ends, &json, codec, lead);
    if !list.runs_fit() {
        return Err(Damaged("a list's runs are not where its table says"));
    }
    Ok(list)
}

/// The size a gzip body (a whole member, or one written in the shared code of `codes`) says
/// its contents have, if plausible for its length: what inflating it allocates.
fn plain_size(gz: &[u8], codes: Option<CodesKind>) -> Result<usize, Damaged> {
    match codes {
        None => compress::gzip_size(gz).ok_or(Damaged(
            "a gzip member too short, or that says it inflates too far",
        )),
        Some(_) => compress::coded_size(gz).ok_or(Damaged(
            "a shared-code body too short, or that says it inflates too far",
        )),
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&len_u32(bytes.len()).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_u32s(out: &mut Vec<u8>, values: &[u32]) {
    out.extend_from_slice(&len_u32(values.len()).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Bodies and lists over 4 GiB are not a thing this server makes (their offsets are `u32`).
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], Damaged> {
    if input.len() < n {
        return Err(Damaged("cut short"));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// One byte from the front of `input`.
pub fn take_u8(input: &mut &[u8]) -> Result<u8, Damaged> {
    Ok(take(input, 1)?[0])
}

/// A little-endian `u32` from the front of `input`.
pub fn take_u32(input: &mut &[u8]) -> Result<u32, Damaged> {
    let mut b = [0; 4];
    b.copy_from_slice(take(input, 4)?);
    Ok(u32::from_le_bytes(b))
}

/// A little-endian `u64` from the front of `input`.
pub fn take_u64(input: &mut &[u8]) -> Result<u64, Damaged> {
    let mut b = [0; 8];
    b.copy_from_slice(take(input, 8)?);
    Ok(u64::from_le_bytes(b))
}

fn take_bytes(input: &mut &[u8]) -> Result<Bytes, Damaged> {
    let len = take_u32(input)? as usize;
    Ok(Bytes::copy_from_slice(take(input, len)?))
}

fn take_boxed(input: &mut &[u8]) -> Result<Box<[u8]>, Damaged> {
    let len = take_u32(input)? as usize;
    Ok(Box::from(take(input, len)?))
}

fn take_u32s(input: &mut &[u8]) -> Result<Vec<u32>, Damaged> {
    let len = take_u32(input)? as usize;
    let raw = take(input, len.checked_mul(4).ok_or(Damaged("a length"))?)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{Frame, ItemListBuilder};

    fn list(items: &[&str]) -> ItemList {
        let mut b = ItemListBuilder::default();
        for item in items {
            b.next_item().extend_from_slice(item.as_bytes());
            b.end_item();
        }
        b.finish()
    }

    fn round_trip(bodies: &[Rendered]) -> Vec<Rendered> {
        let mut out = Vec::new();
        let mut previous: Option<SharedList> = None;
        for body in bodies {
            encode(body, previous.as_deref(), &mut out);
            previous = match body {
                Rendered::List(l) => Some(SharedList::clone(l)),
                _ => None,
            };
        }
        let mut input = &out[..];
        let mut read = Vec::new();
        let mut previous: Option<SharedList> = None;
        while !input.is_empty() {
            let body = decode(&mut input, previous.as_ref()).expect("decodes");
            previous = match &body {
                Rendered::List(l) => Some(SharedList::clone(l)),
                _ => None,
            };
            read.push(body);
        }
        read
    }

    #[test]
    fn every_kind_of_body_reads_back_as_it_was_written() {
        let items: Vec<String> = (0..40)
            .map(|i| format!("{{\"id\":{i},\"x\":\"{}\"}}", "y".repeat(i)))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let helpful = SharedList::new(list(&items).compacted(Some(Frame::Reviews(7))));
        assert!(helpful.has_lead_page());
        let newest = ItemList::reordered(&helpful, (0..40).rev().collect()).expect("a permutation");
        let plain = list(&items);
        let bodies = vec![
            Rendered::Json(Bytes::from_static(b"{\"id\":1}")),
            Rendered::Json(Bytes::from(vec![b'a'; 500])).compacted(None),
            Rendered::NotFound,
            Rendered::List(SharedList::clone(&helpful)),
            Rendered::List(SharedList::new(newest)),
            Rendered::List(SharedList::new(plain.clone())),
            Rendered::List(SharedList::new(plain.compacted(None))),
        ];
        assert!(matches!(bodies[1], Rendered::Gzip(_)));
        let read = round_trip(&bodies);
        assert_eq!(read, bodies);
        // The newest order still shares the helpful order's buffer, and the lead page serves.
        let (Rendered::List(h), Rendered::List(n)) = (&read[3], &read[4]) else {
            panic!("lists")
        };
        assert!(n.shares_buffer_with(h));
        assert!(h.lead_page(1, 5).is_some());
        let (Rendered::Gzip(a), Rendered::Gzip(b)) = (&read[1], &bodies[1]) else {
            panic!("gzip")
        };
        assert_eq!(a.digest, b.digest);
    }

    #[test]
    fn bodies_and_lead_pages_in_shared_codes_read_back_as_they_were_written() {
        use crate::render::shared_codes;
        shared_codes::test_codes(CodesKind::ReviewsLead);
        shared_codes::test_codes(CodesKind::Product);
        let words = "the same words, again and again. ".repeat(8);
        let items: Vec<String> = (0..12)
            .map(|i| format!("{{\"id\":{i},\"body\":\"{words}\"}}"))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let frame = Frame::Reviews(7);
        let plain = list(&items);
        let led = SharedList::new(plain.compacted(Some(frame)));
        let lead = led.kept_lead_page().expect("a lead page");
        assert_eq!(lead.codes, Some(CodesKind::ReviewsLead));
        let whole = Rendered::Json(Bytes::from(vec![b'a'; 500])).compacted_over(
            crate::render::Compaction::All,
            None,
            Some(CodesKind::Product),
            None,
        );
        let bodies = vec![whole, Rendered::List(SharedList::clone(&led))];
        assert_eq!(codes_of(&bodies[0]), Some(CodesKind::Product));
        assert_eq!(codes_of(&bodies[1]), Some(CodesKind::ReviewsLead));
        let read = round_trip(&bodies);
        assert_eq!(read, bodies);
        assert_eq!(read[0].plain(), Some(Bytes::from(vec![b'a'; 500])));
        let Rendered::List(back) = &read[1] else {
            panic!("a list")
        };
        let page = back.lead_page(1, 5).expect("the lead page serves");
        assert_eq!(page.gz, lead.gz);
        assert_eq!(page.codes, Some(CodesKind::ReviewsLead));
        assert_eq!(
            page.plain().as_deref(),
            Some(frame.page(&plain, 1, 5).as_ref())
        );
    }

    /// Asserts that the record `out` with `value` written at `at` is refused as damage that
    /// says `why`.
    fn assert_refused(out: &[u8], at: usize, value: &[u8], why: &str) {
        let mut bad = out.to_vec();
        bad[at..at + value.len()].copy_from_slice(value);
        let read = decode(&mut &bad[..], None);
        assert!(
            matches!(&read, Err(Damaged(w)) if w.contains(why)),
            "{why}: {read:?}"
        );
    }

    #[test]
    fn a_damaged_shared_code_record_is_refused_not_trusted() {
        use crate::render::shared_codes;
        shared_codes::test_codes(CodesKind::Meta);
        let body = Rendered::Json(Bytes::from(vec![b'a'; 500])).compacted_over(
            crate::render::Compaction::All,
            None,
            Some(CodesKind::Meta),
            None,
        );
        let mut out = Vec::new();
        encode(&body, None, &mut out);
        assert_eq!(out[0], CODED);
        assert!(decode(&mut &out[..], None).is_ok());
        for cut in 0..out.len() {
            assert!(decode(&mut &out[..cut], None).is_err(), "cut at {cut}");
        }
        let refused = |at: usize, value: &[u8], why: &str| assert_refused(&out, at, value, why);
        // The kind: none, or one this build does not have.
        refused(1, &[0], "without a code");
        refused(1, &[99], "unknown kind");
        // A body that says it inflates past what deflate can.
        let n = out.len();
        refused(n - 4, &u32::MAX.to_le_bytes(), "inflates too far");
        // Too short for a trailer and a byte of the block.
        let mut short = out[..2 + 8].to_vec();
        short.extend_from_slice(&8u32.to_le_bytes());
        short.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode(&mut &short[..], None),
            Err(Damaged(w)) if w.contains("too short")
        ));
    }

    #[test]
    fn damaged_bytes_are_refused_not_trusted() {
        let mut out = Vec::new();
        let l = SharedList::new(list(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]));
        let json_len = l.stored_items().len();
        encode(&Rendered::List(SharedList::clone(&l)), None, &mut out);
        // Every prefix is cut short, never a panic.
        for cut in 0..out.len() {
            assert!(decode(&mut &out[..cut], None).is_err(), "cut at {cut}");
        }
        // Item ends out of order.
        let mut bad = out.clone();
        let ends_at = 1 + 1 + 4 + json_len + 4;
        bad[ends_at..ends_at + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode(&mut &bad[..], None).is_err());
        // An order that is no permutation, and a reordered list with nothing before it.
        let mut out = Vec::new();
        let newest = ItemList::reordered(&l, vec![2, 1, 0]).expect("a permutation");
        encode(&Rendered::List(SharedList::new(newest)), Some(&l), &mut out);
        assert!(decode(&mut &out[..], None).is_err());
        let last = out.len() - 4;
        out[last..].copy_from_slice(&1u32.to_le_bytes());
        assert!(decode(&mut &out[..], Some(&l)).is_err());
        assert!(decode(&mut &[9u8][..], None).is_err());

        // A list in another order with a buffer of its own.
        let mut out = Vec::new();
        let newest = ItemList::reordered(&l, vec![2, 1, 0]).expect("a permutation");
        encode(&Rendered::List(SharedList::new(newest)), None, &mut out);
        assert!(decode(&mut &out[..], None).is_err());
        // Ends past the buffer: the last item ends one byte further than the buffer goes.
        let mut out = Vec::new();
        encode(&Rendered::List(SharedList::clone(&l)), None, &mut out);
        let last_end = 1 + 1 + 4 + json_len + 4 + 8;
        out[last_end..last_end + 4].copy_from_slice(&(json_len as u32 + 1).to_le_bytes());
        assert!(matches!(decode(&mut &out[..], None), Err(Damaged(why)) if why.contains("buffer")));
        // A gzip member that says it inflates to 4 GiB.
        let body = Rendered::Json(Bytes::from(vec![b'a'; 500])).compacted(None);
        let mut out = Vec::new();
        encode(&body, None, &mut out);
        let n = out.len();
        out[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&mut &out[..], None).is_err());
        // A list flagged as packed two ways.
        let mut out = Vec::new();
        encode(&Rendered::List(SharedList::clone(&l)), None, &mut out);
        out[1] = DEFLATED | DICTIONARY;
        assert!(
            matches!(decode(&mut &out[..], None), Err(Damaged(why)) if why.contains("two ways"))
        );
    }

    #[test]
    fn a_lead_page_this_build_would_not_write_is_refused() {
        let items: Vec<String> = (0..8)
            .map(|i| format!("{{\"id\":{i},\"x\":\"{}\"}}", "y".repeat(40)))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let led = list(&items).compacted(Some(Frame::Reviews(7)));
        assert!(led.has_lead_page());
        let led = Rendered::List(SharedList::new(led));
        let mut out = Vec::new();
        encode(&led, None, &mut out);
        assert!(decode(&mut &out[..], None).is_ok());
        // The record ends with the lead's items start, length, count flag and count, and its
        // shared code's kind.
        let n = out.len();
        let (start_at, len_at, count_at, codes_at) = (n - 18, n - 14, n - 9, n - 1);
        let refused = |at: usize, value: &[u8], why: &str| assert_refused(&out, at, value, why);
        refused(count_at, &6u64.to_le_bytes(), "count");
        refused(start_at, &70_000u32.to_le_bytes(), "head longer");
        refused(len_at, &9u32.to_le_bytes(), "longer than its list");
        refused(len_at, &6u32.to_le_bytes(), "longer than this build writes");
        refused(codes_at, &[99], "unknown kind of shared code");
    }

    #[test]
    fn a_list_whose_runs_are_not_where_its_table_says_is_refused() {
        let items: Vec<String> = (0..100)
            .map(|i| format!("{{\"id\":{i},\"x\":\"same words\"}}"))
            .collect();
        let plain = list(&items.iter().map(String::as_str).collect::<Vec<_>>());
        let packed = SharedList::new(plain.compacted(None));
        assert_eq!(packed.runs(), 4);
        let read = round_trip(&[Rendered::List(SharedList::clone(&packed))]);
        assert!(matches!(&read[0], Rendered::List(l) if **l == plain));
        let mut out = Vec::new();
        encode(&Rendered::List(packed), None, &mut out);
        // The table of the runs' ends follows the flags and the buffer's length. The last end
        // past or short of the runs, a run empty: refused (a boundary moved within the runs
        // is found only by unpacking, which then gives an empty page, as for any damage).
        let table = 1 + 1 + 4; // the body's kind, the flags, the buffer's length
        let entry = |bad: &mut Vec<u8>, k: usize, f: &dyn Fn(u32) -> u32| {
            let at = table + 4 * k;
            let end = u32::from_le_bytes(bad[at..at + 4].try_into().unwrap());
            bad[at..at + 4].copy_from_slice(&f(end).to_le_bytes());
        };
        let cases: [(usize, &dyn Fn(u32) -> u32); 3] =
            [(3, &|e| e + 1), (3, &|e| e - 1), (0, &|_| 0)];
        for (k, f) in cases {
            let mut bad = out.clone();
            entry(&mut bad, k, f);
            assert!(
                matches!(decode(&mut &bad[..], None), Err(Damaged(why)) if why.contains("runs")),
                "entry {k}"
            );
        }
    }

    #[test]
    fn a_deflated_list_reads_back_whatever_dictionary_the_process_has() {
        // Built deflated on purpose: `compacted` packs against a dictionary if another test
        // installed one first. One run's worth of items, packed as one.
        let plain = list(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"].repeat(10));
        assert!(plain.len() <= crate::render::RUN_ITEMS);
        let deflated = compress::deflate(plain.stored_items()).expect("repetitive items shrink");
        let ends: Vec<u32> = (0..plain.len()).map(|p| plain.end(p) as u32).collect();
        let list = ItemList::from_parts(&ends, &deflated, Codec::Deflate, None);
        assert_eq!(list.codec(), Codec::Deflate);
        assert_eq!(list, plain);
        let read = round_trip(&[Rendered::List(SharedList::new(list))]);
        assert!(
            matches!(&read[0], Rendered::List(l) if l.codec() == Codec::Deflate && **l == plain)
        );
    }

    #[test]
    fn a_packed_body_reads_back_and_a_damaged_one_is_refused() {
        compress::test_dictionary(DictionaryKind::Bodies);
        let plain = Bytes::from(compress::tests::product(7));
        let body =
            Rendered::Json(plain.clone()).compacted_as(crate::render::Compaction::Dense, None);
        assert!(matches!(body, Rendered::Packed(_)));
        let read = round_trip(std::slice::from_ref(&body));
        assert_eq!(read[0].plain(), Some(plain.clone()));
        let (Rendered::Packed(a), Rendered::Packed(b)) = (&read[0], &body) else {
            panic!("packed")
        };
        assert_eq!(a.digest, b.digest);

        let mut out = Vec::new();
        encode(&body, None, &mut out);
        for cut in 0..out.len() {
            assert!(decode(&mut &out[..cut], None).is_err(), "cut at {cut}");
        }
        // The size it says it unpacks to: none, or further than any packing expands.
        let packed_len = out.len() - 1 - 8 - 4 - 4;
        for len in [0, packed_len * compress::MAX_DEFLATE_RATIO + 1] {
            let mut bad = out.clone();
            bad[9..13].copy_from_slice(&(len as u32).to_le_bytes());
            assert!(
                matches!(decode(&mut &bad[..], None), Err(Damaged(why)) if why.contains("size"))
            );
        }
        // A size that lies within bounds decodes, and then unpacks to nothing: a 500, not a
        // panic or a wrong body.
        let mut bad = out.clone();
        bad[9..13].copy_from_slice(&(plain.len() as u32 + 1).to_le_bytes());
        let lying = decode(&mut &bad[..], None).expect("within bounds");
        assert_eq!(lying.plain(), None);
    }
}
