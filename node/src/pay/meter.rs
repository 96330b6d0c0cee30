//! Per-token metering of inference sessions over the node's payment channels: a worker's
//! credit check, charge and acceptance of payments ([`PayeeMeter`]); a client's payment
//! after each result ([`PayerMeter`]). The rules are `cocoon_protocol::channel`'s; this
//! module keeps one meter per channel (sessions sharing a channel share it) and commits
//! every change to the channel store before it is acted on: the worker's count before a
//! result goes out, an accepted state before more is served against it, the client's new
//! state before it is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use cocoon_protocol::channel::metering::default_credit_window;
use cocoon_protocol::channel::{
    Accepted, ChannelError, ChannelParams, NanoTon, Payee, Payer, Price, Side, SignedSemiChannel,
    Usage,
};
use cocoon_protocol::session::PaymentTerms;
use cocoon_ton::store::{ChannelRecord, ChannelStore, Role};
use ed25519_dalek::SigningKey;

/// A meter shared by every session over one channel.
pub type Shared<T> = Arc<Mutex<T>>;

/// The worker's side of one channel.
pub struct PayeeMeter {
    channel_id: u128,
    payee: Payee,
    price: Price,
    window: NanoTon,
    store: Arc<ChannelStore>,
}

impl PayeeMeter {
    /// The terms sessions over this channel are served on.
    pub fn terms(&self) -> anyhow::Result<PaymentTerms> {
        let nano = |v: NanoTon| u64::try_from(v.0).context("a price or window beyond u64");
        Ok(PaymentTerms {
            price_prompt_nanoton: nano(self.price.per_prompt_token)?,
            price_completion_nanoton: nano(self.price.per_completion_token)?,
            credit_window_nanoton: nano(self.window)?,
        })
    }

    /// Whether `usage` more can be served now (rule `credit-window`), counting nothing.
    pub fn check(&self, usage: Usage) -> Result<NanoTon, ChannelError> {
        self.payee.check_authorize(usage)
    }

    /// Counts `usage` as served and commits the count; only then may the result go out.
    /// Returns the channel's cumulative cost.
    pub fn charge(&mut self, usage: Usage) -> anyhow::Result<NanoTon> {
        let mut next = self.payee.clone();
        let cost = next.authorize(usage)?;
        self.store.commit(&payee_record(self.channel_id, &next)?)?;
        self.payee = next;
        Ok(cost)
    }

    /// Verifies a payment (a signed payer state as a BoC) and commits it.
    pub fn accept(&mut self, state_boc: &[u8]) -> anyhow::Result<Accepted> {
        let state = SignedSemiChannel::from_boc(state_boc)
            .map_err(|e| anyhow::anyhow!("payment state does not decode: {e}"))?;
        if let Some(resend) = self.payee.resend_of_newest(&state) {
            return Ok(resend);
        }
        let mut next = self.payee.clone();
        let accepted = next.accept_payment(state)?;
        if accepted.increase.0 > 0 {
            self.store.commit(&payee_record(self.channel_id, &next)?)?;
        }
        self.payee = next;
        Ok(accepted)
    }

    /// Cumulative amount paid.
    pub fn paid(&self) -> NanoTon {
        self.payee.paid()
    }
}

fn payee_record(channel_id: u128, payee: &Payee) -> anyhow::Result<ChannelRecord> {
    let served = payee.served();
    let rec = match payee.best_state() {
        Some(state) => ChannelRecord::new(Role::Payee, Side::B, state, served)?,
        None => ChannelRecord {
            channel_id,
            role: Role::Payee,
            we_are_a: false,
            seqno: 0,
            sent: 0,
            state_boc: Vec::new(),
            prompt_tokens: served.prompt_tokens,
            completion_tokens: served.completion_tokens,
        },
    };
    Ok(rec)
}

/// The client's side of one channel.
pub struct PayerMeter {
    payer: Payer,
    price: Price,
    store: Arc<ChannelStore>,
    latest_boc: Vec<u8>,
}

