//! A node's identity: its ed25519 signing key (which is also its libp2p PeerId) and
//! its X25519 static key for end-to-end Noise sessions, plus the text format of the
//! key files that hold them. Reading and writing the files (mode 0600) is the driver's
//! job; this module only encodes and decodes their contents.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use zeroize::Zeroizing;

/// Which secret a key file holds; written as the file's first word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The node's ed25519 identity (signs announcements, is its PeerId).
    Ed25519,
    /// The node's X25519 static key for `Noise_IK_25519_ChaChaPoly_BLAKE2s`.
    X25519,
}

impl KeyKind {
    fn tag(&self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "cocoon-ed25519-secret-v1",
            KeyKind::X25519 => "cocoon-x25519-secret-v1",
        }
    }
}

/// A key file that cannot be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("key file is not UTF-8 text")]
    NotText,
    #[error("key file holds {found:?}, expected {expected:?}")]
    WrongKind { expected: String, found: String },
    #[error("key file secret is not 64 hex digits")]
    BadSecret,
}

/// Encodes a 32-byte secret as the text of a key file: `<tag> <hex>\n`.
pub fn encode_key_file(kind: KeyKind, secret: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(format!("{} {}\n", kind.tag(), hex::encode(secret)).into_bytes())
}

/// Decodes the text of a key file written by [`encode_key_file`].
pub fn decode_key_file(kind: KeyKind, bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyFileError::NotText)?;
    let mut words = text.split_whitespace();
    let tag = words.next().unwrap_or("");
    if tag != kind.tag() {
        return Err(KeyFileError::WrongKind {
            expected: kind.tag().to_owned(),
            found: tag.chars().take(40).collect(),
        });
    }
    let hex_secret = Zeroizing::new(words.next().unwrap_or("").to_owned());
    if words.next().is_some() {
        return Err(KeyFileError::BadSecret);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_secret.as_bytes(), &mut out[..])
        .map_err(|_| KeyFileError::BadSecret)?;
    Ok(out)
}

/// A node's secrets. Built from 32-byte seeds the driver draws from its RNG or reads
/// from key files; never printed (its `Debug` shows only the PeerId).
#[derive(Clone)]
pub struct NodeIdentity {
    signing: SigningKey,
    noise_secret: Zeroizing<[u8; 32]>,
    peer_id: PeerId,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// The identity whose ed25519 secret key is `ed25519_seed` and whose X25519 static
    /// secret is `x25519_secret`.
    pub fn from_secrets(ed25519_seed: &[u8; 32], x25519_secret: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(ed25519_seed);
        let peer_id = peer_id_of(&signing.verifying_key().to_bytes())
            .expect("a key from ed25519-dalek is a valid ed25519 public key");
        NodeIdentity {
            signing,
            noise_secret: Zeroizing::new(*x25519_secret),
            peer_id,
        }
    }

    /// The libp2p PeerId of this node (identity multihash of its ed25519 public key).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The 32-byte ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The same key as a libp2p keypair, for the swarm's transport identity.
    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut seed = Zeroizing::new(self.signing.to_bytes());
        libp2p_identity::Keypair::ed25519_from_bytes(&mut seed[..])
            .expect("32 bytes are always a valid ed25519 secret key")
    }

    /// The X25519 public key peers use to open end-to-end sessions with this node.
    pub fn noise_public_key(&self) -> [u8; 32] {
        curve25519_dalek::MontgomeryPoint::mul_base_clamped(*self.noise_secret).to_bytes()
    }

    /// The X25519 static secret, for the session layer.
    pub fn noise_secret(&self) -> &[u8; 32] {
        &self.noise_secret
    }

    /// The ed25519 secret seed, for writing the key file.
    pub fn ed25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// Signs `message` with the node's ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// A byte string that is not an ed25519 public key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid ed25519 public key")]
pub struct InvalidNodeKey;

/// The libp2p PeerId of the node whose ed25519 public key is `key`.
pub fn peer_id_of(key: &[u8; 32]) -> Result<PeerId, InvalidNodeKey> {
    let pk =
        libp2p_identity::ed25519::PublicKey::try_from_bytes(key).map_err(|_| InvalidNodeKey)?;
    Ok(libp2p_identity::PublicKey::from(pk).to_peer_id())
}

/// Verifies an ed25519 signature strictly (no malleable or small-order keys).
pub fn verify_signature(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    vk.verify_strict(message, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_refuse_the_wrong_kind() {
        let secret = [7u8; 32];
        let text = encode_key_file(KeyKind::Ed25519, &secret);
        assert_eq!(
            *decode_key_file(KeyKind::Ed25519, &text).expect("decodes"),
            secret
        );
        assert!(matches!(
            decode_key_file(KeyKind::X25519, &text),
            Err(KeyFileError::WrongKind { .. })
        ));
        assert_eq!(
            decode_key_file(KeyKind::Ed25519, b"cocoon-ed25519-secret-v1 abcd\n"),
            Err(KeyFileError::BadSecret)
        );
    }

    #[test]
    fn peer_id_matches_libp2p_keypair() {
        let id = NodeIdentity::from_secrets(&[1; 32], &[2; 32]);
        assert_eq!(id.peer_id(), id.libp2p_keypair().public().to_peer_id());
        assert_eq!(peer_id_of(&id.public_key()), Ok(id.peer_id()));
        assert!(id.peer_id().to_string().starts_with("12D3KooW"));
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message() {
        let id = NodeIdentity::from_secrets(&[3; 32], &[4; 32]);
        let sig = id.sign(b"hello");
        assert!(verify_signature(&id.public_key(), b"hello", &sig));
        assert!(!verify_signature(&id.public_key(), b"hellp", &sig));
    }

    #[test]
    fn noise_public_key_is_x25519_of_the_secret() {
        let id = NodeIdentity::from_secrets(&[3; 32], &[9; 32]);
        // X25519(secret, 9) computed independently through curve25519-dalek's DH.
        let base =
            curve25519_dalek::MontgomeryPoint(curve25519_dalek::constants::X25519_BASEPOINT.0);
        assert_eq!(id.noise_public_key(), base.mul_clamped([9; 32]).to_bytes());
        assert_ne!(id.noise_public_key(), [0; 32]);
    }
}
