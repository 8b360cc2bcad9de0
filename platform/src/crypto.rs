//! Small cryptographic helpers over the master key: authenticated encryption of secrets at rest
//! (AES-256-GCM) and keyed hashes of bearer secrets (HMAC-SHA-256), plus random tokens.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Encrypts `plain` under `key`, bound to `context` (e.g. `totp:<user id>`) so a ciphertext
/// moved to another row does not decrypt. Output: base64(nonce ‖ ciphertext ‖ tag).
pub fn seal(key: &[u8; 32], context: &str, plain: &[u8]) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: context.as_bytes() })
        .expect("AES-GCM encryption of a small secret");
    let mut out = nonce.to_vec();
    out.extend(ct);
    STANDARD.encode(out)
}

/// Decrypts what [`seal`] produced for the same key and context.
pub fn open(key: &[u8; 32], context: &str, sealed: &str) -> Option<Vec<u8>> {
    let raw = STANDARD.decode(sealed).ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = raw.split_at(12);
    Aes256Gcm::new(key.into()).decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() }).ok()
}

/// HMAC-SHA-256 of a bearer secret (refresh token, recovery code, invite): what is stored, so a
/// database dump alone cannot be brute-forced back into usable secrets.
pub fn keyed_hash(key: &[u8; 32], purpose: &str, secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(purpose.as_bytes());
    mac.update(&[0]);
    mac.update(secret.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `n` random bytes as URL-safe base64.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_with_same_key_and_context() {
        let k = [7u8; 32];
        let s = seal(&k, "totp:u1", b"secret");
        assert_eq!(open(&k, "totp:u1", &s).as_deref(), Some(&b"secret"[..]));
        assert!(open(&k, "totp:u2", &s).is_none());
        assert!(open(&[8u8; 32], "totp:u1", &s).is_none());
        assert_ne!(seal(&k, "totp:u1", b"secret"), s, "fresh nonce each time");
    }
}
