//! Cart keys: what a caller's `Authorization` value becomes before anything stores it. The cart
//! table, the change log and the cache hold only the key, so a database dump, a replica or a
//! log line never hands out a caller's token.
//!
//! Without a server secret the key is `sha256:` and the hex SHA-256 of the token; with one
//! (`ATELIER_CART_SECRET`) it is `hmac:` and the hex HMAC-SHA-256, under the secret, of that
//! same hex digest. Keying the HMAC by the digest, not the token, lets a server given a secret
//! turn the `sha256:` keys already stored into `hmac:` ones ([`CartKeys::upgraded`]) without
//! ever having seen the tokens; migration 4 (`sql/0004_cart_keys.sql`) turned the tokens stored
//! before it into `sha256:` keys.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// The shortest secret accepted: 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why a secret was refused.
#[derive(Debug, thiserror::Error)]
#[error("the cart secret is {0} bytes long: use at least {MIN_SECRET_BYTES} random bytes (for example `openssl rand -hex 32`)")]
pub struct ShortSecret(usize);

/// Derives cart keys from `Authorization` values. The default has no secret.
#[derive(Debug, Clone, Default)]
pub struct CartKeys {
    secret: Option<Secret<Vec<u8>>>,
}

impl CartKeys {
    /// Keys under `secret`, or plain SHA-256 without one.
    pub fn new(secret: Option<&[u8]>) -> Result<CartKeys, ShortSecret> {
        match secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => Err(ShortSecret(s.len())),
            _ => Ok(CartKeys {
                secret: secret.map(|s| Secret(s.to_vec())),
            }),
        }
    }

    /// Whether keys are made with a secret.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The cart key of `token`.
    pub fn key(&self, token: &str) -> String {
        let digest = hex(&Sha256::digest(token.as_bytes()));
        match &self.secret {
            None => format!("sha256:{digest}"),
            Some(secret) => hmac_key(&secret.0, &digest),
        }
    }

    /// The key that a stored `sha256:` key has under this server's secret; None without a
    /// secret, or for a key of another form.
    pub fn upgraded(&self, stored: &str) -> Option<String> {
        let secret = self.secret.as_ref()?;
        let digest = stored.strip_prefix("sha256:").filter(|d| is_digest(d))?;
        Some(hmac_key(&secret.0, digest))
    }

    /// What a stored cart key should become for this server, if anything: a `sha256:` key its
    /// `hmac:` key when there is a secret, and anything that is not a key at all (a token an
    /// older build stored) its key.
    pub fn rekeyed(&self, stored: &str) -> Option<String> {
        if stored.strip_prefix("hmac:").is_some_and(is_digest) {
            return None;
        }
        if stored.strip_prefix("sha256:").is_some_and(is_digest) {
            return self.upgraded(stored);
        }
        Some(self.key(stored))
    }

    /// A PostgreSQL regular expression matching the keys that [`Self::rekeyed`] leaves as they
    /// are, so that a query need not fetch them.
    pub fn final_keys_pattern(&self) -> &'static str {
        if self.has_secret() {
            "^hmac:[0-9a-f]{64}$"
        } else {
            "^(sha256|hmac):[0-9a-f]{64}$"
        }
    }
}

/// Whether `digest` is 64 lower-case hex digits.
fn is_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hmac_key(secret: &[u8], digest: &str) -> String {
    // An HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return format!("sha256:{digest}"),
    };
    mac.update(digest.as_bytes());
    format!("hmac:{}", hex(&mac.finalize().into_bytes()))
}

/// `bytes` in lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_digests_of_the_token_and_a_secret_changes_them() {
        let plain = CartKeys::new(None).unwrap();
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(
            plain.key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(plain.upgraded(&plain.key("abc")), None, "no secret");
        let secret = b"0123456789abcdef0123456789abcdef";
        let keyed = CartKeys::new(Some(secret)).unwrap();
        let key = keyed.key("abc");
        assert!(key.starts_with("hmac:") && key.len() == 5 + 64, "{key}");
        assert_ne!(
            key,
            CartKeys::new(Some(b"another secret, 16+ bytes"))
                .unwrap()
                .key("abc")
        );
        assert_eq!(keyed.upgraded(&plain.key("abc")), Some(key.clone()));
        assert_eq!(keyed.upgraded(&key), None, "already upgraded");
        // A token an older build stored becomes its key; keys stay as they are.
        assert_eq!(plain.rekeyed("abc"), Some(plain.key("abc")));
        assert_eq!(plain.rekeyed(&plain.key("abc")), None);
        assert_eq!(keyed.rekeyed("abc"), Some(key.clone()));
        assert_eq!(keyed.rekeyed(&plain.key("abc")), Some(key.clone()));
        assert_eq!(keyed.rekeyed(&key), None);
        assert_eq!(
            plain.rekeyed("sha256:short"),
            Some(plain.key("sha256:short"))
        );
        assert!(CartKeys::new(Some(b"short")).is_err());
        assert!(!format!("{keyed:?}").contains("0123456789abcdef"));
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_key(b"Jefe", "what do ya want for nothing?"),
            "hmac:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
