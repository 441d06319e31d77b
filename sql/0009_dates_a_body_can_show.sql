-- A body shows a date as an ISO-8601 instant of years 1 to 9999, the years the bulk loader
-- takes. Any other date written by hand (`infinity`, a year past 9999) would make every read
-- of its row fail, the warm-up's scan among them, so that no instance could become ready: the
-- database refuses such a date where it is written instead. Adding each check reads its table
-- once (seconds at full scale), holding the table's reads and writes meanwhile; a database
-- that already holds such a row fails this migration, naming the check, until the row's date
-- is fixed.
ALTER TABLE reviews ADD CONSTRAINT reviews_date_shown
    CHECK (date >= '0001-01-01 00:00:00+00' AND date < '10000-01-01 00:00:00+00');
ALTER TABLE questions ADD CONSTRAINT questions_date_shown
    CHECK (date >= '0001-01-01 00:00:00+00' AND date < '10000-01-01 00:00:00+00');
ALTER TABLE answers ADD CONSTRAINT answers_date_shown
    CHECK (date >= '0001-01-01 00:00:00+00' AND date < '10000-01-01 00:00:00+00');
