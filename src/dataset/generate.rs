//! `atelier generate`: writes a synthetic data set in exactly the original files' format.
//!
//! One pass over the products writes all thirteen files at once, so memory stays constant
//! whatever the scale. Row counts follow the real set's (scale 1.0 gives about 70M rows) and so
//! do the shapes: most products have a few reviews and questions while a few have thousands,
//! characteristics come in sets of one or four names, styles may lack photos or skus, and the
//! real set's quirks appear at low rates — unbalanced quotes in photos.csv, related id 0,
//! dangling references, duplicate sizes in a style, ids out of file order, unquoted text.
//! Everything depends only on `--seed`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::manifest::{FileCounts, Manifest};
use super::rng::Rng;
use super::Table;
use crate::progress::Progress;

/// Row counts of the original data set, which scale 1.0 reproduces.
pub mod full_scale {
    pub const PRODUCTS: f64 = 1_000_011.0;
    pub const FEATURES: f64 = 2_219_279.0;
    pub const STYLES: f64 = 1_958_102.0;
    pub const PHOTOS: f64 = 5_655_656.0;
    pub const SKUS: f64 = 11_323_917.0;
    pub const RELATED: f64 = 4_508_263.0;
    pub const REVIEWS: f64 = 5_774_952.0;
    pub const REVIEWS_PHOTOS: f64 = 2_742_540.0;
    pub const QUESTIONS: f64 = 3_518_963.0;
    pub const ANSWERS: f64 = 6_879_306.0;
    pub const ANSWERS_PHOTOS: f64 = 2_063_759.0;
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// 1.0 is the size of the original set; 0.01 is 10,000 products.
    pub scale: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("--scale must be a positive number no larger than 100, not {0}")]
    BadScale(f64),
    #[error("cannot write {path}: {source} (check that the directory is writable and the disk has room)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Offsets that put a dangling reference's id beyond every id the generator hands out.
const MISSING_ID_BASE: i64 = 4_000_000_000;

/// Writes the data set and its manifest; returns the manifest.
pub fn generate(opts: &GenerateOptions) -> Result<Manifest, GenerateError> {
    if !(opts.scale > 0.0 && opts.scale <= 100.0) {
        return Err(GenerateError::BadScale(opts.scale));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let mut gen = Generator::new(opts).map_err(io(&opts.out))?;
    let mut progress = Progress::new("generate", opts.quiet);
    let products = gen.products;
    for product_id in 1..=products {
        gen.product(product_id).map_err(io(&opts.out))?;
        if product_id % 1024 == 0 {
            progress.update(gen.total_rows(), product_id as u64, products as u64);
        }
    }
    let manifest = gen.finish().map_err(io(&opts.out))?;
    manifest.write(&opts.out).map_err(io(&opts.out))?;
    let total: u64 = manifest.files.values().map(|c| c.rows).sum();
    progress.finish(&format!(
        "{} rows in {} files",
        crate::progress::group_thousands(total),
        manifest.files.len()
    ));
    Ok(manifest)
}

/// Hands out counts of children per parent so that the total meets a target exactly in
/// expectation, whatever the shape of the distribution: each draw's mean is what is left
/// divided by the parents left.
struct Allocator {
    target: f64,
    done: u64,
    parents: f64,
    parents_done: u64,
}

#[derive(Clone, Copy)]
enum Shape {
    /// `min` plus a uniform spread around the mean.
    Spread {
        min: u64,
    },
    /// Mostly geometric, but one parent in a thousand gets hundreds of times the mean.
    HeavyTail,
    Geometric,
}

impl Allocator {
    fn new(target: f64, parents: f64) -> Self {
        Allocator {
            target,
            done: 0,
            parents,
            parents_done: 0,
        }
    }

    fn draw(&mut self, rng: &mut Rng, shape: Shape) -> u64 {
        let left = (self.target - self.done as f64).max(0.0);
        let parents_left = (self.parents - self.parents_done as f64).max(1.0);
        let mean = left / parents_left;
        let n = match shape {
            Shape::Spread { min } => {
                let extra = (mean - min as f64).max(0.0);
                min + (rng.unit() * (2.0 * extra + 1.0)).floor() as u64
            }
            Shape::HeavyTail => {
                if rng.chance(0.001) {
                    (mean * 300.0 * (0.2 + 1.6 * rng.unit())).round() as u64
                } else {
                    rng.geometric(mean * 0.7 / 0.999)
                }
            }
            Shape::Geometric => rng.geometric(mean),
        };
        // A heavy-tailed draw near the end must not overshoot the target.
        let n = n.min(left.ceil() as u64);
        self.done += n;
        self.parents_done += 1;
        n
    }
}

/// One CSV file being written: a reusable line buffer over a buffered file.
struct CsvFile {
    out: BufWriter<File>,
    line: Vec<u8>,
    counts: FileCounts,
    next_id: i64,
}

impl CsvFile {
    fn create(dir: &Path, file_name: &str, header: &str) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(dir.join(file_name))?);
        out.write_all(header.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(CsvFile {
            out,
            line: Vec::with_capacity(4096),
            counts: FileCounts::default(),
            next_id: 1,
        })
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The line number the next row will have (the header is line 1).
    fn next_line_number(&self) -> u64 {
        self.counts.rows + 2
    }

    fn int(&mut self, v: i64) -> &mut Self {
        crate::digits::push_i128(&mut self.line, v.into());
        self.line.push(b',');
        self
    }

    fn text(&mut self, v: &[u8]) -> &mut Self {
        push_quoted(&mut self.line, v);
        self.line.push(b',');
        self
    }

    fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.line.extend_from_slice(v);
        self.line.push(b',');
        self
    }

    /// Ends the row (dropping the trailing comma) and writes it out.
    fn end(&mut self) -> std::io::Result<()> {
        if let Some(last) = self.line.last_mut() {
            *last = b'\n';
        }
        self.out.write_all(&self.line)?;
        self.line.clear();
        self.counts.rows += 1;
        Ok(())
    }
}

