//! The API key format and its hash at rest.
//!
//! A key is `jk_live_<id>_<secret>`: `<id>` is 8 and `<secret>` 43 base62 characters, all
//! from the OS-seeded CSPRNG. The secret alone carries 256 bits (43 × log2 62 ≈ 256.03), so
//! a key cannot be guessed; the id makes the visible **prefix** `jk_live_<id>`, which finds
//! the row and may be shown and logged. base62 keeps the key one "word" (a double click
//! selects it whole) and makes the fixed positions of the separators unambiguous.
//!
//! Only the scrypt PHC string of the whole key is stored (`$scrypt$ln=14,r=8,p=1$<salt>$<hash>`,
//! a 16-byte random salt): a database leak yields no usable key. The parameters travel in the
//! string, so they can be raised later without invalidating existing keys.

use rand::RngExt;
use scrypt::Scrypt;
use scrypt::password_hash::phc::PasswordHash;
use scrypt::password_hash::{Error as HashError, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};

/// What every key starts with; `live` leaves room for test-mode keys later.
pub const KEY_START: &str = "jk_live_";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 43;
/// `jk_live_` + id + `_` + secret.
pub const KEY_LEN: usize = KEY_START.len() + ID_LEN + 1 + SECRET_LEN;
const PREFIX_LEN: usize = KEY_START.len() + ID_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// scrypt cost: N = 2^14, r = 8, p = 1 (16 MiB, tens of milliseconds): the original's
/// parameters (Node's scrypt defaults). Keys are 256-bit random, so the hash is defence in
/// depth rather than what stops guessing; the verification cache keeps it off the hot path.
const SCRYPT_LOG_N: u8 = 14;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const SALT_LEN: usize = 16;

/// A freshly generated key: the full key (shown once) and its visible prefix.
pub struct NewKey {
    pub key: SecretString,
    pub prefix: String,
}

pub fn generate() -> NewKey {
    let id = base62(ID_LEN);
    let secret = base62(SECRET_LEN);
    let prefix = format!("{KEY_START}{id}");
    NewKey {
        key: SecretString::from(format!("{prefix}_{secret}")),
        prefix,
    }
}

fn base62(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

/// The prefix of a well-formed key, or `None` for anything that is not one.
pub fn prefix_of(presented: &str) -> Option<&str> {
    let bytes = presented.as_bytes();
    let well_formed = bytes.len() == KEY_LEN
        && presented.starts_with(KEY_START)
        && bytes[KEY_START.len()..PREFIX_LEN]
            .iter()
            .all(u8::is_ascii_alphanumeric)
        && bytes[PREFIX_LEN] == b'_'
        && bytes[PREFIX_LEN + 1..]
            .iter()
            .all(u8::is_ascii_alphanumeric);
    well_formed.then(|| &presented[..PREFIX_LEN])
}

fn scrypt() -> Result<Scrypt, String> {
    scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .map(Scrypt::new_with_params)
        .map_err(|error| format!("scrypt parameters: {error}"))
}

/// The PHC string of `key`. CPU-bound: call it off the async runtime.
pub fn hash(key: &SecretString) -> Result<String, String> {
    let salt: [u8; SALT_LEN] = rand::random();
    scrypt()?
        .hash_password_with_salt(key.expose_secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| format!("scrypt: {error}"))
}

/// Whether `key` matches the stored PHC string (compared in constant time). CPU-bound.
pub fn matches(key: &SecretString, key_hash: &str) -> Result<bool, String> {
    let parsed =
        PasswordHash::new(key_hash).map_err(|error| format!("stored key hash: {error}"))?;
    match scrypt()?.verify_password(key.expose_secret().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(HashError::PasswordInvalid) => Ok(false),
        Err(error) => Err(format!("scrypt: {error}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_round_trips() {
        let new = generate();
        let key = new.key.expose_secret();
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(prefix_of(key), Some(new.prefix.as_str()));
        assert_eq!(new.prefix.len(), 16);
        let stored = hash(&new.key).unwrap();
        assert!(stored.starts_with("$scrypt$ln=14,r=8,p=1$"), "{stored}");
        assert!(!stored.contains(key));
        assert!(matches(&new.key, &stored).unwrap());
        let other = generate();
        assert!(!matches(&other.key, &stored).unwrap());
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        let key = generate().key.expose_secret().to_owned();
        assert!(prefix_of(&key[1..]).is_none());
        assert!(prefix_of(&format!("{key}x")).is_none());
        assert!(prefix_of(&key.replace("jk_live_", "jk_test_")).is_none());
        let mut wrong_separator = key.clone().into_bytes();
        wrong_separator[16] = b'-';
        assert!(prefix_of(std::str::from_utf8(&wrong_separator).unwrap()).is_none());
        let mut non_alphanumeric = key.into_bytes();
        non_alphanumeric[40] = b'-';
        assert!(prefix_of(std::str::from_utf8(&non_alphanumeric).unwrap()).is_none());
        assert!(prefix_of("").is_none());
        // Multi-byte characters must not panic on slicing.
        assert!(prefix_of(&"é".repeat(30)).is_none());
    }
}
