//! The local chain: a map of accounts, a clock and a logical time. Each message runs as
//! one ordinary transaction in `tycho-executor`; internal messages a transaction sends
//! are delivered in turn (breadth first), so payouts land in their destination
//! accounts as on TON.

use std::collections::{HashMap, VecDeque};

use thiserror::Error;
use tycho_executor::{Executor, ExecutorInspector, ExecutorParams, ParsedConfig, TxError};
use tycho_types::boc::Boc;
use tycho_types::cell::Lazy;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{
    AccountState, ComputePhase, CurrencyCollection, ExtInMsgInfo, IntAddr, IntMsgInfo, Message,
    MsgInfo, OptionalAccount, ShardAccount, StateInit, StdAddr, TxInfo,
};
use tycho_types::num::Tokens;

/// A failure of the chain itself (not of a contract: those are [`TxOutcome`]s).
#[derive(Debug, Error)]
pub enum LocalChainError {
    /// A cell could not be built or read.
    #[error("cell error: {0}")]
    Cell(#[from] tycho_types::error::Error),
    /// The executor failed (not a contract exit code: a broken state or message).
    #[error("executor failed: {0}")]
    Executor(String),
}

type Res<T> = Result<T, LocalChainError>;

/// An internal message to send.
#[derive(Clone, Debug)]
pub struct InternalMessage {
    /// Sender (not debited: the local chain mints the value, like a faucet).
    pub src: StdAddr,
    /// Destination.
    pub dst: StdAddr,
    /// Value in nanotons.
    pub value: u128,
    /// Bounce on failure.
    pub bounce: bool,
    /// Body cell.
    pub body: Cell,
    /// State init, to deploy.
    pub init: Option<StateInit>,
}

/// An internal message a transaction sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutTransfer {
    /// Destination.
    pub dst: StdAddr,
    /// Value carried (after the forward fee when the sender paid it from the value).
    pub value: u128,
    /// Forward fee charged.
    pub fwd_fee: u128,
    /// Body.
    pub body: Cell,
}

/// What one transaction did.
#[derive(Clone, Debug)]
pub struct TxOutcome {
    /// Whether a transaction happened. `false`: an external message the contract did
    /// not accept (it threw before `accept_message`), so nothing was recorded on chain.
    pub included: bool,
    /// The compute phase's exit code (`None` if it was skipped).
    pub exit_code: Option<i32>,
    /// Gas used by the compute phase.
    pub gas_used: u64,
    /// Whether compute and action phases both succeeded.
    pub success: bool,
    /// The action phase's result code, if it ran.
    pub action_result: Option<i32>,
    /// Total fees of the transaction.
    pub total_fees: u128,
    /// Internal messages it sent.
    pub out: Vec<OutTransfer>,
}

/// One top-level message sent to the chain and what came of it, for replaying the
/// same message BoCs through TON's own emulator (`scripts/ton/replay.js`).
#[derive(Clone, Debug)]
pub struct TranscriptEntry {
    /// Chain time when sent.
    pub now: u32,
    /// `true` for an external message.
    pub external: bool,
    /// Sender (internal messages).
    pub src: Option<StdAddr>,
    /// Destination.
    pub dst: StdAddr,
    /// Value (internal messages).
    pub value: u128,
    /// Bounce flag (internal messages).
    pub bounce: bool,
    /// Body BoC.
    pub body: Vec<u8>,
    /// State init BoC, if any.
    pub init: Option<Vec<u8>>,
    /// The first transaction's outcome.
    pub outcome: TxOutcome,
    /// Balances of every account after the message and its deliveries.
    pub balances: Vec<(StdAddr, u128)>,
}

/// An embedded chain of accounts.
pub struct LocalChain {
    config: ParsedConfig,
    params: ExecutorParams,
    accounts: HashMap<StdAddr, ShardAccount>,
    lt: u64,
    transcript: Vec<TranscriptEntry>,
}

impl LocalChain {
    /// A chain with no accounts, at unix time `now`.
    pub fn new(config: ParsedConfig, now: u32) -> Self {
        let params = ExecutorParams {
            block_unixtime: now,
            block_lt: 1_000_000,
            strict_extra_currency: true,
            ..Default::default()
        };
        Self {
            config,
            params,
            accounts: HashMap::new(),
            lt: 1_000_000,
            transcript: Vec::new(),
        }
    }

