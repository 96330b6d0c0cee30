//! The Noise layer of a session, over snow: building the IK handshake for each role,
//! handshake messages in and out, and the transport that seals and opens frames, rekeys
//! each direction every `rekey_every` messages (both ends count the same ordered stream),
//! and dies on the first message that does not decrypt.
//!
//! Crypto comes from snow's `ring-accelerated` resolver, as in libp2p-noise on native
//! targets: ChaCha20-Poly1305, AES-256-GCM and the ephemeral keys' randomness (the OS
//! source) from ring, X25519 and BLAKE2s from snow's default resolver. Nothing else here reads the
//! outside world.

use snow::{Builder, HandshakeState, TransportState};

use super::frame::{FRAME_HEADER, encode_frame_into};
use super::{CipherSuite, MAX_NOISE_MESSAGE, SessionError};

/// Bytes the AEAD tag adds to each Noise message.
pub const TAG_LEN: usize = 16;

/// A Noise failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoiseError {
    #[error("decrypt failed: session ended")]
    DecryptFailed,
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("noise: {0}")]
    Other(String),
}

fn builder(suite: CipherSuite) -> Builder<'static> {
    Builder::new(
        suite
            .noise_params()
            .parse()
            .expect("every suite names a valid Noise protocol"),
    )
}

/// The initiator's side of the IK handshake, to a responder whose static key is known.
pub fn initiator(
    suite: CipherSuite,
    local_secret: &[u8; 32],
    remote_public: &[u8; 32],
) -> Result<HandshakeState, NoiseError> {
    builder(suite)
        .local_private_key(local_secret)
        .and_then(|b| b.remote_public_key(remote_public))
        .and_then(|b| b.build_initiator())
        .map_err(|e| NoiseError::Handshake(e.to_string()))
}

/// The responder's side of the IK handshake.
pub fn responder(suite: CipherSuite, local_secret: &[u8; 32]) -> HandshakeState {
    builder(suite)
        .local_private_key(local_secret)
        .and_then(|b| b.build_responder())
        .expect("a 32-byte key and fixed parameters always build a responder")
}

