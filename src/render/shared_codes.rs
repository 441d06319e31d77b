//! Deflate codes shared by every gzip body of a kind: a body kept as a gzip member without its
//! header, sent behind its kind's header.
//!
//! A gzip member made alone opens with a dynamic block header: the Huffman codes its one
//! block is written in, about 40–60 bytes that take a sixth to a quarter of a product's or a
//! reviews meta body. Measured on 6,678 bodies of the full-scale set, one code per kind,
//! trained on half of them and priced on the other half, kept a product 17% smaller, its
//! styles 10%, a reviews meta body 27% (docs/benchmarks.md, Shared codes). So the catalog
//! learns one code per kind from the first bodies of that kind a warm-up renders (as it does
//! its list dictionary), and from then on writes each body of that kind as one block in that
//! code: what it keeps is the block's bits after the header, and the gzip trailer. What it
//! sends a client that takes gzip is the kind's [`SharedCodes::prefix`] (the gzip header and
//! the block header, the same bytes for every body of the kind) and then those bytes: one
//! ordinary gzip member.
//!
//! The block header is not a whole number of bytes. Its last few bits share a byte with the
//! body's first bits, so that byte is kept with the body, those bits already in it: the
//! prefix is the header's whole bytes only.
//!
//! The matches are found here (a hash chain, one step of lazy matching, as zlib does) rather
//! than by libdeflate, which writes only whole members in codes of its own choosing. A code is
//! one per process and kind, trained once or restored with a snapshot, and never replaced:
//! what was written in it must stay readable.

use std::cell::RefCell;
use std::sync::OnceLock;

/// The literal/length alphabet deflate uses: 256 literals, the end of a block, 29 lengths.
const LITLEN: usize = 286;
/// The distance alphabet.
const DIST: usize = 30;
/// The end-of-block symbol.
const END: usize = 256;
/// The longest code deflate allows.
const MAX_BITS: u8 = 15;
/// The longest code of the code-length code.
const MAX_CL_BITS: u8 = 7;
/// The order deflate writes the code-length code's lengths in.
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// A gzip member's header as every shared-code body is sent with: no name, no time, and
/// "unknown" for the system that wrote it.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The kinds of gzip body that have a code of their own: what their bodies share differs (a
/// product is prose, its styles URLs and prices, a meta body digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodesKind {
    Product,
    Styles,
    Meta,
    /// The lead page of a product's reviews.
    ReviewsLead,
    /// The lead page of a product's questions.
    QuestionsLead,
}

/// How many kinds of code there are.
pub const KINDS: usize = 5;

impl CodesKind {
    pub const ALL: [CodesKind; KINDS] = [
        CodesKind::Product,
        CodesKind::Styles,
        CodesKind::Meta,
        CodesKind::ReviewsLead,
        CodesKind::QuestionsLead,
    ];

    /// Its name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            CodesKind::Product => "product",
            CodesKind::Styles => "styles",
            CodesKind::Meta => "meta",
            CodesKind::ReviewsLead => "reviews_lead",
            CodesKind::QuestionsLead => "questions_lead",
        }
    }

    /// Its place in arrays by kind (the process's codes, a snapshot's).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind at `index`, as [`CodesKind::index`] numbers them.
    pub fn from_index(index: usize) -> Option<CodesKind> {
        CodesKind::ALL.get(index).copied()
    }

    /// The byte a snapshot record or a list's lead head keeps `codes` in: the kind's index
    /// plus one, 0 for none.
    pub fn byte_of(codes: Option<CodesKind>) -> u8 {
        codes.map_or(0, |kind| kind.index() as u8 + 1)
    }

    /// The codes [`CodesKind::byte_of`] wrote `byte` for; None if it names no kind this
    /// build has.
    pub fn of_byte(byte: u8) -> Option<Option<CodesKind>> {
        match byte {
            0 => Some(None),
            byte => CodesKind::from_index(usize::from(byte - 1)).map(Some),
        }
    }
}

