-- Carts are keyed by a hash of the caller's Authorization value, never the value itself: a
-- database dump, a replica or the change log no longer hands out callers' tokens.
--
-- The server keys a cart by 'sha256:' || hex(SHA-256(token)), or, with a server secret
-- (ATELIER_CART_SECRET), by 'hmac:' || hex(HMAC-SHA-256(secret, hex(SHA-256(token)))). This
-- migration turns every stored token into the first form, so existing carts keep working; a
-- server turns the rest at start (src/cart_key.rs): 'sha256:' keys into 'hmac:' ones when it
-- has a secret, and tokens stored by an older build still running.
--
-- The trigger is off for the update, so that it logs no token; the log's own tokens follow.
ALTER TABLE cart_items DISABLE TRIGGER log_change;
UPDATE cart_items
   SET session = 'sha256:' || encode(sha256(convert_to(session, 'UTF8')), 'hex');
ALTER TABLE cart_items ENABLE TRIGGER log_change;
UPDATE change_log
   SET session = 'sha256:' || encode(sha256(convert_to(session, 'UTF8')), 'hex')
 WHERE session IS NOT NULL;
COMMENT ON COLUMN cart_items.session IS
    'The cart key: a hash of the caller''s Authorization value (src/cart_key.rs), never the value.';