impl PayerMeter {
    /// The newest state signed, to resend when a session opens (none before the first
    /// payment).
    pub fn latest_state(&self) -> Option<&[u8]> {
        (!self.latest_boc.is_empty()).then_some(self.latest_boc.as_slice())
    }

    /// Counts `usage` received and signs a state paying everything owed, committed
    /// before it is returned for sending.
    pub fn pay_for(&mut self, usage: Usage) -> anyhow::Result<Vec<u8>> {
        let mut next = self.payer.clone();
        next.record_served(usage)?;
        let state = next.pay_owed()?;
        let rec = ChannelRecord::new(Role::Payer, Side::A, &state, next.served())?;
        self.store.commit(&rec)?;
        self.payer = next;
        self.latest_boc = rec.state_boc;
        Ok(self.latest_boc.clone())
    }
}

/// The live meters of a node, one per channel.
#[derive(Default)]
pub struct Meters {
    payees: Mutex<HashMap<u128, Shared<PayeeMeter>>>,
    payers: Mutex<HashMap<u128, Shared<PayerMeter>>>,
}

/// What a meter is built from: the channel's parameters, this node's key, the store.
pub struct MeterSource<'a> {
    pub params: ChannelParams,
    pub key: &'a SigningKey,
    pub store: &'a Arc<ChannelStore>,
}

impl Meters {
    /// The worker's meter of a channel, resumed from the store on first use. A meter
    /// already live must charge `price` too.
    pub fn payee(
        &self,
        src: MeterSource<'_>,
        price: Price,
        window: Option<NanoTon>,
    ) -> anyhow::Result<Shared<PayeeMeter>> {
        let id = src.params.channel_id.0;
        let mut map = lock(&self.payees);
        if let Some(m) = map.get(&id) {
            anyhow::ensure!(
                lock(m).price == price,
                "this worker's prices changed since the channel was first metered"
            );
            return Ok(m.clone());
        }
        let rec = src
            .store
            .load(src.params.channel_id)?
            .context("the channel has no state record")?;
        anyhow::ensure!(rec.role == Role::Payee, "this node pays in that channel");
        let window = match window {
            Some(w) => w,
            None => default_credit_window(&price)?,
        };
        let payee = Payee::new(
            src.params,
            Side::B,
            src.key.clone(),
            price,
            window,
            rec.state()?,
        )?
        .with_served(rec.served());
        let meter = Arc::new(Mutex::new(PayeeMeter {
            channel_id: id,
            payee,
            price,
            window,
            store: src.store.clone(),
        }));
        map.insert(id, meter.clone());
        Ok(meter)
    }

    /// The client's meter of a channel, resumed from the store on first use, paying at
    /// `price` (the worker's announced prices) up to the deposit.
    pub fn payer(&self, src: MeterSource<'_>, price: Price) -> anyhow::Result<Shared<PayerMeter>> {
        let id = src.params.channel_id.0;
        let mut map = lock(&self.payers);
        if let Some(m) = map.get(&id) {
            anyhow::ensure!(
                lock(m).price == price,
                "the worker's announced prices changed since the channel was first metered; \
                 close the channel and open a new one"
            );
            return Ok(m.clone());
        }
        let rec = src
            .store
            .load(src.params.channel_id)?
            .context("the channel has no state record")?;
        anyhow::ensure!(rec.role == Role::Payer, "this node is paid in that channel");
        let budget = src.params.deposit_a;
        let payer = Payer::new(
            src.params,
            Side::A,
            src.key.clone(),
            price,
            budget,
            rec.body(),
        )?
        .with_served(rec.served());
        let meter = Arc::new(Mutex::new(PayerMeter {
            payer,
            price,
            store: src.store.clone(),
            latest_boc: rec.state_boc,
        }));
        map.insert(id, meter.clone());
        Ok(meter)
    }
}

/// Locks a meter; a panic while one was held poisons nothing that matters here (every
/// change is committed before it is applied), so the guard is taken back.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
