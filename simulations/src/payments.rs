//! Payment channels between clients and workers, driven through the protocol's own
//! `Payer` and `Payee`: the worker authorises tokens within its credit window, the client
//! counts what it received and signs a new cumulative state once it owes enough, and the
//! worker verifies and accepts it. One channel per (client, worker) pair, opened at first
//! use.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use cocoon_protocol::channel::{
    ChannelError, ChannelId, ChannelParams, ClosingConfig, NanoTon, Payee, Payer, Price,
    SemiChannelBody, SeqNo, Side, Usage,
};
use ed25519_dalek::SigningKey;

use crate::scenario::PaymentsCfg;

struct Channel {
    payer: Payer,
    payee: Payee,
}

/// Totals for the summary and the conservation check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaymentTotals {
    pub channels: u64,
    /// Signed states sent by clients and accepted by workers.
    pub states: u64,
    /// Sum over channels of the client's latest signed `sent`.
    pub paid_by_clients: u128,
    /// Sum over channels of what the worker accepted.
    pub earned_by_workers: u128,
    /// Sum over channels of the price of what clients recorded as served.
    pub owed_for_served: u128,
}

/// Whether the worker serves the tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorisation {
    Served,
    /// Payments lag the worker's credit window even after the client paid what it owed.
    Refused,
}

/// Every channel of the run.
pub struct ChannelBook {
    cfg: PaymentsCfg,
    channels: BTreeMap<(u32, u32), Channel>,
    states: u64,
}

impl ChannelBook {
    pub fn new(cfg: PaymentsCfg) -> Self {
        ChannelBook {
            cfg,
            channels: BTreeMap::new(),
            states: 0,
        }
    }

    fn channel(
        &mut self,
        client: u32,
        worker: u32,
        keys: impl FnOnce() -> (SigningKey, SigningKey),
        price: Price,
    ) -> anyhow::Result<&mut Channel> {
        if !self.channels.contains_key(&(client, worker)) {
            let keys = keys();
            let keys = (&keys.0, &keys.1);
            let params = ChannelParams {
                channel_id: ChannelId((u128::from(client) << 64) | u128::from(worker)),
                key_a: keys.0.verifying_key(),
                key_b: keys.1.verifying_key(),
                deposit_a: NanoTon(u128::from(self.cfg.deposit)),
                deposit_b: NanoTon(0),
                closing: ClosingConfig {
                    quarantine_duration: 3600,
                    misbehavior_fine: NanoTon(0),
                    conditional_close_duration: 1800,
                },
            };
            let zero = SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO);
            let payer = Payer::new(
                params.clone(),
                Side::A,
                keys.0.clone(),
                price,
                NanoTon(u128::from(self.cfg.deposit)),
                zero,
            )
            .context("opening the client's side of a channel")?;
            let payee = Payee::new(
                params,
                Side::B,
                keys.1.clone(),
                price,
                NanoTon(u128::from(self.cfg.credit_window)),
                None,
            )
            .context("opening the worker's side of a channel")?;
            self.channels
                .insert((client, worker), Channel { payer, payee });
        }
        Ok(self
            .channels
            .get_mut(&(client, worker))
            .expect("inserted above"))
    }

    /// The worker asks to serve `usage` to the client; when payments lag its credit
    /// window the client pays what it owes and the worker asks once more.
    pub fn authorise(
        &mut self,
        client: u32,
        worker: u32,
        keys: impl FnOnce() -> (SigningKey, SigningKey),
        price: Price,
        usage: Usage,
    ) -> anyhow::Result<Authorisation> {
        let ch = self.channel(client, worker, keys, price)?;
        match ch.payee.authorize(usage) {
            Ok(_) => return Ok(Authorisation::Served),
            Err(ChannelError::PaymentLagging { .. }) => {}
            Err(e) => return Err(anyhow!(e).context("worker authorising tokens")),
        }
        self.settle(client, worker)?;
        let ch = self
            .channels
            .get_mut(&(client, worker))
            .expect("opened above");
        match ch.payee.authorize(usage) {
            Ok(_) => Ok(Authorisation::Served),
            Err(ChannelError::PaymentLagging { .. }) => Ok(Authorisation::Refused),
            Err(e) => Err(anyhow!(e).context("worker authorising tokens")),
        }
    }

    /// The client received `usage` from the worker (honestly served): it counts it, and
    /// pays once it owes at least the threshold.
    pub fn record_served(&mut self, client: u32, worker: u32, usage: Usage) -> anyhow::Result<()> {
        let threshold = NanoTon(u128::from(self.cfg.pay_threshold));
        let ch = self
            .channels
            .get_mut(&(client, worker))
            .context("tokens served on a channel never opened")?;
        ch.payer
            .record_served(usage)
            .context("client counting served tokens")?;
        let owed = ch.payer.owed()?;
        if owed.0 - ch.payer.latest().sent.0 >= threshold.0 {
            self.settle(client, worker)?;
        }
        Ok(())
    }

    /// The client signs a state paying everything owed, the worker verifies and keeps it.
    pub fn settle(&mut self, client: u32, worker: u32) -> anyhow::Result<()> {
        let ch = self
            .channels
            .get_mut(&(client, worker))
            .context("settling a channel never opened")?;
        let owed = ch.payer.owed()?;
        if owed == ch.payer.latest().sent {
            return Ok(());
        }
        let state = ch.payer.pay_owed().context("client signing a payment")?;
        ch.payee
            .accept_payment(state)
            .context("worker accepting a payment")?;
        self.states += 1;
        Ok(())
    }

    /// Settles every channel (in key order) at the end of the run.
    pub fn settle_all(&mut self) -> anyhow::Result<()> {
        let keys: Vec<(u32, u32)> = self.channels.keys().copied().collect();
        for (c, w) in keys {
            self.settle(c, w)?;
        }
        Ok(())
    }

    /// What each worker earned (accepted payments), by worker index.
    pub fn earnings_by_worker(&self) -> BTreeMap<u32, u128> {
        let mut out = BTreeMap::new();
        for ((_, w), ch) in &self.channels {
            *out.entry(*w).or_insert(0) += ch.payee.paid().0;
        }
        out
    }

    pub fn totals(&self) -> anyhow::Result<PaymentTotals> {
        let mut t = PaymentTotals {
            channels: self.channels.len() as u64,
            states: self.states,
            ..PaymentTotals::default()
        };
        for ch in self.channels.values() {
            t.paid_by_clients += ch.payer.latest().sent.0;
            t.earned_by_workers += ch.payee.paid().0;
            t.owed_for_served += ch.payer.owed()?.0;
        }
        Ok(t)
    }
}

/// The channel price of an announced per-token price pair.
pub fn price_of(prompt: u64, completion: u64) -> Price {
    Price {
        per_prompt_token: NanoTon(u128::from(prompt)),
        per_completion_token: NanoTon(u128::from(completion)),
    }
}
