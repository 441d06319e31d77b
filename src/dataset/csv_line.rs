//! A lenient parser for one record of the data set's CSV dialect.
//!
//! The files are line-oriented: a record is a line, unless a quoted field holds a line break
//! ([`super::records`] joins those lines before they get here). Text is usually quoted with `""`
//! for an embedded quote, but unquoted text appears too, and the unquoted word `null` means a
//! missing value. Some lines in photos.csv lose the closing quote of their last field; the
//! parser reports that as [`LineError::UnbalancedQuote`] so the caller can decide to repair it.

/// One field of a parsed line, as a range into the unescaped text that [`Fields`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    start: usize,
    end: usize,
    quoted: bool,
}

/// The fields of one line, unescaped into one reusable buffer.
#[derive(Debug, Default)]
pub struct Fields {
    text: Vec<u8>,
    fields: Vec<Field>,
}

/// Why a line could not be split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// A quoted field runs to the end of the line without its closing quote.
    UnbalancedQuote,
    /// Something other than a comma follows a closing quote.
    TextAfterQuote { column: usize },
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::UnbalancedQuote => f.write_str("a quoted field has no closing quote"),
            LineError::TextAfterQuote { column } => {
                write!(f, "text follows the closing quote of column {}", column + 1)
            }
        }
    }
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Splits `line` (without its line ending) into fields, replacing the previous contents.
    pub fn parse(&mut self, line: &[u8]) -> Result<(), LineError> {
        self.text.clear();
        self.fields.clear();
        let mut i = 0;
        loop {
            let start = self.text.len();
            if line.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    match line[i..].iter().position(|&b| b == b'"') {
                        None => return Err(LineError::UnbalancedQuote),
                        Some(q) => {
                            self.text.extend_from_slice(&line[i..i + q]);
                            i += q + 1;
                            if line.get(i) == Some(&b'"') {
                                self.text.push(b'"');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                self.fields.push(Field {
                    start,
                    end: self.text.len(),
                    quoted: true,
                });
                match line.get(i) {
                    None => return Ok(()),
                    Some(b',') => i += 1,
                    Some(_) => {
                        return Err(LineError::TextAfterQuote {
                            column: self.fields.len() - 1,
                        })
                    }
                }
            } else {
                let len = line[i..]
                    .iter()
                    .position(|&b| b == b',')
                    .unwrap_or(line.len() - i);
                self.text.extend_from_slice(&line[i..i + len]);
                self.fields.push(Field {
                    start,
                    end: self.text.len(),
                    quoted: false,
                });
                i += len;
                if i >= line.len() {
                    return Ok(());
                }
                i += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The unescaped bytes of field `i`.
    pub fn bytes(&self, i: usize) -> &[u8] {
        let f = self.fields[i];
        &self.text[f.start..f.end]
    }

    /// Whether field `i` is the unquoted `null` token (a missing value).
    pub fn is_null(&self, i: usize) -> bool {
        !self.fields[i].quoted && self.bytes(i) == b"null"
    }
}

/// Whether `line` holds an odd number of quote characters: the mark of a field that lost its
/// closing quote (a line with `""` escapes still has an even count).
pub fn has_unbalanced_quote(line: &[u8]) -> bool {
    line.iter().filter(|&&b| b == b'"').count() % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Result<Vec<String>, LineError> {
        let mut f = Fields::new();
        f.parse(line.as_bytes())?;
        Ok((0..f.len())
            .map(|i| String::from_utf8_lossy(f.bytes(i)).into_owned())
            .collect())
    }

    #[test]
    fn splits_quoted_and_unquoted() {
        assert_eq!(
            split(r#"1,"a, b","x""y""",null,"#).unwrap(),
            ["1", "a, b", "x\"y\"", "null", ""]
        );
        assert_eq!(
            split("6,4,We are selling,Seller").unwrap(),
            ["6", "4", "We are selling", "Seller"]
        );
        assert_eq!(
            split(r#""""Double Stitch""""#).unwrap(),
            ["\"Double Stitch\""]
        );
        assert_eq!(split("").unwrap(), [""]);
    }

    #[test]
    fn null_token_is_unquoted_only() {
        let mut f = Fields::new();
        f.parse(br#"null,"null""#).unwrap();
        assert!(f.is_null(0));
        assert!(!f.is_null(1));
    }

    #[test]
    fn reports_broken_quotes() {
        assert_eq!(
            split(r#"4,2,"https://a","https://b"#),
            Err(LineError::UnbalancedQuote)
        );
        assert_eq!(
            split(r#"1,"a"b,c"#),
            Err(LineError::TextAfterQuote { column: 1 })
        );
        assert!(has_unbalanced_quote(br#"4,2,"https://a","https://b"#));
        assert!(!has_unbalanced_quote(br#"1,"x""y""#));
    }
}
