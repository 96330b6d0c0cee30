//! ed25519 signatures over cell hashes, as the contract's `check_signature(hash, sig,
//! key)` checks them: the signed message is the 32-byte representation hash of the
//! cell, never the cell's bytes.
//!
//! Verification is `verify_strict` (no small-order keys, canonical encodings only),
//! which accepts a subset of what the contract accepts: a state accepted here is
//! accepted on chain.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::error::{ChannelError, LayoutError};
use super::units::Side;

/// Signs a cell hash.
pub fn sign_hash(key: &SigningKey, hash: &[u8; 32]) -> [u8; 64] {
    key.sign(hash).to_bytes()
}

/// Verifies `signature` over `hash` under `key`; on failure names `side` as the
/// party whose signature was expected.
pub fn verify_hash(
    key: &VerifyingKey,
    hash: &[u8; 32],
    signature: &[u8; 64],
    side: Side,
) -> Result<(), ChannelError> {
    let sig = Signature::from_bytes(signature);
    key.verify_strict(hash, &sig)
        .map_err(|_| ChannelError::BadSignature { side })
}

/// Parses a 32-byte public key (as stored in `key_A` / `key_B`).
pub fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, LayoutError> {
    VerifyingKey::from_bytes(bytes).map_err(|_| LayoutError::Key { what: "public key" })
}