/// One symbol's code: its bits, reversed as deflate writes them, and how many.
#[derive(Debug, Clone, Copy, Default)]
struct Code {
    bits: u16,
    len: u8,
}

/// A trained code for one kind of body, ready to write bodies in.
#[derive(Debug)]
pub struct SharedCodes {
    /// The code lengths, literal/length symbols then distances: what a snapshot stores.
    lengths: Box<[u8]>,
    litlen: [Code; LITLEN],
    dist: [Code; DIST],
    /// The gzip header and the block header's whole bytes: sent before every body.
    prefix: Box<[u8]>,
    /// The block header's last bits, which the first byte of every body holds.
    tail: u8,
    tail_bits: u8,
    /// The digest of the lengths: what tells this code's gzip bodies from another's.
    fingerprint: u64,
}

/// Why code lengths cannot be a shared code.
#[derive(Debug, thiserror::Error)]
pub enum CodesError {
    #[error("this process already writes {} bodies in another code", .0.name())]
    Another(CodesKind),
    #[error("not a code {} bodies can be written in", .0.name())]
    Unusable(CodesKind),
}

impl SharedCodes {
    /// A code from its lengths ([`SharedCodes::lengths`]); None unless every symbol has a
    /// code (so that any body can be written in it) and both codes are complete.
    pub fn from_lengths(lengths: &[u8]) -> Option<SharedCodes> {
        if lengths.len() != LITLEN + DIST
            || lengths.iter().any(|&l| l == 0 || l > MAX_BITS)
            || !complete(&lengths[..LITLEN])
            || !complete(&lengths[LITLEN..])
        {
            return None;
        }
        let mut litlen = [Code::default(); LITLEN];
        let mut dist = [Code::default(); DIST];
        canonical(&lengths[..LITLEN], &mut litlen);
        canonical(&lengths[LITLEN..], &mut dist);
        let mut header = BitWriter::default();
        header.out.extend_from_slice(&GZIP_HEADER);
        write_block_header(&mut header, lengths);
        let (tail, tail_bits) = (header.acc as u8, header.n as u8);
        Some(SharedCodes {
            lengths: lengths.into(),
            litlen,
            dist,
            prefix: header.out.into_boxed_slice(),
            tail,
            tail_bits,
            fingerprint: super::digest(lengths),
        })
    }

    /// The code lengths it was made from.
    pub fn lengths(&self) -> &[u8] {
        &self.lengths
    }

    /// What a gzip body's entity tag mixes into the digest of its plain bytes when the body
    /// is written in this code: the same body in another code (another instance's, trained on
    /// other bodies) or as a whole member is another byte sequence, and a strong tag names one.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// What is sent before each body written in this code: the gzip header and the block
    /// header's whole bytes.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// `plain` written in this code: the block after its header (its first byte holding the
    /// header's last bits), the end of the block, and the gzip trailer. [`SharedCodes::prefix`]
    /// and then these bytes are one gzip member of `plain`.
    pub fn encode(&self, plain: &[u8]) -> Box<[u8]> {
        let mut w = BitWriter {
            acc: u64::from(self.tail),
            n: u32::from(self.tail_bits),
            out: Vec::with_capacity(plain.len() / 2 + 16),
        };
        MATCHER.with(|m| {
            m.borrow_mut().parse(plain, |token| match token {
                Token::Literal(byte) => w.put_code(self.litlen[usize::from(byte)]),
                Token::Match { len, dist } => {
                    let l = length_symbol(len);
                    w.put_code(self.litlen[257 + l]);
                    w.put(u32::from(len - LEN_BASE[l]), u32::from(LEN_EXTRA[l]));
                    let d = distance_symbol(dist);
                    w.put_code(self.dist[d]);
                    w.put(u32::from(dist - DIST_BASE[d]), u32::from(DIST_EXTRA[d]));
                }
            })
        });
        w.put_code(self.litlen[END]);
        w.flush();
        let mut out = w.out;
        out.extend_from_slice(&libdeflater::crc32(plain).to_le_bytes());
        out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        out.into_boxed_slice()
    }
}

