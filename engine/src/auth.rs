//! API keys and agent tokens: generated at random, shown once, stored as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new random secret with a readable prefix (`pk_` admin keys, `pat_` agent tokens).
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The form a secret is stored and compared in.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of a presented secret against a stored hash.
pub fn verify_secret(presented: &str, stored_hash: &str) -> bool {
    let h = hash_secret(presented);
    let (a, b) = (h.as_bytes(), stored_hash.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_secret_verifies_and_others_do_not() {
        let s = generate_secret("pat_");
        assert!(s.starts_with("pat_") && s.len() == 4 + 48);
        let h = hash_secret(&s);
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret("pat_wrong", &h));
        assert_ne!(generate_secret("pat_"), s);
    }
}
