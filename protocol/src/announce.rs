//! Signed shard announcements: what a node serves (model, blocks), at what price, with
//! what capacity, and how to reach it. Encoding, signing and the rules that accept or
//! reject an announcement received from the network ([`verify_announcement`]).
//!
//! Wire form: protobuf `cocoon.announce.v1.SignedAnnouncement` (see
//! `protocol/proto/announce.proto`); the signature is ed25519 over
//! [`SIGNING_CONTEXT`] followed by the exact bytes of the encoded `Announcement`.

use libp2p_identity::PeerId;
use prost::Message;
use serde::Serialize;

use crate::identity::{NodeIdentity, peer_id_of, verify_signature};
use crate::proto;
use crate::session::CipherSuite;
use crate::units::{BlockRange, ModelId, NanoTon, Role, SeqNo, UnixMillis};

/// Domain separation for announcement signatures.
pub const SIGNING_CONTEXT: &[u8] = b"cocoon-announce-v1";

/// Gossipsub topic on which announcements are published.
pub const ANNOUNCE_TOPIC: &str = "cocoon/announce/1";

/// Most listen addresses an announcement may carry.
pub const MAX_LISTEN_ADDRS: usize = 32;
/// Longest listen address (binary multiaddr) accepted.
pub const MAX_ADDR_LEN: usize = 512;
/// Longest TON wallet address string accepted.
pub const MAX_WALLET_LEN: usize = 128;

/// Per-token prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct Prices {
    /// Price of one prompt (prefill) token.
    pub prompt: NanoTon,
    /// Price of one generated token.
    pub completion: NanoTon,
}

/// A decoded, verified announcement (or one about to be signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Announcement {
    /// ed25519 public key of the announcing node.
    #[serde(with = "hex_bytes")]
    pub node_key: [u8; 32],
    pub role: Role,
    /// The model served; `None` for nodes that serve none (relays, clients without one).
    pub model_id: Option<ModelId>,
    /// Number of blocks in the model.
    pub n_blocks: u32,
    /// Blocks served.
    pub blocks: BlockRange,
    pub prices: Prices,
    /// Measured throughput in tokens per second × 1000.
    pub throughput_milli_tps: u64,
    /// Free KV-cache capacity in tokens.
    pub free_kv_tokens: u64,
    /// X25519 static public key for end-to-end Noise sessions.
    #[serde(with = "hex_bytes")]
    pub noise_static_key: [u8; 32],
    /// TON wallet address; may be empty.
    pub ton_wallet: String,
    /// Listen addresses as binary multiaddrs.
    #[serde(skip)]
    pub listen_addrs: Vec<Vec<u8>>,
    pub seqno: SeqNo,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// Session cipher suites accepted, sorted, ChaChaPoly always among them.
    pub cipher_suites: Vec<CipherSuite>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

impl Announcement {
    /// The libp2p PeerId of the announcing node.
    pub fn peer_id(&self) -> Result<PeerId, crate::identity::InvalidNodeKey> {
        peer_id_of(&self.node_key)
    }

    fn to_proto(&self) -> proto::Announcement {
        proto::Announcement {
            node_key: self.node_key.to_vec(),
            role: match self.role {
                Role::Worker => proto::Role::Worker,
                Role::Client => proto::Role::Client,
                Role::Relay => proto::Role::Relay,
            } as i32,
            model_id: self.model_id.map(|m| m.0.to_vec()).unwrap_or_default(),
            n_blocks: self.n_blocks,
            block_start: self.blocks.start(),
            block_end: self.blocks.end(),
            price_prompt_nanoton: self.prices.prompt.0,
            price_completion_nanoton: self.prices.completion.0,
            throughput_milli_tps: self.throughput_milli_tps,
            free_kv_tokens: self.free_kv_tokens,
            noise_static_key: self.noise_static_key.to_vec(),
            ton_wallet: self.ton_wallet.clone(),
            listen_addrs: self.listen_addrs.clone(),
            seqno: self.seqno.0,
            issued_at_ms: self.issued_at.0,
            expires_at_ms: self.expires_at.0,
            cipher_suites: self
                .cipher_suites
                .iter()
                .map(|s| match s {
                    CipherSuite::ChaChaPoly => proto::CipherSuite::Chachapoly,
                    CipherSuite::AesGcm => proto::CipherSuite::Aesgcm,
                } as i32)
                .collect(),
        }
    }

