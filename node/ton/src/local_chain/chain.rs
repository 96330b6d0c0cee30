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
use tycho_types::dict::Dict;
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
    /// A message given as external is not an inbound external message to a std address.
    #[error("not an inbound external message to a standard address")]
    NotExternal,
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
    changes: ChainChanges,
}

/// One transaction the chain ran, as TON records it.
#[derive(Clone, Debug)]
pub struct ChainTransaction {
    /// The account it ran on.
    pub account: StdAddr,
    /// Its logical time.
    pub lt: u64,
    /// Its hash (the representation hash of the transaction cell).
    pub hash: HashBytes,
    /// Chain time when it ran.
    pub now: u32,
    /// The transaction cell (`Transaction` TL-B).
    pub cell: Cell,
}

/// What changed since the last [`LocalChain::take_changes`]: the accounts touched (their
/// new `ShardAccount`) and the transactions run, for a durable store to commit.
#[derive(Clone, Debug, Default)]
pub struct ChainChanges {
    /// Accounts whose state changed, with their new state.
    pub accounts: Vec<(StdAddr, ShardAccount)>,
    /// Transactions run, in order.
    pub transactions: Vec<ChainTransaction>,
}

/// The result of running a get method.
#[derive(Clone, Debug)]
pub struct GetterResult {
    /// The TVM exit code (0 or 1 on success).
    pub exit_code: i32,
    /// Gas used.
    pub gas_used: u64,
    /// The stack left by the method, bottom first.
    pub stack: Vec<tycho_vm::RcStackValue>,
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
            changes: ChainChanges::default(),
        }
    }

    /// A chain restored from stored state: accounts, clock and logical time.
    pub fn restore(
        config: ParsedConfig,
        now: u32,
        lt: u64,
        accounts: impl IntoIterator<Item = (StdAddr, ShardAccount)>,
    ) -> Self {
        let mut chain = Self::new(config, now);
        chain.lt = lt.max(1_000_000);
        chain.params.block_lt = chain.lt;
        chain.accounts = accounts.into_iter().collect();
        chain
    }

    /// The logical time the next transaction starts above.
    pub fn lt(&self) -> u64 {
        self.lt
    }

    /// The accounts changed and transactions run since the last call.
    pub fn take_changes(&mut self) -> ChainChanges {
        std::mem::take(&mut self.changes)
    }

    /// An account's full state (`None` if it does not exist).
    pub fn shard_account(&self, addr: &StdAddr) -> Option<&ShardAccount> {
        self.accounts.get(addr)
    }

    /// An account, decoded (`None` if it does not exist).
    pub fn account_state(&self, addr: &StdAddr) -> Res<Option<tycho_types::models::Account>> {
        self.account(addr)
    }

    /// Runs get method `method` of the account at `addr` with `args` on the stack, at
    /// the chain's current time. `Ok(None)` if the account has no code.
    pub fn run_getter(
        &self,
        addr: &StdAddr,
        method: &str,
        args: Vec<tycho_vm::RcStackValue>,
    ) -> Res<Option<GetterResult>> {
        let Some(account) = self.account(addr)? else {
            return Ok(None);
        };
        let caller = tycho_vm::VmCaller {
            libraries: Dict::new(),
            behaviour_modifiers: Default::default(),
            config: self.config.raw.params.clone(),
        };
        let mut getter_args = tycho_vm::VmGetterArgs::default();
        getter_args.now = self.now();
        match caller.call_getter_ext(&account, method, args, &getter_args, None) {
            Ok(out) => Ok(Some(GetterResult {
                exit_code: out.exit_code,
                gas_used: out.gas_used,
                stack: out.stack,
            })),
            Err(tycho_vm::VmGetterError::NoCode) => Ok(None),
            Err(e) => Err(LocalChainError::Executor(format!("get method: {e}"))),
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
        self.send_external_with_init(dst, body, None)
    }

    /// Sends an external message, with a state init to deploy (a wallet's first
    /// message), and delivers what it sends.
    pub fn send_external_with_init(
        &mut self,
        dst: &StdAddr,
        body: Cell,
        init: Option<StateInit>,
    ) -> Res<Vec<TxOutcome>> {
        let info = MsgInfo::ExtIn(ExtInMsgInfo {
            src: None,
            dst: IntAddr::Std(dst.clone()),
            import_fee: Tokens::ZERO,
        });
        let cell = CellBuilder::build_from(Message {
            info,
            init: init.clone(),
            body: body.as_slice_allow_exotic(),
            layout: None,
        })?;
        let outcomes = self.run_and_deliver(dst.clone(), true, cell)?;
        self.record(
            true,
            None,
            dst.clone(),
            0,
            false,
            &body,
            init.as_ref(),
            &outcomes,
        )?;
        Ok(outcomes)
    }

    /// Sends a serialized inbound external message (what `sendBoc` carries): its
    /// destination, body and state init are read from the cell. Refuses anything else.
    pub fn send_external_message(&mut self, msg: Cell) -> Res<Vec<TxOutcome>> {
        let parsed = msg.parse::<tycho_types::models::OwnedMessage>()?;
        let MsgInfo::ExtIn(info) = &parsed.info else {
            return Err(LocalChainError::NotExternal);
        };
        let IntAddr::Std(dst) = &info.dst else {
            return Err(LocalChainError::NotExternal);
        };
        let (range, body_cell) = &parsed.body;
        let body = CellBuilder::build_from((*range).apply_allow_exotic(body_cell))?;
        let dst = dst.clone();
        let outcomes = self.run_and_deliver(dst.clone(), true, msg)?;
        self.record(
            true,
            None,
            dst,
            0,
            false,
            &body,
            parsed.init.as_ref(),
            &outcomes,
        )?;
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
        self.accounts.insert(dst.clone(), output.new_state.clone());
        self.changes.accounts.retain(|(a, _)| a != dst);
        self.changes.accounts.push((dst.clone(), output.new_state));

        let transaction = output.transaction.load()?;
        self.changes.transactions.push(ChainTransaction {
            account: dst.clone(),
            lt: transaction.lt,
            hash: *output.transaction.inner().repr_hash(),
            now: self.now(),
            cell: output.transaction.inner().clone(),
        });
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
