-- The role an instance serves with: the reads and writes the API makes, and nothing else. No
-- DDL (no CREATE on the schema, no ownership), no trigger control (only a table's owner may
-- disable its triggers), no access to the bookkeeping of migrations and of the loader
-- (schema_migrations, loader_deferred_ddl), no TRUNCATE. `atelier migrate` and `atelier load`
-- keep the owner role.
--
-- A role belongs to the cluster: it is created once, as a group that cannot log in, and each
-- database grants it its tables. Instances log in as a member:
--   CREATE ROLE atelier_web LOGIN PASSWORD '...' IN ROLE atelier_serve;
-- A migrating user that may not create roles, where the role does not exist yet, gets a
-- warning and no grants: create the role (as a user that may), then run this file's grants.
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
    -- Every body is rendered from these; the change feed reads the log and prunes it.
    GRANT SELECT ON products, features, styles, photos, skus, related, reviews, reviews_photos,
                    characteristics, characteristic_reviews, questions, answers, answers_photos,
                    cart_items, change_log, change_log_pruned, change_log_prune_runs
        TO atelier_serve;
    -- The API's writes, and what their triggers write (the log).
    GRANT INSERT ON reviews, reviews_photos, characteristic_reviews, questions, answers,
                    answers_photos, cart_items, interactions, change_log
        TO atelier_serve;
    GRANT USAGE ON SEQUENCE change_log_seq_seq TO atelier_serve;
    GRANT UPDATE (helpfulness, reported) ON reviews, questions, answers TO atelier_serve;
    GRANT UPDATE (count, updated_at) ON cart_items TO atelier_serve;
    -- Carts moved under new keys at start (src/cart_key.rs).
    GRANT DELETE ON cart_items TO atelier_serve;
    -- The feed's pruning of the log.
    GRANT INSERT, DELETE ON change_log_prune_runs TO atelier_serve;
    GRANT DELETE ON change_log TO atelier_serve;
    GRANT UPDATE ON change_log_pruned TO atelier_serve;
END
$$;
