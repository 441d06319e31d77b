-- The data set's unquoted `null` means a missing value in any column, and the loader reads it
-- as SQL NULL (the format's rule), where it used to skip a row that had it in a column this
-- schema held NOT NULL: a review whose summary or e-mail was `null` vanished from its
-- product's reviews and ratings. These columns may now be NULL; a body shows such a field as
-- JSON null (a characteristic without a name is shown under the name "null"). The API's own
-- writes still always give them a value.
--
-- Dropping NOT NULL only changes the catalog (no table is read or rewritten), but holds each
-- table's ACCESS EXCLUSIVE lock until the migration commits. The tables are locked at once, in
-- the order the API's writes take them (a write's statement locks its own tables, then the
-- parents its foreign keys check: answers before questions, reviews before products), so
-- that no write holds a table this migration still waits for; and the migration gives up
-- after 10 s rather than hold the API's reads queued behind it (a warm-up's scan holds its
-- tables for minutes): run `atelier migrate` again.
SET LOCAL lock_timeout = '10s';
LOCK TABLE answers, answers_photos, questions, reviews, characteristics, reviews_photos,
    features, skus, styles, products IN ACCESS EXCLUSIVE MODE;
ALTER TABLE answers ALTER COLUMN body DROP NOT NULL,
    ALTER COLUMN answerer_name DROP NOT NULL;
ALTER TABLE answers_photos ALTER COLUMN url DROP NOT NULL;
ALTER TABLE questions ALTER COLUMN body DROP NOT NULL,
    ALTER COLUMN asker_name DROP NOT NULL,
    ALTER COLUMN asker_email DROP NOT NULL;
ALTER TABLE reviews ALTER COLUMN summary DROP NOT NULL,
    ALTER COLUMN body DROP NOT NULL,
    ALTER COLUMN reviewer_name DROP NOT NULL,
    ALTER COLUMN reviewer_email DROP NOT NULL;
ALTER TABLE characteristics ALTER COLUMN name DROP NOT NULL;
ALTER TABLE reviews_photos ALTER COLUMN url DROP NOT NULL;
ALTER TABLE features ALTER COLUMN feature DROP NOT NULL;
ALTER TABLE skus ALTER COLUMN size DROP NOT NULL;
ALTER TABLE styles ALTER COLUMN name DROP NOT NULL,
    ALTER COLUMN original_price DROP NOT NULL;
ALTER TABLE products ALTER COLUMN name DROP NOT NULL,
    ALTER COLUMN slogan DROP NOT NULL,
    ALTER COLUMN description DROP NOT NULL,
    ALTER COLUMN category DROP NOT NULL,
    ALTER COLUMN default_price DROP NOT NULL;
