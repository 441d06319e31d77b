-- The data set's unquoted `null` means a missing value in any column, and the loader reads it
-- as SQL NULL (the format's rule), where it used to skip a row that had it in a column this
-- schema held NOT NULL: a review whose summary or e-mail was `null` vanished from its
-- product's reviews and ratings. These columns may now be NULL; a body shows such a field as
-- JSON null (a characteristic without a name is shown under the name "null"). The API's own
-- writes still always give them a value.
--
-- Dropping NOT NULL only changes the catalog (no table is read or rewritten), but holds each
-- table's ACCESS EXCLUSIVE lock until the migration commits. No one order of the ten tables
-- suits everyone (the API's writes lock a child before its parent, its reads' joins a parent
-- before its child), so the migration never waits while it holds one: it asks for all of them
-- at once without waiting (NOWAIT), lets go of those it got if one is busy (the failed
-- subtransaction releases them), and asks again 20 ms later. It cannot deadlock, and no read
-- queues behind it; it needs all ten free at one moment, and gives up after 60 s (a warm-up's
-- scan holds these tables for minutes, and reads and writes that never pause starve it too):
-- run `atelier migrate` again later.
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        BEGIN
            LOCK TABLE answers, answers_photos, questions, reviews, characteristics,
                reviews_photos, features, skus, styles, products IN ACCESS EXCLUSIVE MODE NOWAIT;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF clock_timestamp() > deadline THEN
                RAISE EXCEPTION 'migration 12 could not lock the catalog''s tables within 60 s: they were never all free at once (a warm-up scans them for minutes); run atelier migrate again when they are quieter';
            END IF;
            PERFORM pg_sleep(0.02);
        END;
    END LOOP;
END $$;
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