fn push_quoted(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    for &b in v {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

struct Generator {
    rng: Rng,
    products: i64,
    files: Vec<CsvFile>,
    legacy_cart: CsvFile,
    features: Allocator,
    styles: Allocator,
    photos: Allocator,
    skus: Allocator,
    related: Allocator,
    reviews: Allocator,
    reviews_photos: Allocator,
    questions: Allocator,
    answers: Allocator,
    answers_photos: Allocator,
    scale: f64,
    seed: u64,
}

const EPOCH_2020: i64 = 1_577_836_800_000;
const EPOCH_2021_07: i64 = 1_625_097_600_000;

impl Generator {
    fn new(opts: &GenerateOptions) -> std::io::Result<Self> {
        use full_scale::*;
        let s = opts.scale;
        let products = (PRODUCTS * s).round().max(1.0) as i64;
        let p = products as f64;
        let styles = STYLES * s;
        let files = Table::ALL
            .iter()
            .map(|&t| CsvFile::create(&opts.out, t.file_name(), t.header()))
            .collect::<std::io::Result<_>>()?;
        let legacy_cart = CsvFile::create(
            &opts.out,
            super::LEGACY_CART_FILE,
            super::LEGACY_CART_HEADER,
        )?;
        Ok(Generator {
            rng: Rng::new(opts.seed),
            products,
            files,
            legacy_cart,
            features: Allocator::new(FEATURES * s, p),
            styles: Allocator::new(styles, p),
            photos: Allocator::new(PHOTOS * s, styles),
            skus: Allocator::new(SKUS * s, styles),
            related: Allocator::new(RELATED * s, p),
            reviews: Allocator::new(REVIEWS * s, p),
            reviews_photos: Allocator::new(REVIEWS_PHOTOS * s, REVIEWS * s),
            questions: Allocator::new(QUESTIONS * s, p),
            answers: Allocator::new(ANSWERS * s, QUESTIONS * s),
            answers_photos: Allocator::new(ANSWERS_PHOTOS * s, ANSWERS * s),
            scale: s,
            seed: opts.seed,
        })
    }

    fn file(&mut self, table: Table) -> &mut CsvFile {
        let i = Table::ALL.iter().position(|&t| t == table).unwrap_or(0);
        &mut self.files[i]
    }

    fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.counts.rows).sum()
    }

    fn finish(mut self) -> std::io::Result<Manifest> {
        self.legacy_cart.out.flush()?;
        let mut manifest = Manifest {
            scale: self.scale,
            seed: self.seed,
            files: Default::default(),
            legacy_cart_rows: self.legacy_cart.counts.rows,
        };
        for (table, mut file) in Table::ALL.into_iter().zip(self.files) {
            file.out.flush()?;
            manifest.files.insert(table, file.counts);
        }
        Ok(manifest)
    }

    fn product(&mut self, id: i64) -> std::io::Result<()> {
        let rng = &mut self.rng;
        let mut name = Vec::new();
        words(rng, &mut name, PRODUCT_ADJECTIVES, 1);
        name.push(b' ');
        words(rng, &mut name, PRODUCT_NOUNS, 1);
        let mut slogan = Vec::new();
        sentence(rng, &mut slogan, 3, 7, false);
        let mut description = Vec::new();
        for i in 0..rng.range(1, 3) {
            if i > 0 {
                description.extend_from_slice(if rng.chance(0.3) { b"  " } else { b" " });
            }
            sentence(rng, &mut description, 8, 20, true);
        }
        let category = *rng.pick(CATEGORIES);
        let price = rng.range(5, 999);
        let f = self.file(Table::Products);
        f.int(id)
            .text(&name)
            .text(&slogan)
            .text(&description)
            .text(category.as_bytes())
            .int(price)
            .end()?;

        self.features(id)?;
        self.styles(id, price)?;
        self.related(id)?;
        let characteristics = self.characteristics(id)?;
        self.reviews(id, &characteristics)?;
        self.questions(id)?;
        self.legacy_cart(id)?;
        self.dangling_rows(id)
    }

    fn features(&mut self, product_id: i64) -> std::io::Result<()> {
        let n = self.features.draw(&mut self.rng, Shape::Spread { min: 0 });
        for _ in 0..n {
            let (feature, values) = *self.rng.pick(FEATURES);
            let value = if self.rng.chance(0.05) {
                None
            } else {
                Some(*self.rng.pick(values))
            };
            let f = self.file(Table::Features);
            let id = f.take_id();
            f.int(id).int(product_id).text(feature.as_bytes());
            match value {
                Some(v) => f.text(v.as_bytes()),
                None => f.raw(b"null"),
            };
            f.end()?;
        }
        Ok(())
    }

    fn styles(&mut self, product_id: i64, price: i64) -> std::io::Result<()> {
        let n = if self.rng.chance(0.005) {
            self.styles.parents_done += 1;
            0
        } else {
            self.styles.draw(&mut self.rng, Shape::Spread { min: 1 })
        };
        let default_index = if n > 0 { self.rng.below(n) } else { 0 };
        for i in 0..n {
            let name = format!("{} & {}", self.rng.pick(COLORS), self.rng.pick(COLORS));
            let sale = if self.rng.chance(0.2) {
                Some(self.rng.range(1, price.max(2) - 1))
            } else {
                None
            };
            let f = self.file(Table::Styles);
            let style_id = f.take_id();
            f.int(style_id).int(product_id).text(name.as_bytes());
            match sale {
                Some(s) => f.int(s),
                None => f.raw(b"null"),
            };
            f.int(price).int(i64::from(i == default_index)).end()?;
            self.photos(style_id)?;
            self.skus(style_id)?;
        }
        Ok(())
    }

    fn photos(&mut self, style_id: i64) -> std::io::Result<()> {
        let n = if self.rng.chance(0.005) {
            self.photos.parents_done += 1;
            0
        } else {
            self.photos.draw(&mut self.rng, Shape::Spread { min: 1 })
        };
        let mut rows: Vec<(i64, u64)> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = self.file(Table::Photos).take_id();
            rows.push((id, self.rng.next_u64()));
        }
        swap_one_pair(&mut self.rng, &mut rows);
        for (id, key) in rows {
            let width = [668, 775, 1650, 2734][(key % 4) as usize];
            let url = format!(
                "https://images.unsplash.com/photo-{}-{:012x}?ixlib=rb-1.2.1&auto=format&fit=crop&w={width}&q=80",
                1_400_000_000_000 + (key >> 24) % 200_000_000_000,
                key & 0xffff_ffff_ffff
            );
            let thumb = url.replace(&format!("w={width}"), "w=300");
            let f = self.file(Table::Photos);
            f.int(id).int(style_id).text(url.as_bytes());
            if id % 10_000 == 7 {
                // The real set's quirk: a quoted URL that lost its closing quote.
                let line = f.next_line_number();
                f.counts.broken_lines.push(line);
                f.line.push(b'"');
                f.line.extend_from_slice(thumb.as_bytes());
                f.line.push(b',');
            } else {
                f.text(thumb.as_bytes());
            }
            f.end()?;
        }
        Ok(())
    }

    fn skus(&mut self, style_id: i64) -> std::io::Result<()> {
        let n = if self.rng.chance(0.005) {
            self.skus.parents_done += 1;
            0
        } else {
            self.skus.draw(&mut self.rng, Shape::Spread { min: 1 })
        };
        let sizes: &[&str] = if self.rng.chance(0.3) {
            SHOE_SIZES
        } else {
            CLOTHING_SIZES
        };
        let mut rows: Vec<(i64, &str)> = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let id = self.file(Table::Skus).take_id();
            let size = if n == 1 && self.rng.chance(0.5) {
                "One Size"
            } else if i > 0 && self.rng.chance(0.02) {
                rows[i - 1].1 // duplicate size within a style, as in the real set
            } else {
                sizes[i % sizes.len()]
            };
            rows.push((id, size));
        }
        swap_one_pair(&mut self.rng, &mut rows);
        for (id, size) in rows {
            let quantity = self.rng.range(0, 60);
            self.file(Table::Skus)
                .int(id)
                .int(style_id)
                .text(size.as_bytes())
                .int(quantity)
                .end()?;
        }
        Ok(())
    }

    fn related(&mut self, product_id: i64) -> std::io::Result<()> {
        let n = self.related.draw(&mut self.rng, Shape::Spread { min: 0 });
        let mut previous = 0;
        for _ in 0..n {
            let f_id = self.file(Table::Related).next_id;
            let (related, dangling) = if f_id % 500 == 3 {
                (0, true)
            } else if f_id % 1000 == 11 {
                (MISSING_ID_BASE + product_id, true)
            } else if previous > 0 && self.rng.chance(0.01) {
                (previous, false) // a duplicate pair
            } else {
                let mut other = self.rng.range(1, self.products);
                if other == product_id && self.products > 1 {
                    other = other % self.products + 1;
                }
                (other, false)
            };
            if !dangling {
                previous = related;
            }
            let f = self.file(Table::Related);
            let id = f.take_id();
            f.counts.dangling += u64::from(dangling);
            f.int(id).int(product_id).int(related).end()?;
        }
        Ok(())
    }

    fn characteristics(&mut self, product_id: i64) -> std::io::Result<Vec<i64>> {
        let names: &[&str] = if self.rng.chance(0.217) {
            std::slice::from_ref(self.rng.pick(&["Quality", "Fit", "Size", "Comfort"]))
        } else if self.rng.chance(0.5) {
            &["Fit", "Length", "Comfort", "Quality"]
        } else {
            &["Size", "Width", "Comfort", "Quality"]
        };
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            let f = self.file(Table::Characteristics);
            let id = f.take_id();
            f.int(id).int(product_id).text(name.as_bytes()).end()?;
            ids.push(id);
        }
        Ok(ids)
    }

    fn reviews(&mut self, product_id: i64, characteristics: &[i64]) -> std::io::Result<()> {
        let n = self.reviews.draw(&mut self.rng, Shape::HeavyTail);
        for _ in 0..n {
            let rng = &mut self.rng;
            let rating = rng.range(1, 5);
            let date = rng.range(EPOCH_2020, EPOCH_2021_07);
            let mut summary = Vec::new();
            sentence(rng, &mut summary, 3, 8, false);
            let mut body = Vec::new();
            for i in 0..rng.range(1, 4) {
                if i > 0 {
                    body.extend_from_slice(if rng.chance(0.3) { b"  " } else { b" " });
                }
                sentence(rng, &mut body, 6, 18, true);
            }
            if rng.chance(0.05) {
                body.extend_from_slice(b" It was \"fine\", I guess.");
            }
            let recommend = rng.chance(0.7);
            let reported = rng.chance(0.02);
            let name = reviewer_name(rng);
            let response = rng.chance(0.1).then(|| {
                let mut r = Vec::new();
                sentence(rng, &mut r, 4, 10, true);
                r
            });
            let helpfulness = rng.geometric(4.0) as i64;
            let f = self.file(Table::Reviews);
            let id = f.take_id();
            f.int(id)
                .int(product_id)
                .int(rating)
                .int(date)
                .text(&summary)
                .text(&body);
            f.raw(if recommend { b"true" } else { b"false" });
            f.raw(if reported { b"true" } else { b"false" });
            f.text(name.as_bytes())
                .text(format!("{name}@example.com").as_bytes());
            match &response {
                Some(r) => f.text(r),
                None => f.raw(b"null"),
            };
            f.int(helpfulness).end()?;

            let photos = self.reviews_photos.draw(&mut self.rng, Shape::Geometric);
            for _ in 0..photos {
                let f = self.file(Table::ReviewsPhotos);
                let photo_id = f.take_id();
                let url = format!("https://images.unsplash.com/photo-review-{photo_id}?w=975&q=80");
                f.int(photo_id).int(id).text(url.as_bytes()).end()?;
            }
            for &characteristic in characteristics {
                let value = self.rng.range(1, 5);
                let f = self.file(Table::CharacteristicReviews);
                let cr_id = f.take_id();
                f.int(cr_id).int(characteristic).int(id).int(value).end()?;
            }
        }
        Ok(())
    }

    fn questions(&mut self, product_id: i64) -> std::io::Result<()> {
        let n = self.questions.draw(&mut self.rng, Shape::HeavyTail);
        for _ in 0..n {
            let rng = &mut self.rng;
            let date = rng.range(EPOCH_2020, EPOCH_2021_07 - 86_400_000);
            let mut body = Vec::new();
            sentence(rng, &mut body, 4, 12, false);
            body.push(b'?');
            let name = reviewer_name(rng);
            let reported = rng.chance(0.03);
            let helpful = rng.geometric(3.0) as i64;
            let f = self.file(Table::Questions);
            let id = f.take_id();
            f.int(id)
                .int(product_id)
                .text(&body)
                .int(date)
                .text(name.as_bytes());
            f.text(format!("{name}@example.com").as_bytes())
                .int(i64::from(reported))
                .int(helpful)
                .end()?;
            self.answers(id, date)?;
        }
        Ok(())
    }

    fn answers(&mut self, question_id: i64, question_date: i64) -> std::io::Result<()> {
        let n = self.answers.draw(&mut self.rng, Shape::Spread { min: 0 });
        for _ in 0..n {
            let rng = &mut self.rng;
            let date = rng.range(question_date, question_date + 60 * 86_400_000);
            let mut body = Vec::new();
            let full_stop = rng.chance(0.5);
            sentence(rng, &mut body, 3, 14, full_stop);
            let seller = rng.chance(0.05);
            let name = if seller {
                "Seller".to_owned()
            } else {
                reviewer_name(rng)
            };
            let reported = rng.chance(0.03);
            let helpful = rng.geometric(3.0) as i64;
            let f = self.file(Table::Answers);
            let id = f.take_id();
            f.int(id).int(question_id);
            if id % 20 == 6 && !body.contains(&b',') && !body.contains(&b'"') {
                f.raw(&body); // the real set has unquoted text now and then
            } else {
                f.text(&body);
            }
            f.int(date).text(name.as_bytes());
            if seller {
                f.raw(b"null");
            } else {
                f.text(format!("{name}@example.com").as_bytes());
            }
            f.int(i64::from(reported)).int(helpful).end()?;

            let photos = self.answers_photos.draw(&mut self.rng, Shape::Geometric);
            for _ in 0..photos {
                let f = self.file(Table::AnswersPhotos);
                let photo_id = f.take_id();
                let url =
                    format!("https://images.unsplash.com/photo-answer-{photo_id}?w=1650&q=80");
                f.int(photo_id).int(id);
                if photo_id % 10 == 3 {
                    f.raw(url.as_bytes());
                } else {
                    f.text(url.as_bytes());
                }
                f.end()?;
            }
        }
        Ok(())
    }

    /// cart.csv: a few products in a few sessions' carts, some no longer active.
    fn legacy_cart(&mut self, product_id: i64) -> std::io::Result<()> {
        if product_id % 200 != 1 {
            return Ok(());
        }
        let session = self.rng.range(1000, 9999);
        let active = i64::from(self.rng.chance(0.7));
        let f = &mut self.legacy_cart;
        let id = f.take_id();
        f.int(id).int(session).int(product_id).int(active).end()
    }

    /// Rows that point at parents that do not exist, at low rates: the loader must drop them.
    fn dangling_rows(&mut self, product_id: i64) -> std::io::Result<()> {
        let missing = MISSING_ID_BASE + product_id;
        if product_id % 2000 == 2 {
            let f = self.file(Table::Photos);
            let id = f.take_id();
            f.counts.dangling += 1;
            f.int(id)
                .int(missing)
                .text(b"https://images.unsplash.com/photo-orphan?w=668");
            f.text(b"https://images.unsplash.com/photo-orphan?w=300")
                .end()?;
        }
        if product_id % 2000 == 3 {
            let f = self.file(Table::ReviewsPhotos);
            let id = f.take_id();
            f.counts.dangling += 1;
            f.int(id)
                .int(missing)
                .text(b"https://images.unsplash.com/photo-orphan-review")
                .end()?;
        }
        if product_id % 2000 == 4 {
            let f = self.file(Table::CharacteristicReviews);
            let id = f.take_id();
            f.counts.dangling += 1;
            f.int(id).int(1).int(missing).int(3).end()?;
        }
        if product_id % 2000 == 5 {
            let f = self.file(Table::Answers);
            let id = f.take_id();
            f.counts.dangling += 1;
            f.int(id)
                .int(missing)
                .text(b"An answer to a question that does not exist");
            f.int(EPOCH_2020)
                .text(b"ghost")
                .text(b"ghost@example.com")
                .int(0)
                .int(0)
                .end()?;
        }
        Ok(())
    }
}

