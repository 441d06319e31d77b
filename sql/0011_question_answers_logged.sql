-- A product's questions list nests every visible answer of each question, so a change of an
-- answer (or of its photos) is logged twice: as the question's `answers` and as the product's
-- `questions`. The second row now says which question's answers changed, in the detail
-- `answers:<question id>`, so that an instance re-renders that question's item of the list
-- from its answers alone, instead of reading every question of the product with every answer
-- again (thousands of each on some products).
--
-- As with migration 10's `votes`, a build that does not read the detail takes the row as any
-- change of the product's questions, as it always did, so instances of both builds can follow
-- one log during a rolling deploy. Only the two trigger functions change: no table is locked.

CREATE OR REPLACE FUNCTION atelier_changed_answer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('answers', OLD.question_id, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = OLD.question_id),
                                   NULL, 'answers:' || OLD.question_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM atelier_log_change('answers', NEW.question_id, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = NEW.question_id),
                                   NULL, 'answers:' || NEW.question_id);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION atelier_changed_by_answer() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q bigint;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        q := (SELECT question_id FROM answers WHERE id = OLD.answer_id);
        PERFORM atelier_log_change('answers', q, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = q),
                                   NULL, 'answers:' || q);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        q := (SELECT question_id FROM answers WHERE id = NEW.answer_id);
        PERFORM atelier_log_change('answers', q, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = q),
                                   NULL, 'answers:' || q);
    END IF;
    RETURN NULL;
END $$;

-- CREATE OR REPLACE resets what migration 5 set: the triggers run as the owner, with a fixed
-- search path.
ALTER FUNCTION atelier_changed_answer() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_by_answer() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
