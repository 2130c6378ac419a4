//! Staging encryption: AES-256-GCM under the epoch's data key, so destroying the key
//! shreds every staged payload of that epoch, backups included.

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use veil_pipeline::Secret;

/// Encrypts `plain` with a fresh random nonce; returns `(nonce, ciphertext)`.
pub fn seal(key: &Secret, aad: &[u8], plain: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let cipher = Aes256Gcm::new_from_slice(&key.0).expect("32-byte key");
    let mut nonce = [0u8; 12];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("AES-GCM encryption of an in-memory buffer");
    (nonce.to_vec(), ct)
}

/// Encrypts `buf` in place (the tag is appended; reserve 16 bytes to avoid a copy) with
/// a fresh random nonce, which it returns: a segment is built once and never copied.
pub fn seal_in_place(key: &Secret, aad: &[u8], buf: &mut Vec<u8>) -> [u8; 12] {
    let cipher = Aes256Gcm::new_from_slice(&key.0).expect("32-byte key");
    let mut nonce = [0u8; 12];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut nonce);
    cipher
        .encrypt_in_place(Nonce::from_slice(&nonce), aad, buf)
        .expect("AES-GCM encryption of an in-memory buffer");
    nonce
}

/// Decrypts and authenticates; `None` when the key, nonce, AAD or ciphertext is wrong.
pub fn open(key: &Secret, aad: &[u8], nonce: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    if nonce.len() != 12 {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(&key.0).ok()?;
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}
