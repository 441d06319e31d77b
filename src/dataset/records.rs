//! Reads a data set file record by record: a record is one line, or, where a quoted field
//! holds a line break, the lines that field spans.
//!
//! The data set's records are lines, and one of its quirks is a line whose last quoted field
//! lost its closing quote (photos.csv). Standard CSV also lets a quoted field hold a line
//! break, which a file written by another tool may use. The two look alike at the end of the
//! first line, so a line that ends inside a quoted field is joined with the lines after it
//! only where the joined text splits cleanly into exactly the file's columns; otherwise it is
//! handed out alone, for the loader's repair, and the lines read ahead come next as records
//! of their own. A field that lost its closing quote is followed by a line whose first quote
//! closes it and whose text then follows that quote, which no clean record has.

use std::collections::VecDeque;
use std::io::{self, BufRead};

use super::csv_line::{has_unbalanced_quote, Fields, LineError};

/// The most lines one record may span, and the most bytes: past either, the first line is
/// taken alone (so a join never holds more of a file than this and the one line that went past
/// it).
const MAX_LINES: usize = 64;
const MAX_BYTES: usize = 1 << 20;

/// Where a record came from in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The number of its first line (the header is line 1).
    pub first_line: u64,
    /// How many lines it spans.
    pub lines: u64,
}

/// The records of a file whose header has been read.
pub struct Records<R> {
    reader: R,
    /// Lines read while looking for the end of a field, and not taken into it: each is read
    /// again as a record of its own. With its number, and its line ending.
    ahead: VecDeque<(u64, Vec<u8>)>,
    /// The number of the next line the reader gives.
    next_line: u64,
    columns: usize,
    fields: Fields,
    /// Bytes read from the reader so far.
    consumed: u64,
}

impl<R: BufRead> Records<R> {
    /// The records of `reader`, positioned after the header (line 1) of a file of `columns`
    /// columns.
    pub fn new(reader: R, columns: usize) -> Records<R> {
        Records {
            reader,
            ahead: VecDeque::new(),
            next_line: 2,
            columns,
            fields: Fields::new(),
            consumed: 0,
        }
    }

    /// Bytes read from the file after the header.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether every record has been read.
    pub fn at_end(&mut self) -> io::Result<bool> {
        Ok(self.ahead.is_empty() && self.reader.fill_buf()?.is_empty())
    }

    /// Reads the next record into `record` (without its line ending; line breaks within it
    /// kept as they were), or says the file has ended.
    pub fn next_into(&mut self, record: &mut Vec<u8>) -> io::Result<Option<Span>> {
        record.clear();
        let Some(first_line) = self.line_into(record)? else {
            return Ok(None);
        };
        let first_len = record.len();
        let mut span = Span {
            first_line,
            lines: 1,
        };
        if self.ends_inside_a_field(strip_line_end(record)) {
            // The lines tried, as their numbers and where each lies in `record`.
            let mut tried: Vec<(u64, usize)> = Vec::new();
            let joined = loop {
                if tried.len() + 1 >= MAX_LINES {
                    break false;
                }
                let start = record.len();
                let Some(number) = self.line_into(record)? else {
                    break false;
                };
                tried.push((number, start));
                if record.len() > MAX_BYTES {
                    break false;
                }
                match self.fields.parse(strip_line_end(record)) {
                    Ok(()) => break self.fields.len() == self.columns,
                    Err(LineError::UnbalancedQuote) => continue,
                    Err(LineError::TextAfterQuote { .. }) => break false,
                }
            };
            if joined {
                span.lines += tried.len() as u64;
            } else {
                let mut end = record.len();
                for &(number, start) in tried.iter().rev() {
                    self.ahead.push_front((number, record[start..end].to_vec()));
                    end = start;
                }
                record.truncate(first_len);
            }
        }
        let len = strip_line_end(record).len();
        record.truncate(len);
        Ok(Some(span))
    }

    /// Appends the next line, with its line ending, to `out`; returns its number.
    fn line_into(&mut self, out: &mut Vec<u8>) -> io::Result<Option<u64>> {
        if let Some((number, line)) = self.ahead.pop_front() {
            out.extend_from_slice(&line);
            return Ok(Some(number));
        }
        let n = self.reader.read_until(b'\n', out)?;
        if n == 0 {
            return Ok(None);
        }
        self.consumed += n as u64;
        self.next_line += 1;
        Ok(Some(self.next_line - 1))
    }

    /// Whether `line` ends inside a quoted field: an odd number of quotes (the cheap test
    /// every line takes) and a field that runs to its end.
    fn ends_inside_a_field(&mut self, line: &[u8]) -> bool {
        has_unbalanced_quote(line)
            && matches!(self.fields.parse(line), Err(LineError::UnbalancedQuote))
    }
}

