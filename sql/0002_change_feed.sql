-- The change feed: every write to a table that a cached body reads from appends the affected
-- resource to change_log and notifies channel `atelier_changes` with the new seq, so every
-- server instance can drop exactly the bodies that changed — whoever made the write (the API,
-- psql, a batch job).
--
-- kind    what changed                              keyed by
-- product a product row (its detail, the lists)    product id
-- features its features                             product id
-- styles  its styles, photos or skus                product id
-- related its related rows                          product id
-- reviews its reviews, their photos, ratings,
--         or its characteristics                    product id
-- questions its questions or their answers          product id
-- answers a question's answers or their photos     question id
-- cart    a caller's cart                           session
-- all     everything (a bulk load, a TRUNCATE)      -

CREATE TABLE change_log (
    seq     bigserial   PRIMARY KEY,
    kind    text        NOT NULL,
    id      bigint,
    session text,
    at      timestamptz NOT NULL DEFAULT now()
);

-- Pruning leaves a mark here, so an instance that was disconnected for longer than the
-- retention knows the log no longer reaches back to where it stopped, and empties its cache.
CREATE TABLE change_log_pruned (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    through bigint  NOT NULL
);
INSERT INTO change_log_pruned VALUES (true, 0);

CREATE FUNCTION atelier_log_change(change_kind text, change_id bigint, change_session text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_seq bigint;
BEGIN
    IF change_id IS NULL AND change_session IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO change_log (kind, id, session) VALUES (change_kind, change_id, change_session)
        RETURNING seq INTO new_seq;
    PERFORM pg_notify('atelier_changes', new_seq::text);
END $$;

-- One trigger function per way a table finds its product (or question): directly, through a
-- style, a review, a question or an answer. Updates log both the old and the new parent.
CREATE FUNCTION atelier_changed_by_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change(TG_ARGV[0], OLD.product_id, NULL);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.product_id IS DISTINCT FROM OLD.product_id) THEN
        PERFORM atelier_log_change(TG_ARGV[0], NEW.product_id, NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION atelier_changed_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('product', OLD.id, NULL);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.id <> OLD.id) THEN
        PERFORM atelier_log_change('product', NEW.id, NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION atelier_changed_by_style() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('styles', (SELECT product_id FROM styles WHERE id = OLD.style_id), NULL);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM atelier_log_change('styles', (SELECT product_id FROM styles WHERE id = NEW.style_id), NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION atelier_changed_by_review() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('reviews', (SELECT product_id FROM reviews WHERE id = OLD.review_id), NULL);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM atelier_log_change('reviews', (SELECT product_id FROM reviews WHERE id = NEW.review_id), NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION atelier_changed_answer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('answers', OLD.question_id, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = OLD.question_id), NULL);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM atelier_log_change('answers', NEW.question_id, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = NEW.question_id), NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION atelier_changed_by_answer() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q bigint;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        q := (SELECT question_id FROM answers WHERE id = OLD.answer_id);
        PERFORM atelier_log_change('answers', q, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = q), NULL);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        q := (SELECT question_id FROM answers WHERE id = NEW.answer_id);
        PERFORM atelier_log_change('answers', q, NULL);
        PERFORM atelier_log_change('questions', (SELECT product_id FROM questions WHERE id = q), NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION atelier_changed_cart() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('cart', NULL, OLD.session);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM atelier_log_change('cart', NULL, NEW.session);
    END IF;
    RETURN NULL;
END $$;

-- TRUNCATE fires no row triggers: log it as "everything changed".
CREATE FUNCTION atelier_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM atelier_log_change('all', 0, NULL);
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['products', 'features', 'styles', 'photos', 'skus', 'related', 'reviews',
                             'reviews_photos', 'characteristics', 'characteristic_reviews', 'questions',
                             'answers', 'answers_photos', 'cart_items'] LOOP
        EXECUTE format('CREATE TRIGGER log_truncate AFTER TRUNCATE ON %I
                            FOR EACH STATEMENT EXECUTE FUNCTION atelier_truncated()', t);
    END LOOP;
END $$;

CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_product();
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON features
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_product('features');
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON styles
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_product('styles');
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON photos
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_style();
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON skus
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_style();
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON related
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_product('related');
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON reviews
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_product('reviews');
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON reviews_photos
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_review();
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON characteristics
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_product('reviews');
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON characteristic_reviews
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_review();
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON questions
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_product('questions');
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON answers
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_answer();
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON answers_photos
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_answer();
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON cart_items
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_cart();
