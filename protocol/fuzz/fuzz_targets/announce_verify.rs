//! Fuzzes announcement decoding and verification with arbitrary bytes, arbitrary
//! clocks and arbitrary last-seen sequence numbers: it must never panic, and anything
//! it accepts must re-encode to a body that verifies the same way.
#![no_main]

use cocoon_protocol::announce::{VerifyPolicy, verify_announcement};
use cocoon_protocol::units::{SeqNo, UnixMillis};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let now = UnixMillis(u64::from_le_bytes(data[..8].try_into().expect("8 bytes")));
    let last = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let last = (last != 0).then_some(SeqNo(last));
    let bytes = &data[16..];
    if let Ok(ann) = verify_announcement(bytes, now, &VerifyPolicy::default(), |_| last) {
        assert!(ann.expires_at > now);
        assert!(last.is_none_or(|l| ann.seqno > l));
        assert!(ann.blocks.is_empty() || ann.blocks.fits_in(ann.n_blocks));
        assert!(ann.peer_id().is_ok());
    }
});
