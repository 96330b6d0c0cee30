//! The off-chain state machine of a one-way payment channel: the [`Payer`] (the client)
//! raises its cumulative `sent` with a new seqno per batch of tokens served; the
//! [`Payee`] (the worker) accepts a state only after [`verify_state`], and serves at
//! most a credit window of tokens ahead of the payments it holds.
//!
//! Sans-IO: nothing here stores or sends. A driver must durably commit what a call
//! returns (a signed state, an accepted state, an authorisation to serve) before it
//! acts on it: before the state is sent, before the tokens are served.
//!
//! Hazards of the contract refused here, before anything is signed or accepted:
//! seqnos the contract cannot store (`uint32`, and `seqno + 1` at finish), `sent` or a
//! misbehaviour fine that would drive a balance negative at finish (exit 5 forever),
//! and conditional payments (unused by cocoon).

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::error::ChannelError;
use super::keys::{sign_hash, verify_hash};
use super::layout::{ClosingConfig, SemiChannelBody, SemiChannelState, SignedSemiChannel};
use super::messages::{
    ChallengeBody, CloseBody, CommitBody, OneSigned, SignedBody, StartCloseBody,
};
use super::pricing::{Price, Usage};
use super::units::{ChannelId, NanoTon, SeqNo, Side};

/// What both parties agreed when the channel was deployed and initialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelParams {
    /// The channel id.
    pub channel_id: ChannelId,
    /// A's public key.
    pub key_a: VerifyingKey,
    /// B's public key.
    pub key_b: VerifyingKey,
    /// A's balance at init.
    pub deposit_a: NanoTon,
    /// B's balance at init.
    pub deposit_b: NanoTon,
    /// The closing configuration (its fine matters off chain).
    pub closing: ClosingConfig,
}

impl ChannelParams {
    /// The key of `side`.
    pub fn key(&self, side: Side) -> &VerifyingKey {
        match side {
            Side::A => &self.key_a,
            Side::B => &self.key_b,
        }
    }

    /// The deposit of `side`.
    pub fn deposit(&self, side: Side) -> NanoTon {
        match side {
            Side::A => self.deposit_a,
            Side::B => self.deposit_b,
        }
    }

    /// [`ChannelParams::check`], and that `key` is `side`'s key in these parameters
    /// (a party must sign with the key the contract holds for it).
    pub fn check_party(&self, side: Side, key: &SigningKey) -> Result<(), ChannelError> {
        self.check()?;
        if key.verifying_key() != *self.key(side) {
            return Err(ChannelError::BadSignature { side });
        }
        Ok(())
    }

    /// Refuses parameters whose fine could drive a side negative before anything is
    /// paid (rule `fine-covered`): each side must deposit at least the fine.
    pub fn check(&self) -> Result<(), ChannelError> {
        let fine = self.closing.misbehavior_fine;
        for side in [Side::A, Side::B] {
            let deposit = self.deposit(side);
            if fine > deposit {
                return Err(ChannelError::FineExceedsDeposit {
                    side,
                    fine,
                    deposit,
                });
            }
        }
        Ok(())
    }

    /// Rule `balance-non-negative`: with `sent_by` sent by `side` and `received` from the
    /// other, even a fine added at a challenge keeps `side` at or above zero.
    pub fn check_solvent(
        &self,
        side: Side,
        sent: NanoTon,
        received: NanoTon,
    ) -> Result<(), ChannelError> {
        let owed = sent
            .checked_add(self.closing.misbehavior_fine)
            .ok_or(ChannelError::CoinsOverflow(sent))?;
        let available = self
            .deposit(side)
            .checked_add(received)
            .ok_or(ChannelError::CoinsOverflow(received))?;
        if owed > available {
            return Err(ChannelError::BalanceNegative {
                side,
                owed,
                available,
            });
        }
        Ok(())
    }

    /// The payouts of a close at these bodies: `deposit - sent + received` per side.
    pub fn payouts(
        &self,
        body_a: &SemiChannelBody,
        body_b: &SemiChannelBody,
    ) -> Result<(NanoTon, NanoTon), ChannelError> {
        self.check_solvent(Side::A, body_a.sent, body_b.sent)?;
        self.check_solvent(Side::B, body_b.sent, body_a.sent)?;
        let pay = |dep: NanoTon, sent: NanoTon, recv: NanoTon| {
            dep.checked_add(recv)
                .and_then(|v| v.checked_sub(sent))
                .ok_or(ChannelError::CoinsOverflow(recv))
        };
        Ok((
            pay(self.deposit_a, body_a.sent, body_b.sent)?,
            pay(self.deposit_b, body_b.sent, body_a.sent)?,
        ))
    }
}

