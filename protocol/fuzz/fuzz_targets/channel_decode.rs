//! Fuzz the decoders of outside bytes in `cocoon_protocol::channel`: a BoC received from
//! the other party as a signed semi-channel state, a message body, contract storage.
//! Nothing may panic; whatever decodes must re-encode to the same cell (same hash),
//! so what a party accepts is exactly what it would sign or submit.
#![no_main]

use cocoon_protocol::channel::{
    ChannelMessage, ChannelStorage, QuarantinedState, SignedSemiChannel,
};
use libfuzzer_sys::fuzz_target;
use tycho_types::boc::Boc;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = SignedSemiChannel::from_boc(data) {
        let again = st.to_cell().expect("decoded state re-encodes");
        let orig = Boc::decode(data).expect("decoded once");
        assert_eq!(again.repr_hash(), orig.repr_hash());
    }
    if let Ok(msg) = ChannelMessage::from_boc(data) {
        let again = msg.to_cell().expect("decoded message re-encodes");
        let orig = Boc::decode(data).expect("decoded once");
        assert_eq!(again.repr_hash(), orig.repr_hash());
    }
    if let Ok(cell) = Boc::decode(data) {
        if let Ok(st) = ChannelStorage::from_cell(&cell) {
            assert_eq!(
                st.to_cell().expect("re-encodes").repr_hash(),
                cell.repr_hash()
            );
        }
        if let Ok(q) = QuarantinedState::from_cell(&cell) {
            assert_eq!(
                q.to_cell().expect("re-encodes").repr_hash(),
                cell.repr_hash()
            );
        }
    }
});