/// What a kind's bodies use of each symbol, counted from bodies as they would be written:
/// what a code is trained on.
#[derive(Debug, Clone)]
pub struct SymbolCounts {
    litlen: [u64; LITLEN],
    dist: [u64; DIST],
    bodies: u64,
}

impl Default for SymbolCounts {
    fn default() -> Self {
        SymbolCounts {
            litlen: [0; LITLEN],
            dist: [0; DIST],
            bodies: 0,
        }
    }
}

impl SymbolCounts {
    /// Counts the symbols `plain` is written in.
    pub fn add(&mut self, plain: &[u8]) {
        MATCHER.with(|m| {
            m.borrow_mut().parse(plain, |token| match token {
                Token::Literal(byte) => self.litlen[usize::from(byte)] += 1,
                Token::Match { len, dist } => {
                    self.litlen[257 + length_symbol(len)] += 1;
                    self.dist[distance_symbol(dist)] += 1;
                }
            })
        });
        self.litlen[END] += 1;
        self.bodies += 1;
    }

    /// How many bodies were counted.
    pub fn bodies(&self) -> u64 {
        self.bodies
    }

    /// The lengths of the code these counts call for: each symbol's count plus one, so that a
    /// symbol the samples never used still has a code ([`SharedCodes::from_lengths`]).
    pub fn lengths(&self) -> Vec<u8> {
        let mut lengths = huffman_lengths(&self.litlen.map(|c| c + 1), MAX_BITS);
        lengths.extend(huffman_lengths(&self.dist.map(|c| c + 1), MAX_BITS));
        lengths
    }
}

static CODES: [OnceLock<SharedCodes>; KINDS] = [const { OnceLock::new() }; KINDS];

/// The process's code for `kind`, if it has one.
pub fn codes(kind: CodesKind) -> Option<&'static SharedCodes> {
    CODES[kind.index()].get()
}

/// What a gzip body written in `codes` is sent behind: its kind's prefix, or nothing for a
/// whole member (`codes` None). None if the process has no code of that kind, which a body
/// written in it cannot meet: codes are never uninstalled.
pub fn prefix(codes: Option<CodesKind>) -> Option<&'static [u8]> {
    match codes {
        None => Some(&[]),
        Some(kind) => self::codes(kind).map(SharedCodes::prefix),
    }
}

/// Makes the code of `lengths` the one `kind`'s bodies are written in from now on. Installing
/// the one already installed does nothing; another is refused, and so are lengths that are not
/// a usable code.
pub fn install(kind: CodesKind, lengths: &[u8]) -> Result<(), CodesError> {
    install_in(&CODES[kind.index()], kind, lengths)
}

fn install_in(
    slot: &OnceLock<SharedCodes>,
    kind: CodesKind,
    lengths: &[u8],
) -> Result<(), CodesError> {
    if slot.get().is_none() {
        let codes = SharedCodes::from_lengths(lengths).ok_or(CodesError::Unusable(kind))?;
        // Another thread may have installed first: then what counts is whether it is the same.
        let _ = slot.set(codes);
    }
    match slot.get() {
        Some(installed) if *installed.lengths == *lengths => Ok(()),
        _ => Err(CodesError::Another(kind)),
    }
}

/// Installs a code for `kind` trained on a few made-up bodies, for tests that need one.
#[doc(hidden)]
pub fn test_codes(kind: CodesKind) -> &'static SharedCodes {
    if codes(kind).is_none() {
        let mut counts = SymbolCounts::default();
        counts.add(br#"{"id":1,"name":"A test body","slogan":"Of a kind","features":[]}"#);
        let _ = install(kind, &counts.lengths());
    }
    codes(kind).unwrap_or_else(|| unreachable!("installed above"))
}

/// Whether `lengths` (none zero) fill their code exactly: every bit string decodes.
fn complete(lengths: &[u8]) -> bool {
    let kraft: u64 = lengths.iter().map(|&l| 1u64 << (MAX_BITS - l)).sum();
    kraft == 1 << MAX_BITS
}

