//! Fuzz what `cocoon ton-local`'s `sendBoc` does with the bytes it is given: decode the
//! BoC and apply it as an external message to a chain holding a deployed, funded wallet
//! v4r2 (the real code, from the setup cache). Nothing may panic, whatever the bytes;
//! the chain keeps serving (a getter still runs) after each message.
#![no_main]

use std::sync::{Mutex, OnceLock};

use cocoon_ton::local_chain::{InternalMessage, LocalChain, load_ton_config, load_wallet_code};
use cocoon_ton::wallet::WalletV4;
use libfuzzer_sys::fuzz_target;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::models::StdAddr;

const NOW: u32 = 1_750_000_000;

struct World {
    chain: LocalChain,
    wallet: StdAddr,
}

fn world() -> &'static Mutex<World> {
    static W: OnceLock<Mutex<World>> = OnceLock::new();
    W.get_or_init(|| {
        let code = load_wallet_code().expect("wallet code (run scripts/setup)");
        let key = ed25519_key();
        let wallet = WalletV4::new(code, key);
        let addr = wallet.address().expect("address");
        let mut chain = LocalChain::new(load_ton_config(NOW).expect("config"), NOW);
        chain
            .send_internal(InternalMessage {
                src: StdAddr::new(-1, HashBytes([0xfa; 32])),
                dst: addr.clone(),
                value: 1_000_000_000_000,
                bounce: false,
                body: Cell::default(),
                init: None,
            })
            .expect("fund");
        let deploy = wallet
            .external_message(0, u32::MAX, &[], true)
            .expect("deploy message");
        chain.send_external_message(deploy).expect("deploy");
        Mutex::new(World {
            chain,
            wallet: addr,
        })
    })
}

fn ed25519_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Boc::decode(data) else {
        return;
    };
    let Ok(mut w) = world().lock() else {
        return;
    };
    let _ = w.chain.send_external_message(msg);
    let wallet = w.wallet.clone();
    let seqno = w
        .chain
        .run_getter(&wallet, "seqno", Vec::new())
        .expect("the wallet's getter still runs");
    assert!(seqno.is_some(), "the wallet is still there");
});
