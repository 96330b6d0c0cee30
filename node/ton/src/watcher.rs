//! The watcher: follows channels on chain through the [`TonClient`] and, when the other
//! side has started an uncooperative close with a state older than the newest one in
//! the [`ChannelStore`], challenges it before the quarantine ends (fining the
//! cheater); once both windows have passed it finishes the close. The decision is
//! `cocoon_protocol::channel::judge_quarantine` (sans-IO); this module only reads the
//! chain, builds the message and sends it through the node's wallet.
//!
//! Time is the chain's (`getMasterchainInfo`'s `now` where the server gives it, as
//! `cocoon ton-local` does), else the system clock.

use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::channel::keys::verifying_key;
use cocoon_protocol::channel::{
    ChannelError, ChannelMessage, ChannelParams, NanoTon, Payee, Price, Side, WatchAction,
};
use ed25519_dalek::SigningKey;
use thiserror::Error;
use tycho_types::models::StdAddr;

use crate::address::raw;
use crate::channel_ops::DEFAULT_GAS_MONEY;
use crate::client::{ClientError, TonClient, channel_state};
use crate::onchain::{OnChainError, chain_now, send_channel_message};
use crate::store::{ChannelStore, StoreError};
use crate::wallet::WalletV4;

/// A watcher failure.
#[derive(Debug, Error)]
pub enum WatcherError {
    /// The API failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The channel refuses what we hold (bad keys, fine above a deposit...).
    #[error("channel rule `{rule}`: {0}", rule = .0.rule())]
    Channel(#[from] ChannelError),
    /// Sending through the wallet failed.
    #[error(transparent)]
    OnChain(#[from] OnChainError),
    /// A key on chain is not a valid ed25519 point.
    #[error("channel {0}: key on chain is not a valid ed25519 key")]
    BadKey(String),
    /// Our wallet's key is not our side's key in the channel.
    #[error("channel {0}: our key is not the channel's key for our side")]
    NotOurChannel(String),
}

/// What one look at a channel found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// No contract at that address.
    NotDeployed,
    /// Open (or not inited): nothing to do.
    Open,
    /// No record of this channel in the store: not ours to guard.
    NotOurs,
    /// A close is under way; nothing to do before `until`.
    Waiting {
        /// Unix time of the next window.
        until: u32,
    },
    /// We sent a challenge with our newest state (seqno, sent of the other side's).
    Challenged {
        /// The seqno of the state we challenged with.
        seqno: u64,
        /// Its `sent`.
        sent: u128,
    },
    /// We sent `finish_uncooperative_close`.
    Finished,
    /// The channel is closed (no balance left in it).
    Closed,
}

/// Guards the channels of one node.
pub struct Watcher {
    client: TonClient,
    wallet: WalletV4,
    channel_key: SigningKey,
    store: Arc<ChannelStore>,
    gas: u128,
}

impl Watcher {
    /// A watcher signing channel messages with `channel_key` (the node's key in its
    /// channels) and sending them through `wallet`, which pays the gas.
    pub fn new(
        client: TonClient,
        wallet: WalletV4,
        channel_key: SigningKey,
        store: Arc<ChannelStore>,
    ) -> Self {
        Self {
            client,
            wallet,
            channel_key,
            store,
            gas: DEFAULT_GAS_MONEY,
        }
    }

    /// Looks at `channel` once and acts if needed.
    pub async fn check(&self, channel: &StdAddr) -> Result<WatchOutcome, WatcherError> {
        let Some(data) = self.client.channel_data(channel).await? else {
            return Ok(WatchOutcome::NotDeployed);
        };
        let closing_states = [
            channel_state::CLOSURE_STARTED,
            channel_state::SETTLING_CONDITIONALS,
            channel_state::AWAITING_FINALIZATION,
        ];
        if !closing_states.contains(&data.state) {
            if data.state == channel_state::UNINITED
                && data.balance_a.0 == 0
                && data.balance_b.0 == 0
                && data.committed_seqnos != (0, 0)
            {
                return Ok(WatchOutcome::Closed);
            }
            return Ok(WatchOutcome::Open);
        }
        let Some(q) = data.quarantine.clone() else {
            return Ok(WatchOutcome::Open);
        };
        let Some(record) = self.store.load(data.channel_id)? else {
            return Ok(WatchOutcome::NotOurs);
        };
        let name = raw(channel);
        let key = |b: &[u8; 32]| verifying_key(b).map_err(|_| WatcherError::BadKey(name.clone()));
        let params = ChannelParams {
            channel_id: data.channel_id,
            key_a: key(&data.key_a)?,
            key_b: key(&data.key_b)?,
            deposit_a: data.balance_a,
            deposit_b: data.balance_b,
            closing: data.closing,
        };
        let us = if record.we_are_a { Side::A } else { Side::B };
        if *params.key(us) != self.channel_key.verifying_key() {
            return Err(WatcherError::NotOurChannel(name));
        }
        // Only a payee holds the other side's signed states; a payer's record is its own.
        let best = match record.role {
            crate::store::Role::Payee => record.state()?,
            crate::store::Role::Payer => None,
        };
        let zero = Price {
            per_prompt_token: NanoTon(0),
            per_completion_token: NanoTon(0),
        };
        let payee = Payee::new(
            params,
            us,
            self.channel_key.clone(),
            zero,
            NanoTon(0),
            best.clone(),
        )?;
        let now = chain_now(&self.client).await?;
        match payee.watch(&q, now) {
            WatchAction::WaitUntil { at } => Ok(WatchOutcome::Waiting { until: at }),
            WatchAction::Challenge { .. } => {
                let msg = ChannelMessage::ChallengeQuarantinedState(payee.challenge()?);
                send_channel_message(&self.client, &self.wallet, channel, &msg, self.gas).await?;
                let body = best
                    .map(|s| s.state.body)
                    .unwrap_or_else(|| payee.paid_body());
                tracing::info!(channel = %name, seqno = body.seqno.0, "challenged a stale uncooperative close");
                Ok(WatchOutcome::Challenged {
                    seqno: body.seqno.0,
                    sent: body.sent.0,
                })
            }
            WatchAction::Finish => {
                let msg = ChannelMessage::FinishUncooperativeClose;
                send_channel_message(&self.client, &self.wallet, channel, &msg, self.gas).await?;
                tracing::info!(channel = %name, "finished an uncooperative close");
                Ok(WatchOutcome::Finished)
            }
        }
    }

    /// Looks at every channel in `channels()` each `every`, until `shutdown` turns
    /// true. Errors on one channel are logged and do not stop the others.
    pub async fn run<F>(
        &self,
        mut channels: F,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) where
        F: FnMut() -> Vec<StdAddr>,
    {
        loop {
            for ch in channels() {
                match self.check(&ch).await {
                    Ok(WatchOutcome::Challenged { seqno, .. }) => {
                        tracing::warn!(channel = %raw(&ch), seqno, "stale close challenged")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(channel = %raw(&ch), "watcher: {e}"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
