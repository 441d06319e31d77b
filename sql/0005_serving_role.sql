-- The role an instance serves with: the reads and writes the API makes, and nothing else. No
-- DDL (no CREATE on the schema, no ownership), no trigger control (only a table's owner may
-- disable its triggers), no access to the bookkeeping of migrations and of the loader
-- (schema_migrations, loader_deferred_ddl), no TRUNCATE, and no direct write to the change
-- log: the triggers write it, and the feed prunes it, through functions that run as the owner,
-- so a serving role cannot forge a change (an `all` would empty every instance's cache) or
-- delete one before the instances have read it. `atelier migrate` and `atelier load` keep the
-- owner role.
--
-- A role belongs to the cluster: it is created once, as a group that cannot log in, and each
-- database grants it its tables. Instances log in as a member:
--   CREATE ROLE atelier_web LOGIN PASSWORD '...' IN ROLE atelier_serve;
-- A migrating user that may not create roles, where the role does not exist yet, gets a
-- warning and no grants: create the role (as a user that may), then run this file's grants.
-- On PostgreSQL 13 and 14 every role may create objects in schema public unless
-- `REVOKE CREATE ON SCHEMA public FROM PUBLIC` was run (15 no longer allows it): run it there,
-- or the serving role can create tables, and objects that owner-run code might pick up.

-- The triggers log as the owner, and only as triggers: no one but the owner may call them (a
-- role could otherwise attach one to a temporary table of its own and log what it likes). The
-- temporary schema comes last in their search path, so a temporary table cannot stand in for
-- the log.
ALTER FUNCTION atelier_changed_by_product() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_product() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_by_style() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_by_review() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_answer() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_by_answer() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_cart() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_truncated() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_by_id() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
REVOKE EXECUTE ON FUNCTION atelier_changed_by_product(), atelier_changed_product(),
    atelier_changed_by_style(), atelier_changed_by_review(), atelier_changed_answer(),
    atelier_changed_by_answer(), atelier_changed_cart(), atelier_truncated(),
    atelier_changed_by_id(), atelier_log_change(text, bigint, text)
    FROM PUBLIC;

-- The shortest retention pruning takes, whoever asks: a caller cannot make it delete rows the
-- instances have not read yet. Only the owner may lower it (tests do).
ALTER TABLE change_log_pruned
    ADD COLUMN min_retention_s double precision NOT NULL DEFAULT 3600 CHECK (min_retention_s >= 0);

-- Prunes the log: records this run, deletes the rows whose writers had ended before a previous
-- run at least the retention old (so every row deleted was visible for the whole retention),
-- forgets runs no longer needed, and records the highest sequence number deleted. The
-- retention is `retention_seconds`, raised to change_log_pruned.min_retention_s (and to it
-- for NaN or NULL). Returns the rows deleted. Runs as the owner; the feed calls it
-- (src/pg/feed.rs).
CREATE FUNCTION atelier_prune_change_log(retention_seconds double precision) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    floor_s double precision;
    retention double precision;
    pruned bigint;
BEGIN
    SELECT p.min_retention_s INTO floor_s FROM public.change_log_pruned AS p;
    retention := CASE
        WHEN retention_seconds IS NULL OR retention_seconds = 'NaN' THEN floor_s
        ELSE LEAST(GREATEST(retention_seconds, floor_s), 315360000) -- at most ten years
    END;
    WITH horizon AS (SELECT max(r.ended_below) AS xmin, max(r.at) AS at
                       FROM public.change_log_prune_runs AS r
                      WHERE r.at < now() - make_interval(secs => retention)),
         run AS (INSERT INTO public.change_log_prune_runs
                 VALUES (now(), pg_snapshot_xmin(pg_current_snapshot())::text::int8)),
         gone AS (DELETE FROM public.change_log AS l
                   WHERE l.xid < (SELECT xmin FROM horizon)
                  RETURNING l.seq),
         marked AS (UPDATE public.change_log_pruned AS p
                       SET through = GREATEST(p.through, (SELECT max(seq) FROM gone))
                     WHERE EXISTS (SELECT 1 FROM gone)),
         forgotten AS (DELETE FROM public.change_log_prune_runs AS r
                        WHERE r.at < (SELECT at FROM horizon))
    SELECT count(*) INTO pruned FROM gone;
    RETURN pruned;
END $$;
REVOKE EXECUTE ON FUNCTION atelier_prune_change_log(double precision) FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'atelier_serve') THEN
        BEGIN
            CREATE ROLE atelier_serve NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- another database's migration created it meanwhile
        WHEN insufficient_privilege THEN
            RAISE WARNING 'cannot create role atelier_serve (%): instances must use the owner role until it exists', SQLERRM;
            RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA public TO atelier_serve;
    -- Every body is rendered from these; the change feed reads the log.
    GRANT SELECT ON products, features, styles, photos, skus, related, reviews, reviews_photos,
                    characteristics, characteristic_reviews, questions, answers, answers_photos,
                    cart_items, change_log, change_log_pruned
        TO atelier_serve;
    -- The API's writes.
    GRANT INSERT ON reviews, reviews_photos, characteristic_reviews, questions, answers,
                    answers_photos, cart_items, interactions
        TO atelier_serve;
    GRANT UPDATE (helpfulness, reported) ON reviews, questions, answers TO atelier_serve;
    GRANT UPDATE (count, updated_at) ON cart_items TO atelier_serve;
    -- Carts moved under new keys at start (src/cart_key.rs).
    GRANT DELETE ON cart_items TO atelier_serve;
    GRANT EXECUTE ON FUNCTION atelier_prune_change_log(double precision) TO atelier_serve;
END
$$;