/// The canonical code of `lengths`, bit-reversed as deflate writes it.
fn canonical(lengths: &[u8], codes: &mut [Code]) {
    let mut count = [0u16; MAX_BITS as usize + 1];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; MAX_BITS as usize + 2];
    for bits in 1..=MAX_BITS as usize {
        next[bits + 1] = (next[bits] + count[bits]) << 1;
    }
    for (code, &len) in codes.iter_mut().zip(lengths) {
        if len == 0 {
            continue;
        }
        let bits = next[usize::from(len)];
        next[usize::from(len)] += 1;
        *code = Code {
            bits: bits.reverse_bits() >> (16 - u32::from(len)),
            len,
        };
    }
}

/// Huffman code lengths for `freqs` (none zero), no longer than `max_bits`: Huffman's
/// construction, then lengths past the limit folded back as zlib and miniz do.
fn huffman_lengths(freqs: &[u64], max_bits: u8) -> Vec<u8> {
    let n = freqs.len();
    if n == 1 {
        return vec![1];
    }
    // Nodes 0..n are the symbols; each merge adds one, whose parent is recorded.
    let mut parent = vec![usize::MAX; 2 * n - 1];
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>> = freqs
        .iter()
        .enumerate()
        .map(|(i, &f)| std::cmp::Reverse((f, i)))
        .collect();
    let mut next = n;
    while let (Some(std::cmp::Reverse((fa, a))), Some(std::cmp::Reverse((fb, b)))) =
        (heap.pop(), heap.pop())
    {
        parent[a] = next;
        parent[b] = next;
        heap.push(std::cmp::Reverse((fa + fb, next)));
        next += 1;
        if heap.len() == 1 {
            break;
        }
    }
    let mut depth = vec![0u32; 2 * n - 1];
    for node in (0..next - 1).rev() {
        depth[node] = depth[parent[node]] + 1;
    }
    // How many symbols at each length, those past the limit at the limit; then lengthen
    // shorter codes until the lengths fill the code exactly again.
    let max = usize::from(max_bits);
    let mut at = vec![0u32; max + 1];
    for &d in &depth[..n] {
        at[(d as usize).min(max)] += 1;
    }
    let mut kraft: u64 = (1..=max).map(|l| u64::from(at[l]) << (max - l)).sum();
    while kraft > 1 << max {
        at[max] -= 1;
        if let Some(l) = (1..max).rev().find(|&l| at[l] > 0) {
            at[l] -= 1;
            at[l + 1] += 2;
        }
        kraft -= 1;
    }
    // The rarest symbols get the longest codes.
    let mut by_freq: Vec<usize> = (0..n).collect();
    by_freq.sort_by_key(|&i| (freqs[i], std::cmp::Reverse(i)));
    let mut lengths = vec![0u8; n];
    let mut symbols = by_freq.into_iter();
    for l in (1..=max).rev() {
        for _ in 0..at[l] {
            if let Some(s) = symbols.next() {
                lengths[s] = l as u8;
            }
        }
    }
    lengths
}

