//! Payment-channel operations as wallet transfers: the channel's state init and address
//! from its initial storage, deploy-with-top-up, top-up, and any signed channel message
//! (init, close, start/challenge/finish uncooperative close) carried by an internal
//! message from the sender's wallet, as tonweb's payment-channel flow does.

use cocoon_protocol::channel::{ChannelMessage, ChannelStorage, LayoutError, NanoTon, Side};
use thiserror::Error;
use tycho_types::cell::CellBuilder;
use tycho_types::dict::Dict;
use tycho_types::models::{StateInit, StdAddr};

use crate::wallet::Transfer;

/// Gas money attached to a channel message by default (0.1 TON; the contract returns
/// what it does not use to `excess` only on close, so keep this small).
pub const DEFAULT_GAS_MONEY: u128 = 100_000_000;

/// A channel message that could not be built.
#[derive(Debug, Error)]
pub enum ChannelOpsError {
    /// A channel layout failed to encode.
    #[error("channel layout: {0}")]
    Layout(#[from] LayoutError),
    /// A cell failed to build.
    #[error("cell error: {0}")]
    Cell(#[from] tycho_types::error::Error),
}

type Res<T> = Result<T, ChannelOpsError>;

/// The channel's state init: the contract code and its initial storage.
pub fn channel_state_init(
    code: tycho_types::cell::Cell,
    storage: &ChannelStorage,
) -> Res<StateInit> {
    Ok(StateInit {
        split_depth: None,
        special: None,
        code: Some(code),
        data: Some(storage.to_cell()?),
        libraries: Dict::new(),
    })
}

/// The basechain address a state init deploys to.
pub fn address_of(init: &StateInit) -> Res<StdAddr> {
    Ok(StdAddr::new(0, *CellBuilder::build_from(init)?.repr_hash()))
}

fn top_up_message(side: Side, amount: NanoTon) -> ChannelMessage {
    match side {
        Side::A => ChannelMessage::TopUp {
            add_a: amount,
            add_b: NanoTon(0),
        },
        Side::B => ChannelMessage::TopUp {
            add_a: NanoTon(0),
            add_b: amount,
        },
    }
}

/// Deploys the channel and tops up `side` by `amount` in one message (value
/// `amount + gas`); returns the channel's address and the transfer for the wallet.
pub fn deploy_and_top_up(
    code: tycho_types::cell::Cell,
    storage: &ChannelStorage,
    side: Side,
    amount: NanoTon,
    gas: u128,
) -> Res<(StdAddr, Transfer)> {
    let init = channel_state_init(code, storage)?;
    let addr = address_of(&init)?;
    let body = top_up_message(side, amount).to_cell()?;
    let t = Transfer::new(addr.clone(), amount.0.saturating_add(gas), false)
        .with_body(body)
        .with_init(init);
    Ok((addr, t))
}

/// Tops up `side` of a deployed (not yet inited) channel by `amount`.
pub fn top_up(channel: &StdAddr, side: Side, amount: NanoTon, gas: u128) -> Res<Transfer> {
    let body = top_up_message(side, amount).to_cell()?;
    Ok(Transfer::new(channel.clone(), amount.0.saturating_add(gas), true).with_body(body))
}

/// Any channel message, carried with `gas` nanotons.
pub fn channel_message(channel: &StdAddr, msg: &ChannelMessage, gas: u128) -> Res<Transfer> {
    Ok(Transfer::new(channel.clone(), gas, true).with_body(msg.to_cell()?))
}