/// Writes the next handshake message, carrying `payload`.
pub fn write_handshake(hs: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    let n = hs
        .write_message(payload, &mut buf)
        .map_err(|e| NoiseError::Handshake(e.to_string()))?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads the next handshake message and returns its payload.
pub fn read_handshake(hs: &mut HandshakeState, message: &[u8]) -> Result<Vec<u8>, NoiseError> {
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    let n = hs.read_message(message, &mut buf).map_err(|e| match e {
        snow::Error::Decrypt => NoiseError::Handshake(
            "decrypt failed (wrong static key, or the message was altered)".into(),
        ),
        other => NoiseError::Handshake(other.to_string()),
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// How many messages went each way and how often each direction rekeyed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Transport messages sealed.
    pub sent: u64,
    /// Transport messages opened.
    pub received: u64,
    /// Times the sending key was replaced.
    pub rekeys_sent: u64,
    /// Times the receiving key was replaced.
    pub rekeys_received: u64,
}

/// A finished handshake's transport: seals plaintexts into frames, opens frames.
pub struct Transport {
    state: TransportState,
    rekey_every: u64,
    stats: TransportStats,
    dead: bool,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("rekey_every", &self.rekey_every)
            .field("stats", &self.stats)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// The transport of a finished handshake; rekeys each direction after every
    /// `rekey_every` messages (at least 1).
    pub fn new(hs: HandshakeState, rekey_every: u64) -> Result<Self, NoiseError> {
        let state = hs
            .into_transport_mode()
            .map_err(|e| NoiseError::Handshake(e.to_string()))?;
        Ok(Transport {
            state,
            rekey_every: rekey_every.max(1),
            stats: TransportStats::default(),
            dead: false,
        })
    }

    /// Counters of this transport.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Largest plaintext one message can carry.
    pub const MAX_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;

    /// Seals `plaintext` into one Noise message and appends it to `out` as a frame.
    pub fn seal_frame_into(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        if self.dead {
            return Err(SessionError::Dead);
        }
        let len = plaintext.len() + TAG_LEN;
        if plaintext.len() > Self::MAX_PLAINTEXT {
            return Err(NoiseError::Other(format!(
                "plaintext of {} bytes does not fit one Noise message (max {})",
                plaintext.len(),
                Self::MAX_PLAINTEXT
            ))
            .into());
        }
        let at = out.len();
        out.resize(at + FRAME_HEADER + len, 0);
        out[at..at + FRAME_HEADER].copy_from_slice(&(len as u16).to_be_bytes());
        let n = self
            .state
            .write_message(plaintext, &mut out[at + FRAME_HEADER..])
            .map_err(|e| {
                self.dead = true;
                SessionError::Noise(NoiseError::Other(e.to_string()))
            })?;
        debug_assert_eq!(n, len);
        self.stats.sent += 1;
        if self.stats.sent.is_multiple_of(self.rekey_every) {
            self.state.rekey_outgoing();
            self.stats.rekeys_sent += 1;
        }
        Ok(())
    }

    /// Seals `plaintext` into one frame.
    pub fn seal_frame(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SessionError> {
        let mut out = Vec::with_capacity(FRAME_HEADER + plaintext.len() + TAG_LEN);
        self.seal_frame_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens one Noise message (a frame's contents). Any failure kills the transport:
    /// this and every later call fail.
    pub fn open(&mut self, message: &[u8]) -> Result<Vec<u8>, SessionError> {
        let mut out = vec![0u8; message.len()];
        let n = self.open_into(message, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Like [`Transport::open`], into `out`; returns the plaintext's length. `out` must
    /// hold at least `message.len()` bytes: the AEAD then opens the message in place
    /// there (snow copies a message it cannot open in place once more).
    pub fn open_into(&mut self, message: &[u8], out: &mut [u8]) -> Result<usize, SessionError> {
        if self.dead {
            return Err(SessionError::Dead);
        }
        assert!(
            out.len() >= message.len(),
            "open_into needs room for the whole message"
        );
        match self.state.read_message(message, out) {
            Ok(n) => {
                self.stats.received += 1;
                if self.stats.received.is_multiple_of(self.rekey_every) {
                    self.state.rekey_incoming();
                    self.stats.rekeys_received += 1;
                }
                Ok(n)
            }
            Err(_) => {
                self.dead = true;
                Err(NoiseError::DecryptFailed.into())
            }
        }
    }
}

/// Frames a handshake message.
pub fn frame_handshake(message: &[u8]) -> Result<Vec<u8>, SessionError> {
    let mut out = Vec::with_capacity(FRAME_HEADER + message.len());
    encode_frame_into(message, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::frame::FrameDecoder;

    const CLIENT: [u8; 32] = [1; 32];
    const WORKER: [u8; 32] = [2; 32];

    fn public(secret: &[u8; 32]) -> [u8; 32] {
        curve25519_dalek::MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
    }

    /// A handshake with fixed ephemeral keys, so two runs derive the same keys.
    fn fixed_pair(rekey_every: u64) -> (Transport, Transport) {
        fixed_pair_in(CipherSuite::ChaChaPoly, rekey_every)
    }

    fn fixed_pair_in(suite: CipherSuite, rekey_every: u64) -> (Transport, Transport) {
        let mut i = builder(suite)
            .local_private_key(&CLIENT)
            .unwrap()
            .remote_public_key(&public(&WORKER))
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(&[3; 32])
            .build_initiator()
            .unwrap();
        let mut r = builder(suite)
            .local_private_key(&WORKER)
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(&[4; 32])
            .build_responder()
            .unwrap();
        let m1 = write_handshake(&mut i, b"open").unwrap();
        assert_eq!(read_handshake(&mut r, &m1).unwrap(), b"open");
        let m2 = write_handshake(&mut r, b"reply").unwrap();
        assert_eq!(read_handshake(&mut i, &m2).unwrap(), b"reply");
        (
            Transport::new(i, rekey_every).unwrap(),
            Transport::new(r, rekey_every).unwrap(),
        )
    }

    fn unframe(frame: &[u8]) -> Vec<u8> {
        let mut d = FrameDecoder::new();
        d.push(frame);
        d.next_frame().unwrap().unwrap()
    }

    #[test]
    fn rekeying_changes_the_keys_from_the_agreed_message_on() {
        for suite in CipherSuite::ALL {
            let (mut a_send, mut a_recv) = fixed_pair_in(suite, 3);
            let (mut b_send, _) = fixed_pair_in(suite, u64::MAX);
            let text = [0x5au8; 64];
            for n in 0..9u64 {
                let a = a_send.seal_frame(&text).unwrap();
                let b = b_send.seal_frame(&text).unwrap();
                // Same keys and nonces until the first rekey (after message 3), then not.
                assert_eq!(a == b, n < 3, "{suite} message {n}");
                assert_eq!(a_recv.open(&unframe(&a)).unwrap(), text);
            }
            assert_eq!(a_send.stats().rekeys_sent, 3);
            assert_eq!(a_recv.stats().rekeys_received, 3);
            assert_eq!(b_send.stats().rekeys_sent, 0);
        }
    }

    #[test]
    fn the_suites_seal_differently() {
        let (mut chacha, _) = fixed_pair_in(CipherSuite::ChaChaPoly, 10);
        let (mut aes, mut aes_recv) = fixed_pair_in(CipherSuite::AesGcm, 10);
        let text = [0x33u8; 100];
        let a = aes.seal_frame(&text).unwrap();
        assert_ne!(a, chacha.seal_frame(&text).unwrap());
        assert_eq!(aes_recv.open(&unframe(&a)).unwrap(), text);
    }

    #[test]
    fn ends_in_different_suites_fail_the_handshake() {
        let mut i = initiator(CipherSuite::AesGcm, &CLIENT, &public(&WORKER)).unwrap();
        let mut r = responder(CipherSuite::ChaChaPoly, &WORKER);
        let m1 = write_handshake(&mut i, b"open").unwrap();
        let err = read_handshake(&mut r, &m1).unwrap_err().to_string();
        assert!(err.contains("handshake failed: decrypt failed"), "{err}");
    }

    #[test]
    fn a_receiver_that_rekeys_on_another_schedule_cannot_read() {
        let (mut send, _) = fixed_pair(2);
        let (_, mut recv) = fixed_pair(u64::MAX);
        for _ in 0..2 {
            let f = send.seal_frame(b"x").unwrap();
            recv.open(&unframe(&f)).unwrap();
        }
        let f = send.seal_frame(b"x").unwrap();
        assert_eq!(
            recv.open(&unframe(&f)),
            Err(NoiseError::DecryptFailed.into())
        );
        assert_eq!(recv.open(&unframe(&f)), Err(SessionError::Dead));
    }

    #[test]
    fn wrong_static_key_fails_the_handshake() {
        let mut i = initiator(CipherSuite::ChaChaPoly, &CLIENT, &public(&[9; 32])).unwrap();
        let mut r = responder(CipherSuite::ChaChaPoly, &WORKER);
        let m1 = write_handshake(&mut i, b"open").unwrap();
        let err = read_handshake(&mut r, &m1).unwrap_err().to_string();
        assert!(err.contains("handshake failed: decrypt failed"), "{err}");
    }

    #[test]
    fn oversize_plaintext_is_refused() {
        let (mut send, _) = fixed_pair(10);
        let err = send
            .seal_frame(&vec![0; Transport::MAX_PLAINTEXT + 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit one Noise message"), "{err}");
        assert_eq!(
            send.seal_frame(&vec![0; Transport::MAX_PLAINTEXT])
                .unwrap()
                .len(),
            2 + MAX_NOISE_MESSAGE
        );
    }
}
