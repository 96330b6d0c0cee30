//! Fuzz a payee's rules for a peer's channel requests (`cocoon_protocol::channel::
//! acceptance`): the bytes of an open notice or a close proposal as they arrive on
//! `/cocoon/channel/1`, decoded and checked. Nothing may panic; a refusal always names
//! a rule; an open that passes is one whose storage names the payee and the requester.
#![no_main]

use cocoon_protocol::channel::acceptance::{Payee, check_close, check_open};
use cocoon_protocol::channel::{ChannelId, CloseBody, NanoTon, SeqNo, StdAddress};
use cocoon_protocol::identity::peer_id_of;
use cocoon_protocol::proto::channel::{CloseProposal, OpenNotice};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // The payee is fixed; the requester's key is the first 32 bytes when they are one.
    let payee_key = [9u8; 32];
    let payouts = StdAddress {
        workchain: 0,
        account: [3; 32],
    };
    let requester_key: [u8; 32] = data
        .get(..32)
        .and_then(|k| k.try_into().ok())
        .unwrap_or([7; 32]);
    let Ok(requester) = peer_id_of(&requester_key) else {
        return;
    };
    let body = data.get(32..).unwrap_or_default();
    if let Ok(n) = OpenNotice::decode(body) {
        let payee = Payee {
            key: &payee_key,
            payouts: &payouts,
            requester: &requester,
        };
        match check_open(&n, payee) {
            Ok(open) => {
                assert_eq!(open.storage.key_b, payee_key);
                assert_eq!(open.storage.key_a, requester_key);
                assert_eq!(open.storage.payment.dest_b, payouts);
            }
            Err(refusal) => assert!(!refusal.rule().is_empty()),
        }
    }
    if let Ok(c) = CloseProposal::decode(body) {
        let mine = CloseBody {
            channel_id: ChannelId(1),
            balance_a: NanoTon(900),
            balance_b: NanoTon(100),
            seqno_a: SeqNo(4),
            seqno_b: SeqNo(0),
        };
        let party = requester.to_string();
        if check_close(&c, &requester, &party, &mine).is_ok() {
            assert_eq!(c.balance_b_nanoton, 100);
        }
    }
});