    fn from_proto(p: proto::Announcement) -> Result<Self, Rejection> {
        let malformed = |what: &'static str| Rejection::Malformed(what);
        let node_key: [u8; 32] = p
            .node_key
            .try_into()
            .map_err(|_| malformed("node_key is not 32 bytes"))?;
        let role = match proto::Role::try_from(p.role) {
            Ok(proto::Role::Worker) => Role::Worker,
            Ok(proto::Role::Client) => Role::Client,
            Ok(proto::Role::Relay) => Role::Relay,
            _ => return Err(malformed("unknown role")),
        };
        let model_id = match p.model_id.len() {
            0 => None,
            32 => {
                let mut id = [0u8; 32];
                id.copy_from_slice(&p.model_id);
                Some(ModelId(id))
            }
            _ => return Err(malformed("model_id is not 32 bytes")),
        };
        let blocks = BlockRange::new(p.block_start, p.block_end).map_err(|_| {
            Rejection::BlockRangeReversed {
                start: p.block_start,
                end: p.block_end,
            }
        })?;
        let noise_static_key: [u8; 32] = p
            .noise_static_key
            .try_into()
            .map_err(|_| malformed("noise_static_key is not 32 bytes"))?;
        if p.ton_wallet.len() > MAX_WALLET_LEN {
            return Err(malformed("ton_wallet too long"));
        }
        if p.listen_addrs.len() > MAX_LISTEN_ADDRS
            || p.listen_addrs.iter().any(|a| a.len() > MAX_ADDR_LEN)
        {
            return Err(malformed("too many or too long listen addresses"));
        }
        // Unknown values are a newer node's suites: skip them.
        let mut cipher_suites: Vec<CipherSuite> = p
            .cipher_suites
            .iter()
            .filter_map(|&v| match proto::CipherSuite::try_from(v) {
                Ok(proto::CipherSuite::Chachapoly) => Some(CipherSuite::ChaChaPoly),
                Ok(proto::CipherSuite::Aesgcm) => Some(CipherSuite::AesGcm),
                Err(_) => None,
            })
            .chain([CipherSuite::ChaChaPoly])
            .collect();
        cipher_suites.sort();
        cipher_suites.dedup();
        Ok(Announcement {
            node_key,
            role,
            model_id,
            n_blocks: p.n_blocks,
            blocks,
            prices: Prices {
                prompt: NanoTon(p.price_prompt_nanoton),
                completion: NanoTon(p.price_completion_nanoton),
            },
            throughput_milli_tps: p.throughput_milli_tps,
            free_kv_tokens: p.free_kv_tokens,
            noise_static_key,
            ton_wallet: p.ton_wallet,
            listen_addrs: p.listen_addrs,
            seqno: SeqNo(p.seqno),
            issued_at: UnixMillis(p.issued_at_ms),
            expires_at: UnixMillis(p.expires_at_ms),
            cipher_suites,
        })
    }

    /// Encodes the announcement body (the bytes that are signed).
    pub fn encode_body(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }
}

/// Signs `announcement` with `identity` and returns the wire bytes. The announcement's
/// `node_key` must be the identity's public key, or receivers reject it.
pub fn sign_announcement(identity: &NodeIdentity, announcement: &Announcement) -> Vec<u8> {
    let body = announcement.encode_body();
    let signature = identity.sign(&signing_input(&body));
    proto::SignedAnnouncement {
        body,
        signature: signature.to_vec(),
    }
    .encode_to_vec()
}

fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(body);
    msg
}

/// Bounds on what a receiver accepts.
#[derive(Clone, Copy, Debug)]
pub struct VerifyPolicy {
    /// Largest encoded announcement accepted, in bytes.
    pub max_size: usize,
    /// Longest lifetime (`expires_at - now`) accepted, in ms.
    pub max_ttl_ms: u64,
    /// How far in the future `issued_at` may be (clock skew), in ms.
    pub max_clock_skew_ms: u64,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            max_size: 16 * 1024,
            max_ttl_ms: 15 * 60 * 1000,
            max_clock_skew_ms: 60 * 1000,
        }
    }
}