/// Swaps one adjacent pair now and then, so ids are not always in file order.
fn swap_one_pair<T>(rng: &mut Rng, rows: &mut [T]) {
    if rows.len() >= 2 && rng.chance(0.05) {
        let i = rng.below(rows.len() as u64 - 1) as usize;
        rows.swap(i, i + 1);
    }
}

fn words(rng: &mut Rng, out: &mut Vec<u8>, list: &[&str], n: usize) {
    for i in 0..n {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(rng.pick(list).as_bytes());
    }
}

/// A sentence of `min..=max` words, capitalised, with an occasional comma.
fn sentence(rng: &mut Rng, out: &mut Vec<u8>, min: i64, max: i64, full_stop: bool) {
    let n = rng.range(min, max);
    let start = out.len();
    for i in 0..n {
        if i > 0 {
            if rng.chance(0.08) {
                out.push(b',');
            }
            out.push(b' ');
        }
        out.extend_from_slice(rng.pick(WORDS).as_bytes());
    }
    if let Some(first) = out.get_mut(start) {
        first.make_ascii_uppercase();
    }
    if full_stop {
        out.push(b'.');
    }
}

fn reviewer_name(rng: &mut Rng) -> String {
    format!(
        "{}{}{}",
        rng.pick(NAME_PARTS),
        rng.pick(NAME_PARTS),
        rng.range(1, 999)
    )
}

