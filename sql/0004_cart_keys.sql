-- Carts are keyed by a hash of the caller's Authorization value, never the value itself: a
-- database dump, a replica or the change log no longer hands out callers' tokens.
--
-- The server keys a cart by 'sha256:' || hex(SHA-256(token)), or, with a server secret
-- (ATELIER_CART_SECRET), by 'hmac:' || hex(HMAC-SHA-256(secret, hex(SHA-256(token)))). This
-- migration turns every stored token into the first form, so existing carts keep working; a
-- server turns the rest at start (src/cart_key.rs): 'sha256:' keys into 'hmac:' ones when it
-- has a secret, and tokens stored by an older build still running.

-- A cart key as it is; anything else (a token) as its 'sha256:' key.
CREATE FUNCTION atelier_cart_key(session text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN session ~ '^(sha256|hmac):[0-9a-f]{64}$' THEN session
                ELSE 'sha256:' || encode(sha256(convert_to(session, 'UTF8')), 'hex') END
$$;

-- The log never takes a token either, whoever writes the cart (an older build still running,
-- or a server moving carts under new keys).
CREATE OR REPLACE FUNCTION atelier_changed_cart() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('cart', NULL, atelier_cart_key(OLD.session));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM atelier_log_change('cart', NULL, atelier_cart_key(NEW.session));
    END IF;
    RETURN NULL;
END $$;

-- The trigger is off for the bulk update: two log rows per cart would tell no instance of this
-- build anything (none holds a cart under a token), and instances of an older build, which do,
-- should be stopped before this migration: their carts' cache entries are keyed by the token,
-- which the log no longer carries.
ALTER TABLE cart_items DISABLE TRIGGER log_change;
UPDATE cart_items SET session = atelier_cart_key(session);
ALTER TABLE cart_items ENABLE TRIGGER log_change;
UPDATE change_log SET session = atelier_cart_key(session) WHERE session IS NOT NULL;
COMMENT ON COLUMN cart_items.session IS
    'The cart key: a hash of the caller''s Authorization value (src/cart_key.rs), never the value.';