    /// Every top-level message sent so far, with outcomes and balances.
    pub fn transcript(&self) -> &[TranscriptEntry] {
        &self.transcript
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        external: bool,
        src: Option<StdAddr>,
        dst: StdAddr,
        value: u128,
        bounce: bool,
        body: &Cell,
        init: Option<&StateInit>,
        outcomes: &[TxOutcome],
    ) -> Res<()> {
        let init = match init {
            Some(i) => Some(Boc::encode(CellBuilder::build_from(i)?)),
            None => None,
        };
        let mut balances = Vec::new();
        for addr in self.accounts.keys() {
            balances.push((addr.clone(), self.balance(addr)?));
        }
        balances.sort();
        if let Some(outcome) = outcomes.first() {
            self.transcript.push(TranscriptEntry {
                now: self.now(),
                external,
                src,
                dst,
                value,
                bounce,
                body: Boc::encode(body),
                init,
                outcome: outcome.clone(),
                balances,
            });
        }
        Ok(())
    }

    /// The chain's clock.
    pub fn now(&self) -> u32 {
        self.params.block_unixtime
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, secs: u32) {
        self.params.block_unixtime = self.params.block_unixtime.saturating_add(secs);
        self.params.block_lt = self.lt;
    }

    /// The basechain's `lump_price`: the forward fee of a message whose body fits its
    /// root cell (a channel payout).
    pub fn lump_price(&self) -> u128 {
        u128::from(self.config.fwd_prices(false).lump_price)
    }

    /// The address a state init deploys to on the basechain.
    pub fn address_of(init: &StateInit) -> Res<StdAddr> {
        Ok(StdAddr::new(0, *CellBuilder::build_from(init)?.repr_hash()))
    }

    /// An account's balance in nanotons (0 if absent).
    pub fn balance(&self, addr: &StdAddr) -> Res<u128> {
        Ok(match self.account(addr)? {
            Some(acc) => acc.balance.tokens.into_inner(),
            None => 0,
        })
    }

    /// An active account's data cell.
    pub fn data(&self, addr: &StdAddr) -> Res<Option<Cell>> {
        Ok(match self.account(addr)? {
            Some(acc) => match acc.state {
                AccountState::Active(init) => init.data,
                _ => None,
            },
            None => None,
        })
    }

    fn account(&self, addr: &StdAddr) -> Res<Option<tycho_types::models::Account>> {
        match self.accounts.get(addr) {
            Some(sa) => Ok(sa.load_account()?),
            None => Ok(None),
        }
    }

    /// Sends an internal message and delivers what it sends in turn. Returns the
    /// outcome of the first transaction, then of each delivery.
    pub fn send_internal(&mut self, msg: InternalMessage) -> Res<Vec<TxOutcome>> {
        let info = MsgInfo::Int(IntMsgInfo {
            ihr_disabled: true,
            bounce: msg.bounce,
            bounced: false,
            src: IntAddr::Std(msg.src.clone()),
            dst: IntAddr::Std(msg.dst.clone()),
            value: CurrencyCollection::new(msg.value),
            created_lt: self.lt,
            created_at: self.now(),
            ..Default::default()
        });
        let cell = CellBuilder::build_from(Message {
            info,
            init: msg.init.clone(),
            body: msg.body.as_slice_allow_exotic(),
            layout: None,
        })?;
        let outcomes = self.run_and_deliver(msg.dst.clone(), false, cell)?;
        self.record(
            false,
            Some(msg.src),
            msg.dst,
            msg.value,
            msg.bounce,
            &msg.body,
            msg.init.as_ref(),
            &outcomes,
        )?;
        Ok(outcomes)
    }

