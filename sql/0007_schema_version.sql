-- Which migrations the database has, for a catalog snapshot to name (src/cache/snapshot.rs): a
-- snapshot written before a migration is not loaded after it, since the migration may have
-- changed what the bodies are rendered from without the change log hearing of it.
-- schema_migrations is the owner's; this function reads it as the owner and returns only the
-- versions and checksums.
CREATE FUNCTION atelier_schema_version() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT coalesce(string_agg(m.version::text || ':' || m.checksum::text, ',' ORDER BY m.version), '')
      FROM public.schema_migrations AS m
$$;
REVOKE EXECUTE ON FUNCTION atelier_schema_version() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'atelier_serve') THEN
        GRANT EXECUTE ON FUNCTION atelier_schema_version() TO atelier_serve;
    END IF;
END
$$;