/// Writes the dynamic block header of `lengths` (literal/length then distance lengths): final
/// block, dynamic codes, then the code lengths in deflate's run-length code.
fn write_block_header(w: &mut BitWriter, lengths: &[u8]) {
    let mut runs = run_lengths(&lengths[..LITLEN]);
    runs.extend(run_lengths(&lengths[LITLEN..]));
    let mut freqs = [0u64; 19];
    for &(symbol, _) in &runs {
        freqs[usize::from(symbol)] += 1;
    }
    // A code-length code must have two symbols at least, or zlib calls it incomplete.
    if freqs.iter().filter(|&&f| f > 0).count() < 2 {
        let spare = usize::from(freqs[0] > 0);
        freqs[spare] += 1;
    }
    let used: Vec<usize> = (0..19).filter(|&s| freqs[s] > 0).collect();
    let used_freqs: Vec<u64> = used.iter().map(|&s| freqs[s]).collect();
    let mut cl_lengths = [0u8; 19];
    for (&s, l) in used.iter().zip(huffman_lengths(&used_freqs, MAX_CL_BITS)) {
        cl_lengths[s] = l;
    }
    let mut cl_codes = [Code::default(); 19];
    canonical(&cl_lengths, &mut cl_codes);
    let hclen = CL_ORDER
        .iter()
        .rposition(|&s| cl_lengths[s] > 0)
        .map_or(4, |last| (last + 1).max(4));
    w.put(1, 1); // the final block
    w.put(2, 2); // dynamic codes
    w.put((LITLEN - 257) as u32, 5);
    w.put((DIST - 1) as u32, 5);
    w.put((hclen - 4) as u32, 4);
    for &s in &CL_ORDER[..hclen] {
        w.put(u32::from(cl_lengths[s]), 3);
    }
    for (symbol, extra) in runs {
        w.put_code(cl_codes[usize::from(symbol)]);
        match symbol {
            16 => w.put(u32::from(extra), 2),
            17 => w.put(u32::from(extra), 3),
            18 => w.put(u32::from(extra), 7),
            _ => {}
        }
    }
}

/// `lengths` in deflate's run-length code: (symbol, extra bits' value) pairs.
fn run_lengths(lengths: &[u8]) -> Vec<(u8, u8)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < lengths.len() {
        let len = lengths[i];
        let run = lengths[i..].iter().take_while(|&&l| l == len).count();
        let mut left = run;
        if len == 0 {
            while left >= 11 {
                let n = left.min(138);
                runs.push((18, (n - 11) as u8));
                left -= n;
            }
            if left >= 3 {
                runs.push((17, (left - 3) as u8));
                left = 0;
            }
        } else {
            runs.push((len, 0));
            left -= 1;
            while left >= 3 {
                let n = left.min(6);
                runs.push((16, (n - 3) as u8));
                left -= n;
            }
        }
        runs.extend(std::iter::repeat_n((len, 0), left));
        i += run;
    }
    runs
}

/// Bits written least significant first, as deflate packs them.
#[derive(Default)]
struct BitWriter {
    acc: u64,
    n: u32,
    out: Vec<u8>,
}

impl BitWriter {
    fn put(&mut self, bits: u32, len: u32) {
        self.acc |= u64::from(bits) << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn put_code(&mut self, code: Code) {
        self.put(u32::from(code.bits), u32::from(code.len));
    }

    /// Writes out the last bits, padded to a whole byte.
    fn flush(&mut self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc = 0;
            self.n = 0;
        }
    }
}

/// The length symbol (less 257) of each match length, 0 to 258.
static LENGTH_SYMBOLS: [u8; MAX_MATCH + 1] = {
    let mut table = [0u8; MAX_MATCH + 1];
    let mut symbol = 0;
    let mut len = 3;
    while len <= MAX_MATCH {
        while symbol + 1 < LEN_BASE.len() && LEN_BASE[symbol + 1] as usize <= len {
            symbol += 1;
        }
        table[len] = symbol as u8;
        len += 1;
    }
    table
};

/// The distance symbol of each distance up to 256 (less one), and of each longer one by its
/// 128s (less one): deflate's distance symbols past 256 cover multiples of 128.
static DISTANCE_SYMBOLS: [[u8; 256]; 2] = {
    let mut table = [[0u8; 256]; 2];
    let mut i = 0;
    while i < 256 {
        table[0][i] = distance_symbol_of(i as u32 + 1);
        table[1][i] = distance_symbol_of(((i as u32) << 7) + 1);
        i += 1;
    }
    table
};

const fn distance_symbol_of(dist: u32) -> u8 {
    let mut symbol = 0;
    while symbol + 1 < DIST_BASE.len() && DIST_BASE[symbol + 1] as u32 <= dist {
        symbol += 1;
    }
    symbol as u8
}

