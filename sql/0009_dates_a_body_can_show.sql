-- A body shows a date as an ISO-8601 instant of years 1 to 9999, the years the bulk loader
-- takes. Any other date written by hand was shown wrongly (clamped to the first or last
-- instant of those years) or, for `infinity`, could not be read at all: every read of its row
-- failed, the warm-up's scan among them, so that no instance could become ready. The database
-- refuses such a date where it is written instead. Adding each check reads its table once
-- (seconds at full scale) and holds its reads and writes until the migration commits; the
-- children go first (answers, then questions, then reviews), so that a write waiting on a
-- parent's row never holds a table this migration still has to lock. A database that already
-- holds such a row fails this migration, naming the check, until the row's date is fixed.
ALTER TABLE answers ADD CONSTRAINT answers_date_shown
    CHECK (date >= '0001-01-01 00:00:00+00' AND date < '10000-01-01 00:00:00+00');
ALTER TABLE questions ADD CONSTRAINT questions_date_shown
    CHECK (date >= '0001-01-01 00:00:00+00' AND date < '10000-01-01 00:00:00+00');
ALTER TABLE reviews ADD CONSTRAINT reviews_date_shown
    CHECK (date >= '0001-01-01 00:00:00+00' AND date < '10000-01-01 00:00:00+00');
