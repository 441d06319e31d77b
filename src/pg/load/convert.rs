//! Turns lines of a data set file into rows of PostgreSQL's COPY text format, checking every
//! field against its [`Column`] description and every reference against the ids already
//! loaded. Pure and synchronous: the loader runs it on a thread of its own, and tests call it
//! directly.

use std::collections::HashSet;

use crate::dataset::csv_line::{has_unbalanced_quote, Fields, LineError};
use crate::dataset::{Column, Table};
use crate::time::{self, push_iso_millis};

/// The ids of one table that made it into the database.
///
/// A bitmap for ids below 2^28 (the real set's ids are dense and below 20M, so this is a few
/// MB at most) and a hash set for the rare larger ones, so a hostile id cannot make the
/// loader allocate gigabytes.
#[derive(Debug, Default, Clone)]
pub struct IdSet {
    bits: Vec<u64>,
    large: HashSet<i64>,
    len: u64,
}

const BITMAP_LIMIT: i64 = 1 << 28;

impl IdSet {
    /// Adds `id`; false if it was already there.
    pub fn insert(&mut self, id: i64) -> bool {
        let added = if (0..BITMAP_LIMIT).contains(&id) {
            let (word, bit) = ((id >> 6) as usize, 1u64 << (id & 63));
            if word >= self.bits.len() {
                self.bits.resize((word + 1).next_power_of_two(), 0);
            }
            let fresh = self.bits[word] & bit == 0;
            self.bits[word] |= bit;
            fresh
        } else {
            self.large.insert(id)
        };
        self.len += u64::from(added);
        added
    }

    pub fn contains(&self, id: i64) -> bool {
        if (0..BITMAP_LIMIT).contains(&id) {
            self.bits
                .get((id >> 6) as usize)
                .is_some_and(|w| w & (1u64 << (id & 63)) != 0)
        } else {
            self.large.contains(&id)
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The loaded ids of every parent table, indexed by position in [`Table::ALL`].
#[derive(Debug, Default)]
pub struct LoadedIds(Vec<Option<IdSet>>);

impl LoadedIds {
    pub fn get(&self, table: Table) -> Option<&IdSet> {
        self.0.get(index(table)).and_then(Option::as_ref)
    }

    pub fn put(&mut self, table: Table, ids: IdSet) {
        let i = index(table);
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some(ids);
    }
}

fn index(table: Table) -> usize {
    Table::ALL.iter().position(|&t| t == table).unwrap_or(0)
}

/// What became of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the COPY stream as it was.
    Loaded,
    /// Written after a repair (the reason says which).
    Repaired(String),
    /// Malformed: not written.
    Skipped(String),
    /// Well-formed, but it refers to a row that does not exist: not written.
    Dropped(String),
}

/// Converts the lines of one file, tracking the ids it has written.
pub struct Converter<'a> {
    table: Table,
    columns: &'static [Column],
    names: Vec<&'static str>,
    parents: &'a LoadedIds,
    ids: IdSet,
    fields: Fields,
    repaired: Vec<u8>,
}

enum Problem {
    Skip(String),
    Drop(String),
}

impl<'a> Converter<'a> {
    pub fn new(table: Table, parents: &'a LoadedIds) -> Self {
        Converter {
            table,
            columns: table.columns(),
            names: table.header().split(',').collect(),
            parents,
            ids: IdSet::default(),
            fields: Fields::new(),
            repaired: Vec::new(),
        }
    }

    /// The ids written so far.
    pub fn into_ids(self) -> IdSet {
        self.ids
    }