/// Why an announcement was refused. [`Rejection::rule`] names the rule that failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum Rejection {
    #[error("announcement is {size} bytes, more than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("announcement does not decode: {0}")]
    Malformed(&'static str),
    #[error("signature does not verify")]
    BadSignature,
    #[error("announcement expired at {expires_at} ms, now is {now} ms")]
    Expired { expires_at: u64, now: u64 },
    #[error(
        "announcement expires at {expires_at} ms, more than {max_ttl_ms} ms after now ({now} ms)"
    )]
    ExpiryTooFar {
        expires_at: u64,
        now: u64,
        max_ttl_ms: u64,
    },
    #[error("announcement issued at {issued_at} ms, in the future (now {now} ms)")]
    IssuedInFuture { issued_at: u64, now: u64 },
    #[error("block range {start}..{end} is reversed")]
    BlockRangeReversed { start: u32, end: u32 },
    #[error("block range {blocks} lies outside the model's {n_blocks} blocks")]
    BlockRangeOutsideModel { blocks: BlockRange, n_blocks: u32 },
    #[error("blocks {blocks} are announced without a model id")]
    BlocksWithoutModel { blocks: BlockRange },
    #[error("sequence number {got} is older than {last}, the last one seen from this node")]
    StaleSeqNo { got: SeqNo, last: SeqNo },
    #[error("sequence number {got} was already seen from this node")]
    DuplicateSeqNo { got: SeqNo },
}

/// What gossip should do with a message that carried a rejected announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Invalid: drop it and penalise whoever sent it.
    Reject,
    /// Not worth forwarding, but not evidence of misbehaviour.
    Ignore,
}

impl Rejection {
    /// The name of the rule that failed: `size`, `decode`, `signature`, `expiry`,
    /// `block_range` or `seqno`.
    pub fn rule(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "size",
            Rejection::Malformed(_) => "decode",
            Rejection::BadSignature => "signature",
            Rejection::Expired { .. }
            | Rejection::ExpiryTooFar { .. }
            | Rejection::IssuedInFuture { .. } => "expiry",
            Rejection::BlockRangeReversed { .. }
            | Rejection::BlockRangeOutsideModel { .. }
            | Rejection::BlocksWithoutModel { .. } => "block_range",
            Rejection::StaleSeqNo { .. } | Rejection::DuplicateSeqNo { .. } => "seqno",
        }
    }

    /// Whether the sender should be penalised. A repeat of the last announcement seen is
    /// normal gossip and only ignored; everything else is rejected.
    pub fn verdict(&self) -> Verdict {
        match self {
            Rejection::DuplicateSeqNo { .. } => Verdict::Ignore,
            _ => Verdict::Reject,
        }
    }
}