/// Checks a semi-channel state signed by `signer` against the last one accepted from
/// it (`last`; the zero state if none) and what `signer` received (`received`).
/// Each failure names its rule.
pub fn verify_state(
    params: &ChannelParams,
    signer: Side,
    state: &SignedSemiChannel,
    last: &SemiChannelBody,
    received: NanoTon,
) -> Result<(), ChannelError> {
    let st = &state.state;
    if st.channel_id != params.channel_id {
        return Err(ChannelError::WrongChannel {
            found: st.channel_id,
            expected: params.channel_id,
        });
    }
    verify_hash(
        params.key(signer),
        &st.signing_hash()?,
        &state.signature,
        signer,
    )?;
    check_body(params, signer, &st.body, last, received)
}

/// The rules on a body alone (no signature): seqno, sent, solvency, conditionals.
fn check_body(
    params: &ChannelParams,
    side: Side,
    body: &SemiChannelBody,
    last: &SemiChannelBody,
    received: NanoTon,
) -> Result<(), ChannelError> {
    if !body.seqno.fits_on_chain() {
        return Err(ChannelError::SeqnoTooLarge(body.seqno));
    }
    if body.seqno <= last.seqno {
        return Err(ChannelError::SeqnoNotIncreasing {
            found: body.seqno,
            last: last.seqno,
        });
    }
    if body.sent < last.sent {
        return Err(ChannelError::SentDecreased {
            found: body.sent,
            last: last.sent,
        });
    }
    if body.conditionals.is_some() {
        return Err(ChannelError::Conditionals);
    }
    params.check_solvent(side, body.sent, received)
}

/// Signs `body` as `side`'s semi-channel state.
pub fn sign_state(
    channel_id: ChannelId,
    key: &SigningKey,
    body: SemiChannelBody,
    counterparty: Option<SemiChannelBody>,
) -> Result<SignedSemiChannel, ChannelError> {
    let state = SemiChannelState {
        channel_id,
        body,
        counterparty,
    };
    let signature = sign_hash(key, &state.signing_hash()?);
    Ok(SignedSemiChannel { signature, state })
}

/// The client's side: counts what it was served and pays exactly that.
#[derive(Clone, Debug)]
pub struct Payer {
    params: ChannelParams,
    side: Side,
    key: SigningKey,
    price: Price,
    budget: NanoTon,
    served: Usage,
    latest: SemiChannelBody,
}

impl Payer {
    /// A payer on `side` of a channel, paying `price` per token up to `budget` in all.
    /// `latest` is the last state it signed (the zero state for a fresh channel).
    pub fn new(
        params: ChannelParams,
        side: Side,
        key: SigningKey,
        price: Price,
        budget: NanoTon,
        latest: SemiChannelBody,
    ) -> Result<Self, ChannelError> {
        params.check_party(side, &key)?;
        Ok(Self {
            params,
            side,
            key,
            price,
            budget,
            served: Usage::default(),
            latest,
        })
    }

    /// Restores the count of tokens already paid for (after a restart, from the store).
    pub fn with_served(mut self, served: Usage) -> Self {
        self.served = served;
        self
    }

    /// The last state this payer signed.
    pub fn latest(&self) -> &SemiChannelBody {
        &self.latest
    }

    /// Tokens counted as served.
    pub fn served(&self) -> Usage {
        self.served
    }

    /// What the tokens served cost.
    pub fn owed(&self) -> Result<NanoTon, ChannelError> {
        Ok(self.price.cost(self.served)?)
    }

    /// Counts tokens the client itself received; refuses (rule `agreed-budget`) tokens
    /// past the agreed budget, which are then not counted.
    pub fn record_served(&mut self, delta: Usage) -> Result<NanoTon, ChannelError> {
        let next = self.served.plus(delta);
        let cost = self.price.cost(next)?;
        if cost > self.budget {
            return Err(ChannelError::OverBudget {
                cost,
                budget: self.budget,
            });
        }
        self.served = next;
        Ok(cost)
    }

    /// Signs a state paying everything owed so far, with the next seqno.
    pub fn pay_owed(&mut self) -> Result<SignedSemiChannel, ChannelError> {
        let owed = self.owed()?;
        self.pay(owed)
    }

    /// Signs a state with cumulative `sent` and the next seqno. Refuses more than owed
    /// for tokens served, a lower `sent`, an unstorable seqno, or a balance that could go
    /// negative. The driver must commit the returned state durably before sending it.
    pub fn pay(&mut self, sent: NanoTon) -> Result<SignedSemiChannel, ChannelError> {
        let owed = self.owed()?;
        if sent > owed {
            return Err(ChannelError::PayMoreThanOwed { asked: sent, owed });
        }
        let body = SemiChannelBody::new(self.latest.seqno.next(), sent);
        check_body(&self.params, self.side, &body, &self.latest, NanoTon::ZERO)?;
        let signed = sign_state(self.params.channel_id, &self.key, body.clone(), None)?;
        self.latest = body;
        Ok(signed)
    }
}