    /// Sends an external message and delivers what it sends.
    pub fn send_external(&mut self, dst: &StdAddr, body: Cell) -> Res<Vec<TxOutcome>> {
        let info = MsgInfo::ExtIn(ExtInMsgInfo {
            src: None,
            dst: IntAddr::Std(dst.clone()),
            import_fee: Tokens::ZERO,
        });
        let cell = CellBuilder::build_from(Message {
            info,
            init: None,
            body: body.as_slice_allow_exotic(),
            layout: None,
        })?;
        let outcomes = self.run_and_deliver(dst.clone(), true, cell)?;
        self.record(true, None, dst.clone(), 0, false, &body, None, &outcomes)?;
        Ok(outcomes)
    }

    fn run_and_deliver(&mut self, dst: StdAddr, external: bool, msg: Cell) -> Res<Vec<TxOutcome>> {
        let mut outcomes = Vec::new();
        let mut queue = VecDeque::from([(dst, external, msg)]);
        while let Some((dst, external, msg)) = queue.pop_front() {
            let (outcome, sent) = self.run_one(&dst, external, msg)?;
            outcomes.push(outcome);
            queue.extend(sent.into_iter().map(|(d, m)| (d, false, m)));
            if outcomes.len() > 64 {
                return Err(LocalChainError::Executor(
                    "more than 64 chained transactions".into(),
                ));
            }
        }
        Ok(outcomes)
    }

    fn run_one(
        &mut self,
        dst: &StdAddr,
        external: bool,
        msg: Cell,
    ) -> Res<(TxOutcome, Vec<(StdAddr, Cell)>)> {
        let empty = ShardAccount {
            account: Lazy::new(&OptionalAccount::EMPTY)?,
            last_trans_hash: HashBytes::ZERO,
            last_trans_lt: 0,
        };
        let state = self.accounts.get(dst).cloned().unwrap_or(empty);
        let mut inspector = ExecutorInspector::default();
        let executor = Executor::new(&self.params, &self.config).with_min_lt(self.lt);
        let tx = match executor.begin_ordinary_ext(dst, external, msg, &state, Some(&mut inspector))
        {
            Ok(tx) => tx,
            Err(TxError::Skipped) => {
                let outcome = TxOutcome {
                    included: false,
                    exit_code: inspector.exit_code,
                    gas_used: inspector.total_gas_used,
                    success: false,
                    action_result: None,
                    total_fees: 0,
                    out: Vec::new(),
                };
                return Ok((outcome, Vec::new()));
            }
            Err(TxError::Fatal(e)) => return Err(LocalChainError::Executor(format!("{e:#}"))),
        };
        let output = tx
            .commit()
            .map_err(|e| LocalChainError::Executor(format!("{e:#}")))?;
        self.lt = self.lt.max(output.transaction_meta.next_lt);
        self.accounts.insert(dst.clone(), output.new_state);

        let transaction = output.transaction.load()?;
        let TxInfo::Ordinary(info) = transaction.load_info()? else {
            return Err(LocalChainError::Executor(
                "not an ordinary transaction".into(),
            ));
        };
        let (exit_code, gas_used, compute_ok) = match &info.compute_phase {
            ComputePhase::Executed(c) => (Some(c.exit_code), c.gas_used.into_inner(), c.success),
            ComputePhase::Skipped(_) => (None, 0, false),
        };
        let action_result = info.action_phase.as_ref().map(|a| a.result_code);
        let action_ok = info.action_phase.as_ref().is_none_or(|a| a.success);
        let mut out = Vec::new();
        let mut deliver = Vec::new();
        for m in &output.transaction_meta.out_msgs {
            let loaded = m.load()?;
            if let MsgInfo::Int(i) = &loaded.info
                && let IntAddr::Std(to) = &i.dst
            {
                let (range, cell) = &loaded.body;
                let body = CellBuilder::build_from((*range).apply_allow_exotic(cell))?;
                out.push(OutTransfer {
                    dst: to.clone(),
                    value: i.value.tokens.into_inner(),
                    fwd_fee: i.fwd_fee.into_inner(),
                    body,
                });
                deliver.push((to.clone(), m.inner().clone()));
            }
        }
        let outcome = TxOutcome {
            included: true,
            exit_code,
            gas_used,
            success: compute_ok && action_ok && !info.aborted,
            action_result,
            total_fees: output.transaction_meta.total_fees.into_inner(),
            out,
        };
        Ok((outcome, deliver))
    }
}