/// `line` without its line ending (`\n` or `\r\n`, or a stray `\r`).
fn strip_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `text` (after a header line), with its span.
    fn records(text: &str, columns: usize) -> Vec<(String, u64, u64)> {
        let body = text.split_once('\n').map_or("", |(_, rest)| rest);
        let mut records = Records::new(body.as_bytes(), columns);
        let mut out = Vec::new();
        let mut all = Vec::new();
        while let Some(span) = records.next_into(&mut out).unwrap() {
            let text = String::from_utf8(out.clone()).unwrap();
            all.push((text, span.first_line, span.lines));
        }
        assert!(records.at_end().unwrap());
        assert_eq!(records.consumed(), body.len() as u64);
        all
    }

    fn owned(expected: &[(&str, u64, u64)]) -> Vec<(String, u64, u64)> {
        expected
            .iter()
            .map(|&(text, first, lines)| (text.to_owned(), first, lines))
            .collect()
    }

    #[test]
    fn a_record_is_a_line_without_its_ending() {
        let text = "id,a,b\n1,\"x\",y\r\n2,z,\"w\"\"q\"\"\"\n3,null,\n";
        assert_eq!(
            records(text, 3),
            owned(&[
                ("1,\"x\",y", 2, 1),
                ("2,z,\"w\"\"q\"\"\"", 3, 1),
                ("3,null,", 4, 1)
            ])
        );
    }

    #[test]
    fn a_quoted_field_that_holds_line_breaks_spans_them() {
        let text =
            "id,body,n\n1,\"one\ntwo\r\n\"\"three\"\"\",5\n2,\"plain\",6\n3,\"last\nline\",7";
        assert_eq!(
            records(text, 3),
            owned(&[
                ("1,\"one\ntwo\r\n\"\"three\"\"\",5", 2, 3),
                ("2,\"plain\",6", 5, 1),
                ("3,\"last\nline\",7", 6, 2),
            ])
        );
    }

    #[test]
    fn a_field_that_lost_its_closing_quote_stays_on_its_line() {
        // photos.csv's quirk, followed by a quoted line, an unquoted one, and the file's end.
        let text = "id,styleId,url,thumbnail_url\n\
                    4,2,\"https://a/668\",\"https://a/300\n\
                    5,4,\"https://b/668\",\"https://b/300\"\n\
                    6,4,\"https://c/668\",\"https://c/300\n\
                    9,8,https://d/668,https://d/300\n\
                    10,8,\"https://e/668\",\"https://e/300\n";
        assert_eq!(
            records(text, 4),
            owned(&[
                ("4,2,\"https://a/668\",\"https://a/300", 2, 1),
                ("5,4,\"https://b/668\",\"https://b/300\"", 3, 1),
                ("6,4,\"https://c/668\",\"https://c/300", 4, 1),
                ("9,8,https://d/668,https://d/300", 5, 1),
                ("10,8,\"https://e/668\",\"https://e/300", 6, 1),
            ])
        );
    }

    #[test]
    fn lines_joined_into_the_wrong_number_of_columns_are_records_of_their_own() {
        // The second line closes the first's field, but the two make five columns, not four.
        let text = "id,a,b,c\n1,x,\"open\n2,y\",z,w\n3,p,q,r\n";
        assert_eq!(
            records(text, 4),
            owned(&[("1,x,\"open", 2, 1), ("2,y\",z,w", 3, 1), ("3,p,q,r", 4, 1)])
        );
    }

    /// A record whose quoted field opens on its first line and closes on line `lines` of it.
    fn spanning(lines: usize) -> String {
        let mut record = String::from("1,\"open");
        for i in 2..lines {
            record.push_str(&format!("\nline {i}"));
        }
        record.push_str("\nclosed\"");
        record
    }

    #[test]
    fn a_record_spans_at_most_its_limit_of_lines() {
        let longest = spanning(MAX_LINES);
        let all = records(&format!("id,body\n{longest}\n2,after\n"), 2);
        assert_eq!(
            all,
            [
                (longest, 2, MAX_LINES as u64),
                ("2,after".into(), 2 + MAX_LINES as u64, 1)
            ]
        );

        // One line more: the first line alone, then every other line as a record of its own, in
        // order, each with its own number.
        let all = records(&format!("id,body\n{}\n", spanning(MAX_LINES + 1)), 2);
        assert_eq!(all.len(), MAX_LINES + 1);
        assert_eq!(all[0], ("1,\"open".to_owned(), 2, 1));
        for (i, (text, first, lines)) in all[1..MAX_LINES].iter().enumerate() {
            assert_eq!(
                (text.as_str(), *first, *lines),
                (format!("line {}", i + 2).as_str(), i as u64 + 3, 1)
            );
        }
        assert_eq!(
            all[MAX_LINES],
            ("closed\"".to_owned(), MAX_LINES as u64 + 2, 1)
        );
    }

    #[test]
    fn a_record_spans_at_most_its_limit_of_bytes() {
        let long = "x".repeat(MAX_BYTES / 2);
        let fits = format!("1,\"{long}\n{}\"", &long[..MAX_BYTES / 2 - 16]);
        let all = records(&format!("id,body\n{fits}\n"), 2);
        assert_eq!(all, [(fits, 2, 2)]);

        let too_long = format!("1,\"{long}\n{long}\n\"");
        let all = records(&format!("id,body\n{too_long}\n"), 2);
        let taken: Vec<(u64, usize)> = all.iter().map(|(t, first, _)| (*first, t.len())).collect();
        assert_eq!(taken, [(2, long.len() + 3), (3, long.len()), (4, 1)]);
    }

    #[test]
    fn lines_read_ahead_are_not_the_end_of_the_file() {
        // A blank line read ahead is a record of its own, not the end: a line follows it.
        let mut records = Records::new(&b"1,\"open\n\nX\n"[..], 2);
        let mut out = Vec::new();
        assert_eq!(
            records.next_into(&mut out).unwrap().map(|s| s.first_line),
            Some(2)
        );
        assert_eq!(
            records.next_into(&mut out).unwrap().map(|s| s.first_line),
            Some(3)
        );
        assert!(out.is_empty() && !records.at_end().unwrap());
        assert_eq!(
            records.next_into(&mut out).unwrap().map(|s| s.first_line),
            Some(4)
        );
        assert_eq!(out, b"X");
        assert!(records.at_end().unwrap());
    }
}