/// What [`Payee::accept_payment`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The seqno accepted.
    pub seqno: SeqNo,
    /// The cumulative amount now paid.
    pub paid: NanoTon,
    /// How much this state added.
    pub increase: NanoTon,
}

/// The worker's side: accepts verified payments, serves within its credit window.
#[derive(Clone, Debug)]
pub struct Payee {
    params: ChannelParams,
    side: Side,
    key: SigningKey,
    price: Price,
    credit_window: NanoTon,
    served: Usage,
    own: SemiChannelBody,
    best: Option<SignedSemiChannel>,
}

impl Payee {
    /// A payee on `side`, charging `price`, serving at most `credit_window` ahead of
    /// payment. `best` is the latest payer state accepted earlier (after a restart).
    pub fn new(
        params: ChannelParams,
        side: Side,
        key: SigningKey,
        price: Price,
        credit_window: NanoTon,
        best: Option<SignedSemiChannel>,
    ) -> Result<Self, ChannelError> {
        params.check_party(side, &key)?;
        Ok(Self {
            params,
            side,
            key,
            price,
            credit_window,
            served: Usage::default(),
            own: SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO),
            best,
        })
    }

    /// Restores the count of tokens already served (after a restart, from the store).
    pub fn with_served(mut self, served: Usage) -> Self {
        self.served = served;
        self
    }

    /// Tokens served (authorised) so far.
    pub fn served(&self) -> Usage {
        self.served
    }

    /// The payer's side.
    pub fn payer_side(&self) -> Side {
        self.side.other()
    }

    /// The payer's latest accepted body (the zero state if none).
    pub fn paid_body(&self) -> SemiChannelBody {
        self.best
            .as_ref()
            .map(|s| s.state.body.clone())
            .unwrap_or_else(|| SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO))
    }

    /// The payer's latest accepted signed state.
    pub fn best_state(&self) -> Option<&SignedSemiChannel> {
        self.best.as_ref()
    }

    /// When `state` is, byte for byte, the state accepted last (a client repeating its
    /// newest state after a reconnect): what it amounts to, a payment of nothing new.
    pub fn resend_of_newest(&self, state: &SignedSemiChannel) -> Option<Accepted> {
        (self.best.as_ref() == Some(state)).then(|| {
            let paid = self.paid_body();
            Accepted {
                seqno: paid.seqno,
                paid: paid.sent,
                increase: NanoTon::ZERO,
            }
        })
    }

    /// Cumulative amount paid.
    pub fn paid(&self) -> NanoTon {
        self.paid_body().sent
    }

    /// Verifies a payer state and keeps it if every rule holds. The driver must commit
    /// the accepted state durably before serving tokens against it.
    /// A replay, even of the very state accepted last, is refused (rule
    /// `seqno-increases`); a driver that sees resends after reconnects recognises them
    /// with [`Payee::resend_of_newest`] first.
    pub fn accept_payment(&mut self, state: SignedSemiChannel) -> Result<Accepted, ChannelError> {
        let last = self.paid_body();
        verify_state(
            &self.params,
            self.payer_side(),
            &state,
            &last,
            self.own.sent,
        )?;
        let acc = Accepted {
            seqno: state.state.body.seqno,
            paid: state.state.body.sent,
            increase: NanoTon(state.state.body.sent.0 - last.sent.0),
        };
        self.best = Some(state);
        Ok(acc)
    }

    /// Asks to serve `delta` more tokens: allowed only while the cost of everything
    /// served stays within what is paid plus the credit window (rule `credit-window`).
    /// On success the tokens count as served.
    pub fn authorize(&mut self, delta: Usage) -> Result<NanoTon, ChannelError> {
        let cost = self.check_authorize(delta)?;
        self.served = self.served.plus(delta);
        Ok(cost)
    }

    /// Whether [`Payee::authorize`] would allow `delta` now, counting nothing: the
    /// cumulative cost it would reach.
    pub fn check_authorize(&self, delta: Usage) -> Result<NanoTon, ChannelError> {
        let next = self.served.plus(delta);
        let cost = self.price.cost(next)?;
        let paid = self.paid();
        let limit = paid
            .checked_add(self.credit_window)
            .ok_or(ChannelError::CoinsOverflow(paid))?;
        if cost > limit {
            return Err(ChannelError::PaymentLagging {
                cost,
                paid,
                window: self.credit_window,
            });
        }
        Ok(cost)
    }

    /// Notes a cooperative commit that went on chain: the worker's own seqno rises to
    /// the committed one (the contract then wants later seqnos strictly above it).
    pub fn record_commit(&mut self, commit: &CommitBody) {
        let own = match self.side {
            Side::A => commit.seqno_a,
            Side::B => commit.seqno_b,
        };
        if own > self.own.seqno {
            self.own.seqno = own;
        }
    }

    /// The worker's own semi-channel state, signed (it sends nothing, so seqno and
    /// sent stay as committed), for an uncooperative close or a challenge.
    pub fn own_state(&self) -> Result<SignedSemiChannel, ChannelError> {
        sign_state(
            self.params.channel_id,
            &self.key,
            self.own.clone(),
            Some(self.paid_body()),
        )
    }

    fn bodies(&self) -> (SemiChannelBody, SemiChannelBody) {
        match self.side {
            Side::A => (self.own.clone(), self.paid_body()),
            Side::B => (self.paid_body(), self.own.clone()),
        }
    }

    /// The cooperative close both sides sign: payouts from the latest states, seqnos one
    /// above them (the contract wants both strictly above the committed ones).
    pub fn close_body(&self) -> Result<CloseBody, ChannelError> {
        let (a, b) = self.bodies();
        close_body_for(&self.params, &a, &b)
    }

    /// Signs a cooperative close after checking it against the latest states.
    pub fn sign_close(&self, proposed: &CloseBody) -> Result<[u8; 64], ChannelError> {
        let want = self.close_body()?;
        if want != *proposed {
            return Err(ChannelError::CloseMismatch {
                a: proposed.balance_a,
                b: proposed.balance_b,
                want_a: want.balance_a,
                want_b: want.balance_b,
            });
        }
        Ok(sign_hash(&self.key, &proposed.signing_hash()?))
    }

    /// What the watcher should do about quarantine `q` at `now`.
    pub fn watch(
        &self,
        q: &super::layout::QuarantinedState,
        now: u32,
    ) -> super::watcher::WatchAction {
        super::watcher::judge_quarantine(self.side, &self.params.closing, q, &self.paid_body(), now)
    }

    /// Starts an uncooperative close with the latest states.
    pub fn start_uncooperative_close(&self) -> Result<OneSigned<StartCloseBody>, ChannelError> {
        let (sch_a, sch_b) = self.signed_pair()?;
        let body = StartCloseBody {
            channel_id: self.params.channel_id,
            sch_a,
            sch_b,
        };
        Ok(OneSigned::sign(self.side, &self.key, body)?)
    }

    /// Challenges a quarantined state with the latest states.
    pub fn challenge(&self) -> Result<OneSigned<ChallengeBody>, ChannelError> {
        let (sch_a, sch_b) = self.signed_pair()?;
        let body = ChallengeBody {
            channel_id: self.params.channel_id,
            sch_a,
            sch_b,
        };
        Ok(OneSigned::sign(self.side, &self.key, body)?)
    }

    fn signed_pair(&self) -> Result<(SignedSemiChannel, SignedSemiChannel), ChannelError> {
        let own = self.own_state()?;
        let theirs = match &self.best {
            Some(s) => s.clone(),
            None => return Err(ChannelError::NoCounterpartyState),
        };
        Ok(match self.side {
            Side::A => (own, theirs),
            Side::B => (theirs, own),
        })
    }
}

/// The cooperative close for bodies `a` and `b`: payouts `deposit - sent + received`,
/// seqnos one above each body's.
pub fn close_body_for(
    params: &ChannelParams,
    a: &SemiChannelBody,
    b: &SemiChannelBody,
) -> Result<CloseBody, ChannelError> {
    let (balance_a, balance_b) = params.payouts(a, b)?;
    let (seqno_a, seqno_b) = (a.seqno.next(), b.seqno.next());
    for s in [seqno_a, seqno_b] {
        if !s.fits_on_chain() {
            return Err(ChannelError::SeqnoTooLarge(s));
        }
    }
    Ok(CloseBody {
        channel_id: params.channel_id,
        balance_a,
        balance_b,
        seqno_a,
        seqno_b,
    })
}

/// The cooperative commit for bodies `a` and `b` (their own seqnos, which must be above
/// the committed ones).
pub fn commit_body_for(
    params: &ChannelParams,
    a: &SemiChannelBody,
    b: &SemiChannelBody,
) -> CommitBody {
    CommitBody {
        channel_id: params.channel_id,
        seqno_a: a.seqno,
        seqno_b: b.seqno,
    }
}
