//! Secrets at rest (bot tokens, signing secrets): sealed with XChaCha20-Poly1305 under the
//! deployment's master key. A sealed value is `v1:` + base64(nonce ‖ ciphertext), so the
//! scheme can change without guessing what an old value is; `v2:` values are also bound
//! to what holds them (the AEAD's associated data, such as `connection:<id>`), so a sealed
//! value copied into another record does not open there.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "v1:";
const BOUND_PREFIX: &str = "v2:";
const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the master key must be 32 bytes, as 64 hex digits or base64")]
    BadKey,
    #[error("a sealed secret could not be opened (wrong master key, or corrupt)")]
    Unsealable,
}

/// The master key, kept out of Debug output.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// Kept to derive keys for other purposes ([`SecretBox::derive_key`]).
    key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(…)")
    }
}

impl SecretBox {
    /// From 32 key bytes given as 64 hex digits or base64.
    pub fn from_text(text: &str) -> Result<SecretBox, SecretError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| B64.decode(text).ok())
            .filter(|b| b.len() == 32)
            .ok_or(SecretError::BadKey)?;
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?,
            key: bytes.try_into().map_err(|_| SecretError::BadKey)?,
        })
    }

    /// A key for `purpose` (HMAC-SHA256 of the purpose under the master key): whoever holds
    /// the master key derives the same one, and a derived key does not reveal the master
    /// key nor the keys of other purposes.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(b"parley derived key: ");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A new random key, as the text [`SecretBox::from_text`] reads.
    pub fn generate_key() -> String {
        hex::encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub fn seal(&self, plaintext: &str) -> String {
        self.seal_with(PREFIX, plaintext, b"")
    }

    /// Seals `plaintext` for the record `context` names: it opens only with the same
    /// context ([`SecretBox::open_bound`]).
    pub fn seal_bound(&self, plaintext: &str, context: &str) -> String {
        self.seal_with(BOUND_PREFIX, plaintext, context.as_bytes())
    }

    fn seal_with(&self, prefix: &str, plaintext: &str, aad: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .expect("encrypting in memory does not fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{prefix}{}", B64.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        self.open_with(PREFIX, sealed, b"")
    }

    /// Opens a value sealed for `context`; one sealed before binding existed (`v1:`)
    /// opens too, and is bound the next time it is written.
    pub fn open_bound(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        if sealed.starts_with(PREFIX) {
            return self.open(sealed);
        }
        self.open_with(BOUND_PREFIX, sealed, context.as_bytes())
    }

    fn open_with(&self, prefix: &str, sealed: &str, aad: &[u8]) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(prefix)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or(SecretError::Unsealable)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| SecretError::Unsealable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_tampering_or_the_wrong_key() {
        let key = SecretBox::generate_key();
        let b = SecretBox::from_text(&key).unwrap();
        let sealed = b.seal("123456:ABC-telegram-token");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("telegram"));
        assert_ne!(
            sealed,
            b.seal("123456:ABC-telegram-token"),
            "a fresh nonce each time"
        );
        assert_eq!(b.open(&sealed).unwrap(), "123456:ABC-telegram-token");

        let other = SecretBox::from_text(&SecretBox::generate_key()).unwrap();
        assert_eq!(other.open(&sealed), Err(SecretError::Unsealable));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            b.open(&String::from_utf8(tampered).unwrap()),
            Err(SecretError::Unsealable)
        );
        assert_eq!(b.open("plain"), Err(SecretError::Unsealable));
        assert_eq!(format!("{b:?}"), "SecretBox(…)");
    }

    #[test]
    fn bound_secrets_open_only_for_their_record() {
        let b = SecretBox::from_text(&SecretBox::generate_key()).unwrap();
        let sealed = b.seal_bound("xoxb-slack-token", "connection:1");
        assert!(sealed.starts_with("v2:"));
        assert_eq!(
            b.open_bound(&sealed, "connection:1").unwrap(),
            "xoxb-slack-token"
        );
        // Copied into another record, or read as an unbound value, it does not open.
        assert_eq!(
            b.open_bound(&sealed, "connection:2"),
            Err(SecretError::Unsealable)
        );
        assert_eq!(b.open(&sealed), Err(SecretError::Unsealable));
        // Values sealed before binding still open where they are.
        let old = b.seal("older-token");
        assert_eq!(b.open_bound(&old, "connection:1").unwrap(), "older-token");
    }

    #[test]
    fn derived_keys_follow_the_master_key_and_the_purpose() {
        let text = SecretBox::generate_key();
        let a = SecretBox::from_text(&text).unwrap();
        let again = SecretBox::from_text(&text).unwrap();
        let other = SecretBox::from_text(&SecretBox::generate_key()).unwrap();
        let k = a.derive_key("nodes");
        assert_eq!(
            k,
            again.derive_key("nodes"),
            "every holder derives the same key"
        );
        assert_ne!(k, a.derive_key("other purpose"));
        assert_ne!(k, other.derive_key("nodes"));
        assert_ne!(&k[..], &hex::decode(&text).unwrap()[..]);
    }

    #[test]
    fn keys_are_32_bytes_in_hex_or_base64() {
        let hex_key = "00".repeat(32);
        assert!(SecretBox::from_text(&hex_key).is_ok());
        assert!(SecretBox::from_text(&B64.encode([7u8; 32])).is_ok());
        assert_eq!(
            SecretBox::from_text("short").unwrap_err(),
            SecretError::BadKey
        );
        assert_eq!(
            SecretBox::from_text(&"00".repeat(31)).unwrap_err(),
            SecretError::BadKey
        );
    }
}