const CATEGORIES: &[&str] = &[
    "Jackets",
    "Accessories",
    "Pants",
    "Kicks",
    "Dress Shoes",
    "Shirts",
    "Shorts",
    "Hats",
    "Sweatpants",
    "Heels",
    "Boots",
    "Cap",
    "Blazer",
    "Socks",
];
const PRODUCT_ADJECTIVES: &[&str] = &[
    "Camo",
    "Bright",
    "Morning",
    "Slacker's",
    "Heir",
    "Pumped",
    "Sleek",
    "Rustic",
    "Vintage",
    "Urban",
    "Classic",
    "Bold",
    "Quiet",
    "Electric",
    "Cozy",
    "Rugged",
    "Airy",
    "Golden",
];
const PRODUCT_NOUNS: &[&str] = &[
    "Onesie",
    "Sunglasses",
    "Joggers",
    "Slacks",
    "Force Ones",
    "Kicks",
    "Jacket",
    "Cap",
    "Blazer",
    "Boots",
    "Tee",
    "Hoodie",
    "Shorts",
    "Socks",
    "Heels",
    "Loafers",
    "Scarf",
];
const COLORS: &[&str] = &[
    "Forest Green",
    "Black",
    "Desert Brown",
    "Tan",
    "Ocean Blue",
    "Grey",
    "Gold",
    "White",
    "Red",
    "Goldenrod",
    "Navy",
    "Olive",
    "Maroon",
    "Cream",
    "Silver",
    "Pink",
];
const FEATURES: &[(&str, &[&str])] = &[
    (
        "Fabric",
        &["Canvas", "100% Cotton", "Denim", "Silk", "Chiffon"],
    ),
    ("Buttons", &["Brass", "Wood", "Plastic"]),
    ("Lenses", &["Ultrasheen", "Polarized", "Tinted"]),
    ("UV Protection", &["Yes", "Partial"]),
    ("Frames", &["LightCompose", "DuraResin"]),
    ("Cut", &["Skinny", "Loose", "Straight"]),
    ("Sole", &["Rubber", "Foam", "Leather"]),
    ("Material", &["FullControlSkin", "Mesh", "Nylon"]),
    ("Stitching", &["\"Double Stitch\"", "Cross Stitch"]),
    ("Green Leaf Certified", &["Yes"]),
];
const CLOTHING_SIZES: &[&str] = &["XS", "S", "M", "L", "XL", "XXL"];
const SHOE_SIZES: &[&str] = &[
    "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "11.5", "12", "13",
];
const NAME_PARTS: &[&str] = &[
    "fun", "time", "main", "stream", "mother", "big", "brother", "short", "sweet", "jogger",
    "sunny", "yankee", "lover", "silly", "guy", "mets", "dogz", "iluv", "angry", "happy",
];
const WORDS: &[&str] = &[
    "this",
    "product",
    "was",
    "great",
    "really",
    "did",
    "or",
    "not",
    "like",
    "based",
    "on",
    "whether",
    "it",
    "sustainably",
    "sourced",
    "then",
    "found",
    "out",
    "that",
    "made",
    "from",
    "nothing",
    "at",
    "all",
    "fits",
    "comfy",
    "stretchy",
    "holds",
    "its",
    "shape",
    "after",
    "washing",
    "very",
    "dark",
    "but",
    "good",
    "because",
    "sunny",
    "spots",
    "hype",
    "fine",
    "price",
    "broke",
    "day",
    "one",
    "soft",
    "fabric",
    "runs",
    "true",
    "to",
    "size",
    "small",
    "big",
    "color",
    "looks",
    "better",
    "than",
    "pictures",
    "would",
    "buy",
    "again",
    "love",
    "quality",
    "cheap",
    "feels",
    "durable",
    "stylish",
    "warm",
    "light",
    "heavy",
    "material",
    "the",
    "a",
    "my",
    "and",
    "for",
    "with",
    "every",
    "week",
    "wear",
    "shoes",
    "jacket",
];

#[cfg(test)]
mod tests {
    use super::push_quoted;

    #[test]
    fn writes_quoted_text() {
        let mut out = Vec::new();
        push_quoted(&mut out, b"say \"hi\", ok");
        assert_eq!(out, b"\"say \"\"hi\"\", ok\"");
    }
}