    /// Converts one line (without its line ending), appending a COPY row to `out` unless the
    /// outcome says the line was skipped or dropped.
    pub fn convert(&mut self, line: &[u8], out: &mut Vec<u8>) -> Outcome {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Outcome::Skipped("empty line".into());
        }
        let mut repair = None;
        match self.fields.parse(line) {
            Ok(()) => {}
            Err(LineError::UnbalancedQuote) if has_unbalanced_quote(line) => {
                self.repaired.clear();
                self.repaired.extend_from_slice(line);
                self.repaired.push(b'"');
                if let Err(e) = self.fields.parse(&self.repaired) {
                    return Outcome::Skipped(format!(
                        "unbalanced quote, and closing it did not help: {e}"
                    ));
                }
                repair = Some("closed an unbalanced quote at the end of the line".to_owned());
            }
            Err(e) => return Outcome::Skipped(e.to_string()),
        }
        if self.fields.len() != self.columns.len() {
            return Outcome::Skipped(format!(
                "expected {} fields, found {}",
                self.columns.len(),
                self.fields.len()
            ));
        }
        let start = out.len();
        match self.write_row(out, &mut repair) {
            Ok(id) => {
                if !self.ids.insert(id) {
                    out.truncate(start);
                    return Outcome::Skipped(format!("duplicate id {id}"));
                }
                match repair {
                    Some(why) => Outcome::Repaired(why),
                    None => Outcome::Loaded,
                }
            }
            Err(problem) => {
                out.truncate(start);
                match problem {
                    Problem::Skip(why) => Outcome::Skipped(why),
                    Problem::Drop(why) => Outcome::Dropped(why),
                }
            }
        }
    }

    /// Writes the row; returns its id. A malformed field wins over a dangling reference, so
    /// that "dropped" always means a well-formed row whose parent is missing.
    fn write_row(&self, out: &mut Vec<u8>, repair: &mut Option<String>) -> Result<i64, Problem> {
        let mut id = None;
        let mut dangling = None;
        for (i, column) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            let raw = self.fields.bytes(i);
            let name = self.names[i];
            let null = self.fields.is_null(i);
            let bad = |what: &str| {
                Problem::Skip(format!("{name}: {what} `{}`", String::from_utf8_lossy(raw)))
            };
            match *column {
                Column::Id => {
                    let v = parse_int(raw)
                        .filter(|&v| v > 0)
                        .ok_or_else(|| bad("not an id"))?;
                    id = Some(v);
                    push_int(out, v);
                }
                Column::Ref(parent) => {
                    let v = parse_int(raw)
                        .filter(|&v| v >= 0)
                        .ok_or_else(|| bad("not an id"))?;
                    let exists = self.parents.get(parent).is_some_and(|ids| ids.contains(v));
                    if !exists && dangling.is_none() {
                        dangling = Some(format!("{name} {v} is not in {}", parent.file_name()));
                    }
                    push_int(out, v);
                }
                Column::Int { min, max } => {
                    let v = parse_int(raw)
                        .filter(|v| (min..=max).contains(v))
                        .ok_or_else(|| bad(&format!("not an integer in {min}..={max}")))?;
                    push_int(out, v);
                }
                // `null` is a missing value in any column (the format's rule), quoted or not:
                // no loaded value shows as the string "null".
                Column::Text | Column::OptText if null || raw == b"null" => {
                    out.extend_from_slice(b"\\N")
                }
                Column::Text | Column::OptText => push_text(out, raw, name, repair),
                Column::Money if null || raw == b"null" => out.extend_from_slice(b"\\N"),
                // An empty price is outside the format, but one empty field must not take a
                // style with its photos and skus (or a product with everything under it) out
                // of the catalog: it loads as no price, and the report says so.
                Column::Money if raw.is_empty() => {
                    out.extend_from_slice(b"\\N");
                    *repair = Some(format!("{name}: empty, loaded as no price"));
                }
                Column::Money => {
                    if !is_money(raw) {
                        return Err(bad("not a price"));
                    }
                    out.extend_from_slice(raw);
                }
                // An empty sale price, like `null` or a zero, is no sale.
                Column::OptMoney => {
                    let zero = is_money(raw) && raw.iter().all(|&b| b == b'0' || b == b'.');
                    if null || raw == b"null" || raw.is_empty() || zero {
                        out.extend_from_slice(b"\\N");
                    } else if is_money(raw) {
                        out.extend_from_slice(raw);
                    } else {
                        return Err(bad("not a price or null"));
                    }
                }
                Column::Bool => out.push(match raw {
                    b"true" | b"1" | b"t" | b"TRUE" | b"True" => b't',
                    b"false" | b"0" | b"f" | b"FALSE" | b"False" => b'f',
                    _ => return Err(bad("not a boolean")),
                }),
                Column::EpochMillis => {
                    let v = parse_int(raw).ok_or_else(|| bad("not epoch milliseconds"))?;
                    // PostgreSQL refuses year 0 (and this writer clamps past 9999): such a row
                    // is skipped and reported, not left to abort the file's COPY.
                    if !(time::FIRST_ISO_MS..=time::LAST_ISO_MS).contains(&v) {
                        return Err(bad("a date outside years 1 to 9999"));
                    }
                    push_iso_millis(out, v);
                }
            }
        }
        out.push(b'\n');
        if let Some(why) = dangling {
            return Err(Problem::Drop(why));
        }
        id.ok_or_else(|| Problem::Skip(format!("{}: no id column", self.table.file_name())))
    }
}