/// The length symbol (less 257) of a match `len` long.
fn length_symbol(len: u16) -> usize {
    usize::from(LENGTH_SYMBOLS[usize::from(len).min(MAX_MATCH)])
}

/// The distance symbol of a match `dist` back.
fn distance_symbol(dist: u16) -> usize {
    let d = usize::from(dist.max(1)) - 1;
    match d < 256 {
        true => usize::from(DISTANCE_SYMBOLS[0][d]),
        false => usize::from(DISTANCE_SYMBOLS[1][(d >> 7).min(255)]),
    }
}

/// What a body is written as: bytes, and copies of earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(u8),
    Match { len: u16, dist: u16 },
}

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const WINDOW: usize = 32_768;
const HASH_BITS: u32 = 15;
/// How many earlier places with the same three bytes are tried: more finds little in bodies
/// this small.
const MAX_CHAIN: usize = 16;
/// A match this long ends the search for a longer one.
const NICE_LENGTH: usize = 128;
/// A match this long is taken without looking one byte further for a longer one.
const LAZY_ENOUGH: usize = 32;
/// A match of three bytes further back than this costs more than its three literals.
const TOO_FAR_FOR_THREE: usize = 4_096;

thread_local! {
    static MATCHER: RefCell<Matcher> = RefCell::new(Matcher::new());
}

/// Finds the matches a body is written with: a hash of each place's next three bytes, and a
/// chain through the earlier places with the same hash. The hash table is kept between bodies
/// (clearing 128 KiB for each small body would cost more than matching it): a place is stored
/// as `base` plus its offset, and only what is at least this body's `base` belongs to it.
struct Matcher {
    head: Vec<u32>,
    prev: Vec<u32>,
    base: u32,
}

impl Matcher {
    fn new() -> Matcher {
        Matcher {
            head: vec![0; 1 << HASH_BITS],
            prev: Vec::new(),
            base: 1,
        }
    }

    fn parse(&mut self, plain: &[u8], mut emit: impl FnMut(Token)) {
        let n = plain.len();
        // Make room for this body's places above every earlier one's.
        if u64::from(self.base) + n as u64 + 1 >= u64::from(u32::MAX) {
            self.head.fill(0);
            self.base = 1;
        }
        let base = self.base;
        self.base += n as u32 + 1;
        self.prev.clear();
        self.prev.resize(n, 0);
        let mut i = 0;
        // A match found at i - 1 that a literal was written for, to see whether i's is longer.
        let mut pending: Option<(usize, usize)> = None;
        while i < n {
            let found = self.longest(plain, base, i);
            self.insert(plain, base, i);
            if let Some((len, dist)) = pending.take() {
                if found.0 <= len {
                    // The earlier match wins: it starts at i - 1 and covers i already.
                    emit(Token::Match {
                        len: len as u16,
                        dist: dist as u16,
                    });
                    for at in i + 1..i - 1 + len {
                        self.insert(plain, base, at);
                    }
                    i = i - 1 + len;
                    continue;
                }
                emit(Token::Literal(plain[i - 1]));
            }
            let (len, dist) = found;
            if len >= LAZY_ENOUGH {
                emit(Token::Match {
                    len: len as u16,
                    dist: dist as u16,
                });
                for at in i + 1..i + len {
                    self.insert(plain, base, at);
                }
                i += len;
            } else if len >= MIN_MATCH && i + 1 < n {
                pending = Some((len, dist));
                i += 1;
            } else if len >= MIN_MATCH {
                emit(Token::Match {
                    len: len as u16,
                    dist: dist as u16,
                });
                i += len;
            } else {
                emit(Token::Literal(plain[i]));
                i += 1;
            }
        }
        if let Some((len, dist)) = pending {
            // Only when the last byte's place found nothing longer; it ends at the body's end.
            emit(Token::Match {
                len: len as u16,
                dist: dist as u16,
            });
        }
    }

