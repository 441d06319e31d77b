//! The Atelier CSV data set: which files it has, their exact headers, and what each column
//! holds. The generator writes files from this description and the loader reads them back
//! through it, so the two cannot drift apart.

pub mod csv_line;
pub mod generate;
pub mod manifest;
pub mod records;
pub mod rng;

/// The fourteenth file of the original set: an older cart shape (sessions and product ids)
/// that the current `/cart` cannot use. The generator writes it, so a generated set has every
/// file the original has; the loader does not load it.
pub const LEGACY_CART_FILE: &str = "cart.csv";
pub const LEGACY_CART_HEADER: &str = "id,user_session,product_id,active";

/// One file of the data set and the table it loads into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Products,
    Features,
    Styles,
    Photos,
    Skus,
    Related,
    Reviews,
    ReviewsPhotos,
    Characteristics,
    CharacteristicReviews,
    Questions,
    Answers,
    AnswersPhotos,
}

/// What one CSV column holds and how the loader checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The row's own id: a positive integer, unique in the file.
    Id,
    /// The id of a row in another file; rows whose parent is missing are dropped.
    Ref(Table),
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// Text the data set always gives (the generator never writes `null` there; the loader
    /// still reads a `null` as SQL NULL, as in every column).
    Text,
    /// Text or the `null` token.
    OptText,
    /// A price in dollars (`140`, `35.5`), which the data set always gives (a `null` loads as
    /// SQL NULL all the same, and so does an empty field, reported as a repair).
    Money,
    /// A sale price: `null`, or `0` or an empty field which mean the same, or a price.
    OptMoney,
    /// `true`/`false` or `1`/`0`.
    Bool,
    /// Epoch milliseconds.
    EpochMillis,
}

impl Table {
    /// Every table, parents before children: the order the loader must follow.
    pub const ALL: [Table; 13] = [
        Table::Products,
        Table::Features,
        Table::Styles,
        Table::Photos,
        Table::Skus,
        Table::Related,
        Table::Reviews,
        Table::ReviewsPhotos,
        Table::Characteristics,
        Table::CharacteristicReviews,
        Table::Questions,
        Table::Answers,
        Table::AnswersPhotos,
    ];

