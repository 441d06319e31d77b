-- A helpful vote counted once, however often it is sent. nginx retries a request on another
-- instance after an error or a timeout, and it counts PUT as idempotent, so a vote whose first
-- attempt was applied could be applied again. Every attempt carries the same X-Request-Id
-- (deploy/nginx.conf sets it to nginx's $request_id), and the vote's statement records it here,
-- with the row voted for, in the same transaction: an id already recorded for that row is not
-- counted again. Requests without an id
-- (clients straight to an instance) are counted as before. Reports need none of this: reporting
-- twice is reporting once.
CREATE TABLE applied_requests (
    id text        PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now()
);

-- Forgets ids older than an hour (a retry comes within seconds); the change feed calls it
-- when it prunes the log. Runs as the owner.
CREATE FUNCTION atelier_forget_applied_requests() RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH gone AS (DELETE FROM public.applied_requests AS r
                   WHERE r.at < now() - interval '1 hour' RETURNING 1)
    SELECT count(*) FROM gone
$$;
REVOKE EXECUTE ON FUNCTION atelier_forget_applied_requests() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'atelier_serve') THEN
        GRANT SELECT (id), INSERT ON applied_requests TO atelier_serve;
        GRANT EXECUTE ON FUNCTION atelier_forget_applied_requests() TO atelier_serve;
    END IF;
END
$$;