    fn hash(plain: &[u8], at: usize) -> usize {
        let word =
            u32::from(plain[at]) | u32::from(plain[at + 1]) << 8 | u32::from(plain[at + 2]) << 16;
        (word.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    }

    fn insert(&mut self, plain: &[u8], base: u32, at: usize) {
        if at + MIN_MATCH > plain.len() {
            return;
        }
        let h = Self::hash(plain, at);
        self.prev[at] = self.head[h];
        self.head[h] = base + at as u32;
    }

    /// The longest earlier match for what starts at `at`: (length, distance), or a length
    /// under [`MIN_MATCH`] if there is none worth writing.
    fn longest(&self, plain: &[u8], base: u32, at: usize) -> (usize, usize) {
        let mut best = (0, 0);
        if at + MIN_MATCH > plain.len() {
            return best;
        }
        let limit = (plain.len() - at).min(MAX_MATCH);
        let mut candidate = self.head[Self::hash(plain, at)];
        for _ in 0..MAX_CHAIN {
            if candidate < base {
                break;
            }
            let from = (candidate - base) as usize;
            let dist = at - from;
            if dist > WINDOW {
                break;
            }
            if plain[from + best.0] == plain[at + best.0] {
                let len = plain[from..from + limit]
                    .iter()
                    .zip(&plain[at..at + limit])
                    .take_while(|(a, b)| a == b)
                    .count();
                if len > best.0 {
                    best = (len, dist);
                    if len >= NICE_LENGTH.min(limit) {
                        break;
                    }
                }
            }
            candidate = self.prev[from];
        }
        if best.0 == MIN_MATCH && best.1 > TOO_FAR_FOR_THREE {
            best = (0, 0);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trained(samples: &[&[u8]]) -> SharedCodes {
        let mut counts = SymbolCounts::default();
        for s in samples {
            counts.add(s);
        }
        SharedCodes::from_lengths(&counts.lengths()).expect("a usable code")
    }

    fn member(codes: &SharedCodes, plain: &[u8]) -> Vec<u8> {
        let mut gz = codes.prefix().to_vec();
        gz.extend_from_slice(&codes.encode(plain));
        gz
    }

    fn gunzip(gz: &[u8], len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        let n = libdeflater::Decompressor::new()
            .gzip_decompress(gz, &mut out)
            .expect("a gzip member libdeflate reads");
        out.truncate(n);
        out
    }

    /// Bodies of every shape a code meets: empty, one byte, runs, every byte value, text that
    /// repeats further back than the window, and bytes the training never saw.
    fn shapes() -> Vec<Vec<u8>> {
        let text: Vec<u8> = (0..3_000)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"Item {}\"}},", i % 17).into_bytes())
            .collect();
        let mut noise = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..70_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            noise.push((x >> 16) as u8);
        }
        let mut far = noise[..40_000].to_vec();
        far.extend_from_slice(&noise[..1_000]);
        vec![
            Vec::new(),
            b"a".to_vec(),
            b"ab".to_vec(),
            vec![b'x'; 1_000],
            (0..=255u8).collect(),
            text,
            noise,
            far,
            br#"{"id":12,"name":"Heir Force Ones","slogan":"A sneaker dynasty"}"#.to_vec(),
        ]
    }

    #[test]
    fn every_body_written_in_a_code_is_one_gzip_member_behind_its_prefix() {
        let codes = trained(&[br#"{"id":1,"name":"Camo Onesie","features":[]}"#]);
        for plain in shapes() {
            let gz = member(&codes, &plain);
            assert_eq!(gunzip(&gz, plain.len()), plain, "{} bytes", plain.len());
            assert!(gz.starts_with(&GZIP_HEADER));
        }
    }

    #[test]
    fn a_code_trained_on_a_kind_writes_its_bodies_smaller_than_gzip_alone() {
        let bodies: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                format!(
                    r#"{{"id":{i},"name":"Product {i}","slogan":"Slogan number {}","description":"A fine thing, made well, {} times over.","category":"Cat {}","default_price":"{}.00","features":[{{"feature":"Material","value":"Cotton"}}]}}"#,
                    i * 7,
                    i % 13,
                    i % 5,
                    100 + i
                )
                .into_bytes()
            })
            .collect();
        let (train, test) = bodies.split_at(100);
        let refs: Vec<&[u8]> = train.iter().map(Vec::as_slice).collect();
        let codes = trained(&refs);
        let shared: usize = test.iter().map(|b| codes.encode(b).len()).sum();
        let alone: usize = test
            .iter()
            .map(|b| crate::render::compress::gzip(b).map_or(b.len(), |g| g.len()))
            .sum();
        assert!(
            shared + 10 * test.len() < alone,
            "shared {shared} bytes against {alone} alone"
        );
        for b in test {
            assert_eq!(gunzip(&member(&codes, b), b.len()), *b);
        }
    }