/// Decodes `bytes` and applies every rule, in order: size, decoding, signature, expiry
/// bounds, block range inside the model, and sequence number strictly newer than
/// `last_seen(peer)` (the last one accepted from that node, if any).
pub fn verify_announcement(
    bytes: &[u8],
    now: UnixMillis,
    policy: &VerifyPolicy,
    last_seen: impl FnOnce(&PeerId) -> Option<SeqNo>,
) -> Result<Announcement, Rejection> {
    if bytes.len() > policy.max_size {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            max: policy.max_size,
        });
    }
    let signed = proto::SignedAnnouncement::decode(bytes)
        .map_err(|_| Rejection::Malformed("not a SignedAnnouncement"))?;
    let signature: [u8; 64] = signed
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| Rejection::Malformed("signature is not 64 bytes"))?;
    let body = proto::Announcement::decode(signed.body.as_slice())
        .map_err(|_| Rejection::Malformed("body is not an Announcement"))?;
    let ann = Announcement::from_proto(body)?;
    let peer = ann.peer_id().map_err(|_| Rejection::BadSignature)?;
    if !verify_signature(&ann.node_key, &signing_input(&signed.body), &signature) {
        return Err(Rejection::BadSignature);
    }
    if ann.expires_at <= now {
        return Err(Rejection::Expired {
            expires_at: ann.expires_at.0,
            now: now.0,
        });
    }
    if ann.expires_at.saturating_sub(now) > policy.max_ttl_ms {
        return Err(Rejection::ExpiryTooFar {
            expires_at: ann.expires_at.0,
            now: now.0,
            max_ttl_ms: policy.max_ttl_ms,
        });
    }
    if ann.issued_at.saturating_sub(now) > policy.max_clock_skew_ms {
        return Err(Rejection::IssuedInFuture {
            issued_at: ann.issued_at.0,
            now: now.0,
        });
    }
    if !ann.blocks.is_empty() {
        if ann.model_id.is_none() {
            return Err(Rejection::BlocksWithoutModel { blocks: ann.blocks });
        }
        if !ann.blocks.fits_in(ann.n_blocks) {
            return Err(Rejection::BlockRangeOutsideModel {
                blocks: ann.blocks,
                n_blocks: ann.n_blocks,
            });
        }
    }
    if let Some(last) = last_seen(&peer) {
        if ann.seqno < last {
            return Err(Rejection::StaleSeqNo {
                got: ann.seqno,
                last,
            });
        }
        if ann.seqno == last {
            return Err(Rejection::DuplicateSeqNo { got: ann.seqno });
        }
    }
    Ok(ann)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn identity(n: u8) -> NodeIdentity {
        NodeIdentity::from_secrets(&[n; 32], &[n.wrapping_add(100); 32])
    }

    pub(crate) fn sample(id: &NodeIdentity, seqno: u64, now: UnixMillis) -> Announcement {
        Announcement {
            node_key: id.public_key(),
            role: Role::Worker,
            model_id: Some(ModelId([5; 32])),
            n_blocks: 30,
            blocks: BlockRange::new(0, 15).expect("ordered"),
            prices: Prices {
                prompt: NanoTon(10),
                completion: NanoTon(20),
            },
            throughput_milli_tps: 12_500,
            free_kv_tokens: 4096,
            noise_static_key: id.noise_public_key(),
            ton_wallet: String::new(),
            listen_addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x10, 0x00]],
            seqno: SeqNo(seqno),
            issued_at: now,
            expires_at: now.plus_ms(5 * 60 * 1000),
            cipher_suites: CipherSuite::offered(true),
        }
    }

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn cipher_suites_always_hold_chachapoly_and_skip_unknown_values() {
        let id = identity(3);
        let mut body = sample(&id, 1, NOW).to_proto();
        // Only AES-GCM listed, a future suite, and a repeat.
        body.cipher_suites = vec![1, 7, 1];
        let ann = Announcement::from_proto(body.clone()).unwrap();
        assert_eq!(ann.cipher_suites, CipherSuite::offered(true));
        // An older node lists nothing: ChaChaPoly only.
        body.cipher_suites.clear();
        let ann = Announcement::from_proto(body).unwrap();
        assert_eq!(ann.cipher_suites, CipherSuite::offered(false));
    }

    fn verify(
        bytes: &[u8],
        now: UnixMillis,
        last: Option<SeqNo>,
    ) -> Result<Announcement, Rejection> {
        verify_announcement(bytes, now, &VerifyPolicy::default(), |_| last)
    }

    #[test]
    fn a_signed_announcement_verifies() {
        let id = identity(1);
        let ann = sample(&id, 7, NOW);
        let got = verify(&sign_announcement(&id, &ann), NOW, Some(SeqNo(6))).expect("valid");
        assert_eq!(got, ann);
        assert_eq!(got.peer_id(), Ok(id.peer_id()));
    }

    #[test]
    fn bad_signature_is_rejected_by_the_signature_rule() {
        let id = identity(1);
        let mut bytes = sign_announcement(&id, &sample(&id, 7, NOW));
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // flips a bit of the signature
        let err = verify(&bytes, NOW, None).expect_err("forged");
        assert_eq!(err, Rejection::BadSignature);
        assert_eq!(err.rule(), "signature");

        // Signed by one key, claiming another's.
        let mut ann = sample(&id, 7, NOW);
        ann.node_key = identity(2).public_key();
        let err = verify(&sign_announcement(&id, &ann), NOW, None).expect_err("impostor");
        assert_eq!(err.rule(), "signature");
    }

    #[test]
    fn expired_and_too_far_expiries_are_rejected_by_the_expiry_rule() {
        let id = identity(1);
        let ann = sample(&id, 7, NOW);
        let bytes = sign_announcement(&id, &ann);
        let err = verify(&bytes, ann.expires_at, None).expect_err("expired");
        assert!(matches!(err, Rejection::Expired { .. }));
        assert_eq!(err.rule(), "expiry");

        let mut far = sample(&id, 7, NOW);
        far.expires_at = NOW.plus_ms(24 * 3600 * 1000);
        let err = verify(&sign_announcement(&id, &far), NOW, None).expect_err("too far");
        assert!(matches!(err, Rejection::ExpiryTooFar { .. }));
        assert_eq!(err.rule(), "expiry");

        let mut future = sample(&id, 7, NOW.plus_ms(10 * 60 * 1000));
        future.expires_at = NOW.plus_ms(11 * 60 * 1000);
        let err = verify(&sign_announcement(&id, &future), NOW, None).expect_err("future");
        assert!(matches!(err, Rejection::IssuedInFuture { .. }));
    }

    #[test]
    fn blocks_beyond_the_model_are_rejected_by_the_block_range_rule() {
        let id = identity(1);
        let mut ann = sample(&id, 7, NOW);
        ann.blocks = BlockRange::new(20, 31).expect("ordered");
        let err = verify(&sign_announcement(&id, &ann), NOW, None).expect_err("outside");
        assert!(matches!(
            err,
            Rejection::BlockRangeOutsideModel { n_blocks: 30, .. }
        ));
        assert_eq!(err.rule(), "block_range");

        let mut reversed = sample(&id, 7, NOW).to_proto();
        reversed.block_start = 9;
        reversed.block_end = 3;
        let body = reversed.encode_to_vec();
        let bytes = proto::SignedAnnouncement {
            signature: id.sign(&signing_input(&body)).to_vec(),
            body,
        }
        .encode_to_vec();
        let err = verify(&bytes, NOW, None).expect_err("reversed");
        assert_eq!(err.rule(), "block_range");
    }

    #[test]
    fn replayed_older_seqno_is_rejected_by_the_seqno_rule() {
        let id = identity(1);
        let bytes = sign_announcement(&id, &sample(&id, 5, NOW));
        let err = verify(&bytes, NOW, Some(SeqNo(6))).expect_err("replayed");
        assert_eq!(
            err,
            Rejection::StaleSeqNo {
                got: SeqNo(5),
                last: SeqNo(6)
            }
        );
        assert_eq!(err.rule(), "seqno");
        assert_eq!(err.verdict(), Verdict::Reject);
        let dup = verify(&bytes, NOW, Some(SeqNo(5))).expect_err("duplicate");
        assert_eq!(dup.verdict(), Verdict::Ignore);
    }

    #[test]
    fn oversized_and_garbage_input_is_rejected() {
        let err = verify(&vec![0u8; 20_000], NOW, None).expect_err("big");
        assert_eq!(err.rule(), "size");
        let err = verify(b"\xff\xff\xff", NOW, None).expect_err("garbage");
        assert_eq!(err.rule(), "decode");
    }

    fn arb_announcement() -> impl Strategy<Value = (u8, Announcement)> {
        (
            any::<u8>(),
            0u32..200,
            0u32..200,
            0u32..200,
            any::<[u64; 4]>(),
            "[a-zA-Z0-9_-]{0,48}",
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5),
            1u64..u64::MAX / 2,
            (
                0u64..600_000,
                prop_oneof![Just(Role::Worker), Just(Role::Client), Just(Role::Relay)],
                any::<bool>(),
            ),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(
                |(k, a, b, n, nums, wallet, addrs, seqno, (ttl, role, aes), model)| {
                    let id = identity(k);
                    let (s, e) = (a.min(b), a.max(b));
                    (
                        k,
                        Announcement {
                            node_key: id.public_key(),
                            role,
                            model_id: model.map(ModelId),
                            n_blocks: n,
                            blocks: BlockRange::new(s, e).expect("ordered"),
                            prices: Prices {
                                prompt: NanoTon(nums[0]),
                                completion: NanoTon(nums[1]),
                            },
                            throughput_milli_tps: nums[2],
                            free_kv_tokens: nums[3],
                            noise_static_key: id.noise_public_key(),
                            ton_wallet: wallet,
                            listen_addrs: addrs,
                            seqno: SeqNo(seqno),
                            issued_at: NOW,
                            expires_at: NOW.plus_ms(ttl + 1),
                            cipher_suites: CipherSuite::offered(aes),
                        },
                    )
                },
            )
    }

    proptest! {
        #[test]
        fn codec_round_trips((k, ann) in arb_announcement()) {
            let body = ann.encode_body();
            let back = Announcement::from_proto(proto::Announcement::decode(body.as_slice()).expect("decodes"));
            prop_assert_eq!(back, Ok(ann.clone()));
            // Signed by its own key, it verifies exactly when its block range fits.
            let bytes = sign_announcement(&identity(k), &ann);
            let res = verify(&bytes, NOW, None);
            let fits = ann.blocks.is_empty() || (ann.model_id.is_some() && ann.blocks.fits_in(ann.n_blocks));
            prop_assert_eq!(res.is_ok(), fits, "{:?}", res);
            if let Ok(got) = res { prop_assert_eq!(got, ann); }
        }

        #[test]
        fn any_single_byte_flip_is_rejected((k, ann) in arb_announcement(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = sign_announcement(&identity(k), &ann);
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            // Either it no longer decodes/verifies, or the flip hit an encoding detail that
            // decodes to the very same signed content (never to different content).
            if let Ok(got) = verify(&bytes, NOW, None) { prop_assert_eq!(got, ann); }
        }

        #[test]
        fn verify_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = verify(&bytes, NOW, None);
        }
    }
}