fn parse_int(raw: &[u8]) -> Option<i64> {
    let (negative, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -v } else { v })
}

/// `140`, `35.5`, `19.99`: digits with at most two decimals, fitting numeric(12,2).
fn is_money(raw: &[u8]) -> bool {
    let (whole, cents) = match raw.iter().position(|&b| b == b'.') {
        Some(p) => (&raw[..p], &raw[p + 1..]),
        None => (raw, &b""[..]),
    };
    !whole.is_empty()
        && whole.len() <= 10
        && cents.len() <= 2
        && whole.iter().chain(cents).all(u8::is_ascii_digit)
        && (raw.len() == whole.len() || !cents.is_empty())
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    crate::digits::push_i128(out, v.into());
}

/// Escapes text for COPY. Invalid UTF-8 and NUL bytes (which PostgreSQL rejects, failing the
/// whole COPY) are replaced, and the row is reported as repaired.
fn push_text(out: &mut Vec<u8>, raw: &[u8], column: &str, repair: &mut Option<String>) {
    let text = match std::str::from_utf8(raw) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => {
            *repair = Some(format!("{column}: replaced bytes that are not UTF-8"));
            String::from_utf8_lossy(raw)
        }
    };
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => *repair = Some(format!("{column}: removed a NUL byte")),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(table: Table, parents: &LoadedIds, line: &str) -> (Outcome, String) {
        let mut c = Converter::new(table, parents);
        let mut out = Vec::new();
        let outcome = c.convert(line.as_bytes(), &mut out);
        (outcome, String::from_utf8(out).unwrap())
    }

    fn with_products(ids: &[i64]) -> LoadedIds {
        let mut set = IdSet::default();
        for &id in ids {
            set.insert(id);
        }
        let mut parents = LoadedIds::default();
        parents.put(Table::Products, set);
        parents
    }

    #[test]
    fn converts_a_review() {
        let parents = with_products(&[2]);
        let (outcome, row) = convert(
            Table::Reviews,
            &parents,
            r#"4,2,3,1608430525823,"Its ok, but ""meh""","a\b	c",false,false,"short","s@x.com",null,8"#,
        );
        assert_eq!(outcome, Outcome::Loaded);
        assert_eq!(
            row,
            "4\t2\t3\t2020-12-20T02:15:25.823Z\tIts ok, but \"meh\"\ta\\\\b\\tc\tf\tf\tshort\ts@x.com\t\\N\t8\n"
        );
    }

    #[test]
    fn repairs_skips_and_drops() {
        let mut styles = IdSet::default();
        styles.insert(2);
        let mut parents = LoadedIds::default();
        parents.put(Table::Styles, styles);
        let (o, row) = convert(Table::Photos, &parents, r#"4,2,"https://a","https://b"#);
        assert!(matches!(o, Outcome::Repaired(_)), "{o:?}");
        assert_eq!(row, "4\t2\thttps://a\thttps://b\n");
        let (o, row) = convert(Table::Photos, &parents, r#"8,99,"https://a","https://b""#);
        assert!(matches!(o, Outcome::Dropped(_)), "{o:?}");
        assert_eq!(row, "");
        let (o, _) = convert(Table::Photos, &parents, r#"x,2,"https://a","https://b""#);
        assert!(matches!(o, Outcome::Skipped(_)), "{o:?}");
        let (o, _) = convert(Table::Photos, &parents, "5,2,a");
        assert_eq!(o, Outcome::Skipped("expected 4 fields, found 3".into()));
    }

    #[test]
    fn dates_outside_years_1_to_9999_are_skipped() {
        let parents = with_products(&[1]);
        let question = |date: i64| {
            convert(
                Table::Questions,
                &parents,
                &format!(r#"1,1,"Why?",{date},"a","a@b.co",0,0"#),
            )
        };
        let (o, row) = question(-62_135_596_800_000);
        assert_eq!(o, Outcome::Loaded);
        assert!(row.contains("\t0001-01-01T00:00:00.000Z\t"), "{row}");
        let (o, row) = question(253_402_300_799_999);
        assert_eq!(o, Outcome::Loaded);
        assert!(row.contains("\t9999-12-31T23:59:59.999Z\t"), "{row}");
        for date in [
            -62_135_596_800_001,
            253_402_300_800_000,
            -i64::MAX,
            i64::MAX,
        ] {
            let (o, row) = question(date);
            assert!(
                matches!(&o, Outcome::Skipped(why) if why.contains("outside years 1 to 9999")),
                "{date}: {o:?}"
            );
            assert_eq!(row, "", "{date}");
        }
    }

    #[test]
    fn duplicate_ids_are_skipped() {
        let parents = with_products(&[1]);
        let mut c = Converter::new(Table::Features, &parents);
        let mut out = Vec::new();
        assert_eq!(
            c.convert(br#"1,1,"Fabric","Canvas""#, &mut out),
            Outcome::Loaded
        );
        assert!(matches!(
            c.convert(br#"1,1,"Fabric","Silk""#, &mut out),
            Outcome::Skipped(_)
        ));
        assert_eq!(String::from_utf8(out).unwrap(), "1\t1\tFabric\tCanvas\n");
    }

    #[test]
    fn prices_and_nulls() {
        let parents = with_products(&[1]);
        let (o, row) = convert(Table::Styles, &parents, r#"1,1,"A",null,140,1"#);
        assert_eq!(
            (o, row.as_str()),
            (Outcome::Loaded, "1\t1\tA\t\\N\t140\tt\n")
        );
        let (_, row) = convert(Table::Styles, &parents, r#"1,1,"A",0,140,0"#);
        assert_eq!(row, "1\t1\tA\t\\N\t140\tf\n");
        let (_, row) = convert(Table::Styles, &parents, r#"1,1,"A","null",140,0"#);
        assert_eq!(
            row, "1\t1\tA\t\\N\t140\tf\n",
            "a quoted null is no price either"
        );
        let (_, row) = convert(Table::Styles, &parents, r#"1,1,"A",35.5,140,0"#);
        assert_eq!(row, "1\t1\tA\t35.5\t140\tf\n");
        let (o, _) = convert(Table::Styles, &parents, r#"1,1,"A",-3,140,0"#);
        assert!(matches!(o, Outcome::Skipped(_)));
        let (o, _) = convert(Table::Styles, &parents, r#"1,1,"A",null,nothing,0"#);
        assert!(matches!(o, Outcome::Skipped(_)), "not a price");
        for empty in [r#"1,1,"A",,140,1"#, r#"1,1,"A","",140,1"#] {
            let (o, row) = convert(Table::Styles, &parents, empty);
            assert_eq!(
                (o, row.as_str()),
                (Outcome::Loaded, "1\t1\tA\t\\N\t140\tt\n"),
                "an empty sale price is no sale: {empty}"
            );
        }
        let (o, row) = convert(Table::Styles, &parents, r#"1,1,"A",,,1"#);
        assert_eq!(
            (o, row.as_str()),
            (
                Outcome::Repaired("original_price: empty, loaded as no price".into()),
                "1\t1\tA\t\\N\t\\N\tt\n"
            ),
            "an empty price is a missing one, and reported"
        );
        let (o, row) = convert(Table::Products, &parents, r#"2,"P","S","D","Pants","#);
        assert_eq!(
            (o, row.as_str()),
            (
                Outcome::Repaired("default_price: empty, loaded as no price".into()),
                "2\tP\tS\tD\tPants\t\\N\n"
            )
        );
        for not_zero in [".", "0.0.0", "00."] {
            let line = format!("1,1,\"A\",{not_zero},140,1");
            let (o, _) = convert(Table::Styles, &parents, &line);
            assert!(matches!(o, Outcome::Skipped(_)), "{not_zero}: {o:?}");
        }
        let (o, row) = convert(Table::Styles, &parents, r#"1,1,"A",0.00,140,1"#);
        assert_eq!(
            (o, row.as_str()),
            (Outcome::Loaded, "1\t1\tA\t\\N\t140\tt\n"),
            "a zero sale price is no sale"
        );
    }

    /// The format's `null` is a missing value in every column, the ones the data set always
    /// fills included: the row loads with that field NULL instead of being skipped.
    #[test]
    fn null_is_a_missing_value_in_any_column() {
        let parents = with_products(&[1]);
        let (o, row) = convert(Table::Features, &parents, r#"1,1,null,"x""#);
        assert_eq!((o, row.as_str()), (Outcome::Loaded, "1\t1\t\\N\tx\n"));
        let (o, row) = convert(
            Table::Products,
            &parents,
            r#"2,null,"null",null,"Pants",null"#,
        );
        assert_eq!(
            (o, row.as_str()),
            (Outcome::Loaded, "2\t\\N\t\\N\t\\N\tPants\t\\N\n")
        );
        let (o, row) = convert(Table::Styles, &parents, r#"1,1,null,null,null,1"#);
        assert_eq!(
            (o, row.as_str()),
            (Outcome::Loaded, "1\t1\t\\N\t\\N\t\\N\tt\n")
        );
        let (o, row) = convert(Table::Styles, &parents, r#"1,1,"null",null,"null",1"#);
        assert_eq!(
            (o, row.as_str()),
            (Outcome::Loaded, "1\t1\t\\N\t\\N\t\\N\tt\n"),
            "a quoted null too"
        );
        let reviews = with_products(&[2]);
        let (o, row) = convert(
            Table::Reviews,
            &reviews,
            "4,2,3,1608430525823,null,null,false,false,null,null,null,8",
        );
        assert_eq!(o, Outcome::Loaded);
        assert_eq!(
            row,
            "4\t2\t3\t2020-12-20T02:15:25.823Z\t\\N\t\\N\tf\tf\t\\N\t\\N\t\\N\t8\n"
        );
    }

    #[test]
    fn id_sets() {
        let mut s = IdSet::default();
        assert!(s.insert(5));
        assert!(!s.insert(5));
        assert!(s.insert(i64::MAX));
        assert!(s.contains(5) && s.contains(i64::MAX) && !s.contains(6) && !s.contains(-1));
        assert_eq!(s.len(), 2);
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert!(is_money(b"140") && is_money(b"19.99") && !is_money(b"1.") && !is_money(b"1.999"));
    }
}