    #[test]
    fn codes_of_every_shape_make_members_an_inflater_reads() {
        // Lengths of every shape: folded back to the limit, all nearly equal.
        let mut counts = SymbolCounts::default();
        for i in 0..50 {
            counts.litlen[i] = 1 << i;
        }
        for i in 0..DIST {
            counts.dist[i] = 1 << (2 * i);
        }
        let skewed = SharedCodes::from_lengths(&counts.lengths()).expect("usable");
        assert!(skewed.lengths().contains(&MAX_BITS));
        let flat = SharedCodes::from_lengths(&SymbolCounts::default().lengths()).expect("usable");
        for codes in [skewed, flat] {
            for plain in shapes() {
                assert_eq!(gunzip(&member(&codes, &plain), plain.len()), plain);
            }
        }
    }

    #[test]
    fn lengths_that_are_not_a_whole_code_are_refused() {
        let good = SymbolCounts::default().lengths();
        assert!(SharedCodes::from_lengths(&good).is_some());
        let mut zero = good.clone();
        zero[7] = 0;
        let mut long = good.clone();
        long[7] = 16;
        let mut over = good.clone();
        over[7] -= 1;
        for bad in [zero, long, over, good[1..].to_vec(), Vec::new()] {
            assert!(SharedCodes::from_lengths(&bad).is_none());
        }
    }

    #[test]
    fn a_kind_keeps_the_first_code_installed() {
        let slot = OnceLock::new();
        let first = SymbolCounts::default().lengths();
        let mut counts = SymbolCounts::default();
        counts.add(b"another code altogether, another code");
        let second = counts.lengths();
        assert_ne!(first, second);
        assert!(install_in(&slot, CodesKind::Meta, &first).is_ok());
        assert!(install_in(&slot, CodesKind::Meta, &first).is_ok());
        assert!(matches!(
            install_in(&slot, CodesKind::Meta, &second),
            Err(CodesError::Another(CodesKind::Meta))
        ));
        let fresh = OnceLock::new();
        assert!(matches!(
            install_in(&fresh, CodesKind::Meta, &[1, 2, 3]),
            Err(CodesError::Unusable(CodesKind::Meta))
        ));
        assert_eq!(slot.get().map(SharedCodes::lengths), Some(&first[..]));
    }

    #[test]
    fn lengths_and_distances_map_to_their_symbols() {
        // Each symbol covers its base up to the next one's.
        for len in 3..=MAX_MATCH as u16 {
            let l = length_symbol(len);
            assert!(
                LEN_BASE[l] <= len
                    && (l == 28 || LEN_BASE.get(l + 1).is_none_or(|&next| len < next)),
                "{len}"
            );
            assert!(
                len - LEN_BASE[l] < 1 << LEN_EXTRA[l] || l == 28 && len == 258,
                "{len}"
            );
        }
        assert_eq!(length_symbol(257), 27);
        assert_eq!(length_symbol(258), 28);
        for dist in 1..=WINDOW as u16 {
            let d = distance_symbol(dist);
            assert!(DIST_BASE[d] <= dist, "{dist}");
            assert!(
                u32::from(dist - DIST_BASE[d]) < 1 << DIST_EXTRA[d],
                "{dist}"
            );
        }
        assert_eq!(distance_symbol(32_768), 29);
    }
}
