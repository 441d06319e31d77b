//! The manifest the generator writes beside its CSV files: how many rows each file has, how
//! many of them the loader must drop as dangling references, and which lines were broken on
//! purpose. Tests compare a load against it; people can read it to see what a data set holds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::Table;

/// The file name of the manifest inside a data set directory.
pub const FILE_NAME: &str = "manifest.tsv";

/// What the generator wrote into one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileCounts {
    /// Data rows (lines after the header).
    pub rows: u64,
    /// Rows whose reference points at a row that does not exist.
    pub dangling: u64,
    /// 1-based line numbers (the header is line 1) of lines written with an unbalanced quote.
    pub broken_lines: Vec<u64>,
}

/// What a generated data set holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub scale: f64,
    pub seed: u64,
    pub files: BTreeMap<Table, FileCounts>,
    /// Rows of cart.csv (not loaded).
    pub legacy_cart_rows: u64,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {what}")]
    Malformed {
        path: String,
        line: usize,
        what: String,
    },
}

impl Manifest {
    /// The manifest as text: a comment line with the parameters, then one line per file.
    pub fn to_tsv(&self) -> String {
        let mut out = format!(
            "# atelier generate --scale {} --seed {}\nfile\trows\tdangling\tbroken_lines\n",
            self.scale, self.seed
        );
        let _ = writeln!(
            out,
            "{}\t{}\t0\t",
            super::LEGACY_CART_FILE,
            self.legacy_cart_rows
        );
        for (table, counts) in &self.files {
            let broken: Vec<String> = counts.broken_lines.iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}",
                table.file_name(),
                counts.rows,
                counts.dangling,
                broken.join(",")
            );
        }
        out
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join(FILE_NAME), self.to_tsv())
    }

    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: shown.clone(),
            source,
        })?;
        let malformed = |line: usize, what: &str| ManifestError::Malformed {
            path: shown.clone(),
            line,
            what: what.to_owned(),
        };
        let mut manifest = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            if let Some(params) = line.strip_prefix("# atelier generate ") {
                let words: Vec<&str> = params.split_whitespace().collect();
                for pair in words.chunks(2) {
                    match pair {
                        ["--scale", v] => {
                            manifest.scale = v.parse().map_err(|_| malformed(i + 1, "bad scale"))?
                        }
                        ["--seed", v] => {
                            manifest.seed = v.parse().map_err(|_| malformed(i + 1, "bad seed"))?
                        }
                        _ => {}
                    }
                }
                continue;
            }
            if line.starts_with("file\t") || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let [file, rows, dangling, broken] = cols[..] else {
                return Err(malformed(i + 1, "expected four tab-separated columns"));
            };
            let number = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| malformed(i + 1, "not a number"))
            };
            if file == super::LEGACY_CART_FILE {
                manifest.legacy_cart_rows = number(rows)?;
                continue;
            }
            let table =
                Table::from_file_name(file).ok_or_else(|| malformed(i + 1, "unknown file"))?;
            let broken_lines = broken
                .split(',')
                .filter(|s| !s.is_empty())
                .map(number)
                .collect::<Result<_, _>>()?;
            manifest.files.insert(
                table,
                FileCounts {
                    rows: number(rows)?,
                    dangling: number(dangling)?,
                    broken_lines,
                },
            );
        }
        Ok(manifest)
    }
}