    /// The file's name in a data set directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Table::Products => "product.csv",
            Table::Features => "features.csv",
            Table::Styles => "styles.csv",
            Table::Photos => "photos.csv",
            Table::Skus => "skus.csv",
            Table::Related => "related.csv",
            Table::Reviews => "reviews.csv",
            Table::ReviewsPhotos => "reviews_photos.csv",
            Table::Characteristics => "characteristics.csv",
            Table::CharacteristicReviews => "characteristic_reviews.csv",
            Table::Questions => "questions.csv",
            Table::Answers => "answers.csv",
            Table::AnswersPhotos => "answers_photos.csv",
        }
    }

    /// The PostgreSQL table the file loads into.
    pub fn sql_name(self) -> &'static str {
        match self {
            Table::Products => "products",
            Table::Features => "features",
            Table::Styles => "styles",
            Table::Photos => "photos",
            Table::Skus => "skus",
            Table::Related => "related",
            Table::Reviews => "reviews",
            Table::ReviewsPhotos => "reviews_photos",
            Table::Characteristics => "characteristics",
            Table::CharacteristicReviews => "characteristic_reviews",
            Table::Questions => "questions",
            Table::Answers => "answers",
            Table::AnswersPhotos => "answers_photos",
        }
    }

    /// The file's header line, exactly as the original data set spells it.
    pub fn header(self) -> &'static str {
        match self {
            Table::Products => "id,name,slogan,description,category,default_price",
            Table::Features => "id,product_id,feature,value",
            Table::Styles => "id,productId,name,sale_price,original_price,default_style",
            Table::Photos => "id,styleId,url,thumbnail_url",
            Table::Skus => "id,styleId,size,quantity",
            Table::Related => "id,current_product_id,related_product_id",
            Table::Reviews => "id,product_id,rating,date,summary,body,recommend,reported,reviewer_name,reviewer_email,response,helpfulness",
            Table::ReviewsPhotos => "id,review_id,url",
            Table::Characteristics => "id,product_id,name",
            Table::CharacteristicReviews => "id,characteristic_id,review_id,value",
            Table::Questions => "id,product_id,body,date_written,asker_name,asker_email,reported,helpful",
            Table::Answers => "id,question_id,body,date_written,answerer_name,answerer_email,reported,helpful",
            Table::AnswersPhotos => "id,answer_id,url",
        }
    }

    /// The SQL columns the CSV columns load into, in file order.
    pub fn sql_columns(self) -> &'static [&'static str] {
        match self {
            Table::Products => &[
                "id",
                "name",
                "slogan",
                "description",
                "category",
                "default_price",
            ],
            Table::Features => &["id", "product_id", "feature", "value"],
            Table::Styles => &[
                "id",
                "product_id",
                "name",
                "sale_price",
                "original_price",
                "default_style",
            ],
            Table::Photos => &["id", "style_id", "url", "thumbnail_url"],
            Table::Skus => &["id", "style_id", "size", "quantity"],
            Table::Related => &["id", "product_id", "related_product_id"],
            Table::Reviews => &[
                "id",
                "product_id",
                "rating",
                "date",
                "summary",
                "body",
                "recommend",
                "reported",
                "reviewer_name",
                "reviewer_email",
                "response",
                "helpfulness",
            ],
            Table::ReviewsPhotos => &["id", "review_id", "url"],
            Table::Characteristics => &["id", "product_id", "name"],
            Table::CharacteristicReviews => &["id", "characteristic_id", "review_id", "value"],
            Table::Questions => &[
                "id",
                "product_id",
                "body",
                "date",
                "asker_name",
                "asker_email",
                "reported",
                "helpfulness",
            ],
            Table::Answers => &[
                "id",
                "question_id",
                "body",
                "date",
                "answerer_name",
                "answerer_email",
                "reported",
                "helpfulness",
            ],
            Table::AnswersPhotos => &["id", "answer_id", "url"],
        }
    }

    /// What each CSV column holds, in file order.
    pub fn columns(self) -> &'static [Column] {
        use Column::*;
        const COUNT: Column = Int {
            min: 0,
            max: i32::MAX as i64,
        };
        const RATING: Column = Int { min: 1, max: 5 };
        match self {
            Table::Products => &[Id, Text, Text, Text, Text, Money],
            Table::Features => &[Id, Ref(Table::Products), Text, OptText],
            Table::Styles => &[Id, Ref(Table::Products), Text, OptMoney, Money, Bool],
            Table::Photos => &[Id, Ref(Table::Styles), OptText, OptText],
            Table::Skus => &[Id, Ref(Table::Styles), Text, COUNT],
            Table::Related => &[Id, Ref(Table::Products), Ref(Table::Products)],
            Table::Reviews => &[
                Id,
                Ref(Table::Products),
                RATING,
                EpochMillis,
                Text,
                Text,
                Bool,
                Bool,
                Text,
                Text,
                OptText,
                COUNT,
            ],
            Table::ReviewsPhotos => &[Id, Ref(Table::Reviews), Text],
            Table::Characteristics => &[Id, Ref(Table::Products), Text],
            Table::CharacteristicReviews => {
                &[Id, Ref(Table::Characteristics), Ref(Table::Reviews), RATING]
            }
            Table::Questions => &[
                Id,
                Ref(Table::Products),
                Text,
                EpochMillis,
                Text,
                Text,
                Bool,
                COUNT,
            ],
            Table::Answers => &[
                Id,
                Ref(Table::Questions),
                Text,
                EpochMillis,
                Text,
                OptText,
                Bool,
                COUNT,
            ],
            Table::AnswersPhotos => &[Id, Ref(Table::Answers), Text],
        }
    }

    /// Whether other files refer to this one's ids.
    pub fn is_parent(self) -> bool {
        Table::ALL
            .iter()
            .any(|t| t.columns().contains(&Column::Ref(self)))
    }

    /// The table whose file is called `name`, if any.
    pub fn from_file_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.file_name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn descriptions_agree() {
        for table in Table::ALL {
            let header_len = table.header().split(',').count();
            assert_eq!(header_len, table.columns().len(), "{table:?}");
            assert_eq!(header_len, table.sql_columns().len(), "{table:?}");
        }
        assert!(Table::Products.is_parent());
        assert!(!Table::Photos.is_parent());
    }

    #[test]
    fn parents_come_first() {
        for (i, table) in Table::ALL.iter().enumerate() {
            for column in table.columns() {
                if let super::Column::Ref(parent) = column {
                    let p = Table::ALL.iter().position(|t| t == parent).unwrap();
                    assert!(p < i, "{table:?} refers to {parent:?} loaded later");
                }
            }
        }
    }
}
