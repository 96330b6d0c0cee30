//! Acting on chain through the node's wallet and a [`TonClient`]: sending wallet
//! transfers (deploying the wallet with its first), reading the chain's time, opening a
//! channel in one transfer (deploy + top-up + init), and sending any channel message
//! (cooperative close, uncooperative close, challenge, finish). What `cocoon wallet`,
//! `cocoon channel open/close` and the watcher call.

use cocoon_protocol::channel::{
    ChannelError, ChannelMessage, ChannelStorage, InitBody, LayoutError, NanoTon, OneSigned, Side,
};
use ed25519_dalek::SigningKey;
use thiserror::Error;
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

use crate::channel_ops::{ChannelOpsError, channel_message, deploy_and_top_up};
use crate::client::{ClientError, TonClient};
use crate::wallet::{Transfer, WalletError, WalletV4};

/// Seconds a wallet transfer stays valid.
pub const TRANSFER_TTL: u32 = 300;

/// A failure to act on chain.
#[derive(Debug, Error)]
pub enum OnChainError {
    /// The API failed (or refused the message).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Building a channel message failed.
    #[error(transparent)]
    Ops(#[from] ChannelOpsError),
    /// The wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// A channel rule refused (e.g. signing).
    #[error("channel rule `{rule}`: {0}", rule = .0.rule())]
    Channel(#[from] ChannelError),
    /// A channel layout failed to encode or sign.
    #[error("channel layout: {0}")]
    Layout(#[from] LayoutError),
    /// The channel key given is not side A's key in the storage.
    #[error("the channel key is not side A's key of this channel")]
    NotSideA,
}

/// The chain's time: the server's `now` if it gives one (`cocoon ton-local` does), else
/// the system clock.
pub async fn chain_now(client: &TonClient) -> Result<u32, ClientError> {
    let (_, now) = client.get_masterchain_info().await?;
    Ok(now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }))
}

/// Sends `transfers` (at most 4) from `wallet`, valid until `now + TRANSFER_TTL`,
/// deploying the wallet with them if it is not active yet. Returns the seqno used.
pub async fn send_from_wallet(
    client: &TonClient,
    wallet: &WalletV4,
    transfers: &[Transfer],
    now: u32,
) -> Result<u32, OnChainError> {
    let addr = wallet.address()?;
    let info = client.get_address_information(&addr).await?;
    let deploy = info.state != "active";
    let seqno = if deploy {
        0
    } else {
        client.wallet_seqno(&addr).await?
    };
    let boc = wallet.external_boc(seqno, now.saturating_add(TRANSFER_TTL), transfers, deploy)?;
    client.send_boc(&boc).await?;
    Ok(seqno)
}

/// Sends one channel message to `channel` from `wallet`, with `gas` nanotons.
pub async fn send_channel_message(
    client: &TonClient,
    wallet: &WalletV4,
    channel: &StdAddr,
    msg: &ChannelMessage,
    gas: u128,
) -> Result<u32, OnChainError> {
    let t = channel_message(channel, msg, gas)?;
    let now = chain_now(client).await?;
    send_from_wallet(client, wallet, &[t], now).await
}

/// Opens a channel where `channel_key` is side A's key and B deposits nothing (the
/// client paying a worker; the storage's fine must then be 0): one transfer from
/// `wallet` carries the deploy with A's top-up of `deposit` and the init signed with
/// `channel_key` (delivered in that order). The channel key may be the wallet's own or
/// another (a node signs channel states with its identity key). Returns the channel's
/// address.
pub async fn open_channel(
    client: &TonClient,
    wallet: &WalletV4,
    channel_key: &SigningKey,
    channel_code: Cell,
    storage: &ChannelStorage,
    deposit: NanoTon,
    gas: u128,
) -> Result<StdAddr, OnChainError> {
    if storage.key_a != channel_key.verifying_key().to_bytes() {
        return Err(OnChainError::NotSideA);
    }
    let (addr, deploy) = deploy_and_top_up(channel_code, storage, Side::A, deposit, gas)?;
    let init = ChannelMessage::Init(OneSigned::sign(
        Side::A,
        channel_key,
        InitBody {
            channel_id: storage.channel_id,
            balance_a: deposit,
            balance_b: NanoTon(0),
        },
    )?);
    let init = channel_message(&addr, &init, gas)?;
    let now = chain_now(client).await?;
    send_from_wallet(client, wallet, &[deploy, init], now).await?;
    Ok(addr)
}
