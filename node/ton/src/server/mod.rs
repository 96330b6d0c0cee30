//! `cocoon ton-local` as a library: the [`LocalChain`] served over HTTP on 127.0.0.1 as a
//! subset of toncenter's v2 API, so the node's [`crate::client`] talks to it exactly as
//! to testnet or mainnet.
//!
//! Endpoints (under `/api/v2/`), toncenter's shapes (`{"ok":true,"result":..}`, errors
//! `{"ok":false,"error":..,"code":..}`): `sendBoc`, `sendBocReturnHash` (POST `{"boc"}`),
//! `runGetMethod` (POST `{"address","method","stack"}`), `getAddressInformation`,
//! `getAddressBalance`, `getTransactions`, `getMasterchainInfo` (GET, query string).
//!
//! **Local only** (no such thing on toncenter): `POST /api/v2/admin/advanceTime`
//! `{"seconds":N}` moves the chain's clock forward, `POST /api/v2/admin/fund`
//! `{"address","amount"}` mints nanotons to an address (a faucet). The server binds only
//! loopback addresses.
//!
//! State: accounts, transactions, clock and logical time in redb ([`db`]), committed
//! before each answer, so a restart keeps the chain. Devnet wallets (v4r2) from the
//! config are created (key files 0600), funded and deployed on first start.

pub mod db;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::Mutex;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::dict::Dict;
use tycho_types::models::{AccountState, IntAddr, MsgInfo, OwnedMessage, StdAddr, Transaction};

use crate::address::{parse_address, raw};
use crate::local_chain::{ConfigError, InternalMessage, LocalChain, LocalChainError};
use crate::stack::StackEntry;
use crate::wallet::{WalletError, WalletV4, load_or_create_key};
use db::{ChainDb, ChainDbError, ChainMeta};

/// A devnet wallet the server creates and funds at first start.
#[derive(Clone, Debug)]
pub struct DevnetWallet {
    /// A name for logs and for the caller.
    pub name: String,
    /// Its key file (32-byte seed, created with mode 0600 if missing).
    pub key_file: PathBuf,
    /// Nanotons minted to it when it is first created.
    pub balance: u128,
}

/// What `cocoon ton-local` runs with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen: must be a loopback address (port 0 picks one).
    pub listen: SocketAddr,
    /// The redb file holding the chain.
    pub db_path: PathBuf,
    /// The clock of a new chain (unix seconds); `None`: the system time.
    pub start_time: Option<u32>,
    /// Wallets to pre-fund.
    pub wallets: Vec<DevnetWallet>,
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Not a loopback address.
    #[error("ton-local listens on loopback only, not {0}")]
    NotLoopback(SocketAddr),
    /// Setup inputs missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The chain's database.
    #[error(transparent)]
    Db(#[from] ChainDbError),
    /// The chain.
    #[error(transparent)]
    Chain(#[from] LocalChainError),
    /// A devnet wallet.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// A devnet wallet's deployment was refused by its contract.
    #[error("devnet wallet {0} did not deploy (exit code {1:?})")]
    WalletDeploy(String, Option<i32>),
    /// Binding the socket.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A running server.
pub struct RunningServer {
    /// The bound address (the actual port when 0 was asked).
    pub addr: SocketAddr,
    /// The devnet wallets: name and address.
    pub wallets: Vec<(String, StdAddr)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// The base URL clients use (`http://127.0.0.1:PORT/api/v2`).
    pub fn url(&self) -> String {
        format!("http://{}/api/v2", self.addr)
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

struct Inner {
    chain: LocalChain,
    db: ChainDb,
    blocks: u64,
}

impl Inner {
    fn meta(&self) -> ChainMeta {
        ChainMeta {
            now: self.chain.now(),
            lt: self.chain.lt(),
            blocks: self.blocks,
        }
    }

    fn persist(&mut self) -> Result<(), ChainDbError> {
        self.blocks += 1;
        let changes = self.chain.take_changes();
        self.db.commit(&changes, self.meta())
    }
}

type Shared = Arc<Mutex<Inner>>;

fn system_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// Opens the chain in `config.db_path` (or starts a new one), creates and funds the
/// devnet wallets, binds `config.listen` and serves until [`RunningServer::shutdown`].
pub async fn serve(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if !config.listen.ip().is_loopback() {
        return Err(ServerError::NotLoopback(config.listen));
    }
    let db = ChainDb::open(&config.db_path)?;
    let (chain, blocks) = match db.meta()? {
        Some(meta) => {
            let ton_config = crate::local_chain::load_ton_config(meta.now)?;
            (
                LocalChain::restore(ton_config, meta.now, meta.lt, db.accounts()?),
                meta.blocks,
            )
        }
        None => {
            let now = config.start_time.unwrap_or_else(system_now);
            (
                LocalChain::new(crate::local_chain::load_ton_config(now)?, now),
                0,
            )
        }
    };
    let mut inner = Inner { chain, db, blocks };
    let wallet_code = crate::local_chain::load_wallet_code()?;
    let mut wallets = Vec::new();
    for w in &config.wallets {
        let key = load_or_create_key(&w.key_file)?;
        let wallet = WalletV4::new(wallet_code.clone(), key);
        let addr = wallet.address()?;
        if inner.chain.shard_account(&addr).is_none() {
            inner.chain.send_internal(InternalMessage {
                src: StdAddr::new(-1, HashBytes([0xfa; 32])),
                dst: addr.clone(),
                value: w.balance,
                bounce: false,
                body: Cell::default(),
                init: None,
            })?;
            let deploy = wallet.external_message(0, u32::MAX, &[], true)?;
            let out = inner.chain.send_external_message(deploy)?;
            let first = out.first();
            if !first.is_some_and(|o| o.success) {
                return Err(ServerError::WalletDeploy(
                    w.name.clone(),
                    first.and_then(|o| o.exit_code),
                ));
            }
            inner.persist()?;
            tracing::info!(name = %w.name, address = %raw(&addr), "devnet wallet funded and deployed");
        }
        wallets.push((w.name.clone(), addr));
    }
    inner.persist()?;

    let shared: Shared = Arc::new(Mutex::new(inner));
    let app = router(shared);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("ton-local server stopped: {e}");
        }
    });
    Ok(RunningServer {
        addr,
        wallets,
        shutdown: Some(tx),
        task,
    })
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/api/v2/sendBoc", post(send_boc))
        .route("/api/v2/sendBocReturnHash", post(send_boc_return_hash))
        .route("/api/v2/runGetMethod", post(run_get_method))
        .route(
            "/api/v2/getAddressInformation",
            get(get_address_information),
        )
        .route("/api/v2/getAddressBalance", get(get_address_balance))
        .route("/api/v2/getTransactions", get(get_transactions))
        .route("/api/v2/getMasterchainInfo", get(get_masterchain_info))
        .route("/api/v2/admin/advanceTime", post(admin_advance_time))
        .route("/api/v2/admin/fund", post(admin_fund))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "method not found") })
        .with_state(shared)
}

/// An error in toncenter's shape.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"ok": false, "error": self.message, "code": self.status.as_u16()});
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<axum::Json<Value>, ApiError>;

fn ok(result: Value) -> ApiResult {
    Ok(axum::Json(json!({"ok": true, "result": result})))
}

fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad(format!("request body is not JSON: {e}")))
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad(format!("missing string field {name:?}")))
}

fn address_param(q: &std::collections::HashMap<String, String>) -> Result<StdAddr, ApiError> {
    let s = q
        .get("address")
        .ok_or_else(|| ApiError::bad("missing parameter address"))?;
    parse_address(s).map_err(|e| ApiError::bad(e.to_string()))
}

type QueryMap = Result<
    Query<std::collections::HashMap<String, String>>,
    axum::extract::rejection::QueryRejection,
>;

fn query(q: QueryMap) -> Result<std::collections::HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad(e.to_string()))
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

async fn submit(shared: &Shared, bytes: &Bytes) -> Result<Cell, ApiError> {
    let v = json_body(bytes)?;
    let boc = STANDARD
        .decode(str_field(&v, "boc")?)
        .map_err(|e| ApiError::bad(format!("boc is not base64: {e}")))?;
    let msg = Boc::decode(&boc).map_err(|e| ApiError::bad(format!("boc does not decode: {e}")))?;
    let mut inner = shared.lock().await;
    let outcomes = inner
        .chain
        .send_external_message(msg.clone())
        .map_err(|e| match e {
            LocalChainError::NotExternal | LocalChainError::Cell(_) => ApiError::bad(e.to_string()),
            other => ApiError::internal(other),
        })?;
    let accepted = outcomes.first().is_some_and(|o| o.included);
    if !accepted {
        let exit = outcomes.first().and_then(|o| o.exit_code);
        return Err(ApiError::internal(format!(
            "LITE_SERVER_UNKNOWN: cannot apply external message to current state: \
             External message was not accepted (exit code {exit:?})"
        )));
    }
    inner.persist().map_err(ApiError::internal)?;
    Ok(msg)
}

async fn send_boc(State(shared): State<Shared>, bytes: Bytes) -> ApiResult {
    submit(&shared, &bytes).await?;
    ok(json!({"@type": "ok"}))
}

async fn send_boc_return_hash(State(shared): State<Shared>, bytes: Bytes) -> ApiResult {
    let msg = submit(&shared, &bytes).await?;
    ok(json!({"@type": "raw.extMessageInfo", "hash": b64(msg.repr_hash().as_slice())}))
}

async fn run_get_method(State(shared): State<Shared>, bytes: Bytes) -> ApiResult {
    let v = json_body(&bytes)?;
    let addr =
        parse_address(str_field(&v, "address")?).map_err(|e| ApiError::bad(e.to_string()))?;
    let method = str_field(&v, "method")?;
    let args = match v.get("stack") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| match StackEntry::from_toncenter(x) {
                Ok(StackEntry::Num(n)) => Ok(n),
                Ok(_) => Err(ApiError::bad("only number arguments are supported")),
                Err(e) => Err(ApiError::bad(e.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::bad("stack must be an array")),
    };
    let inner = shared.lock().await;
    let args = args
        .into_iter()
        .map(tycho_vm::RcStackValue::new_dyn_value)
        .collect();
    let out = inner
        .chain
        .run_getter(&addr, method, args)
        .map_err(ApiError::internal)?;
    let Some(out) = out else {
        // toncenter answers an uninitialized account with exit code -13.
        return ok(json!({"@type": "smc.runResult", "gas_used": 0, "stack": [], "exit_code": -13}));
    };
    let stack = out
        .stack
        .iter()
        .map(|x| StackEntry::from_vm(x.as_ref()).map(|e| e.to_toncenter()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    ok(
        json!({"@type": "smc.runResult", "gas_used": out.gas_used, "stack": stack,
              "exit_code": out.exit_code}),
    )
}

fn tx_id(lt: u64, hash: &HashBytes) -> Value {
    json!({"@type": "internal.transactionId", "lt": lt.to_string(), "hash": b64(hash.as_slice())})
}

async fn get_address_information(State(shared): State<Shared>, q: QueryMap) -> ApiResult {
    let addr = address_param(&query(q)?)?;
    let inner = shared.lock().await;
    let now = inner.chain.now();
    let Some(sa) = inner.chain.shard_account(&addr) else {
        return ok(
            json!({"@type": "raw.fullAccountState", "balance": "0", "code": "",
            "data": "", "last_transaction_id": tx_id(0, &HashBytes::ZERO), "frozen_hash": "",
            "sync_utime": now, "state": "uninitialized"}),
        );
    };
    let account = sa.load_account().map_err(ApiError::internal)?;
    let (balance, state, code, data, frozen) = match &account {
        None => (
            0,
            "uninitialized",
            String::new(),
            String::new(),
            String::new(),
        ),
        Some(acc) => {
            let bal = acc.balance.tokens.into_inner();
            match &acc.state {
                AccountState::Active(init) => (
                    bal,
                    "active",
                    init.code
                        .as_ref()
                        .map(|c| b64(&Boc::encode(c)))
                        .unwrap_or_default(),
                    init.data
                        .as_ref()
                        .map(|c| b64(&Boc::encode(c)))
                        .unwrap_or_default(),
                    String::new(),
                ),
                AccountState::Frozen(h) => (
                    bal,
                    "frozen",
                    String::new(),
                    String::new(),
                    b64(h.as_slice()),
                ),
                AccountState::Uninit => (
                    bal,
                    "uninitialized",
                    String::new(),
                    String::new(),
                    String::new(),
                ),
            }
        }
    };
    ok(
        json!({"@type": "raw.fullAccountState", "balance": balance.to_string(), "code": code,
        "data": data, "last_transaction_id": tx_id(sa.last_trans_lt, &sa.last_trans_hash),
        "frozen_hash": frozen, "sync_utime": now, "state": state}),
    )
}

async fn get_address_balance(State(shared): State<Shared>, q: QueryMap) -> ApiResult {
    let addr = address_param(&query(q)?)?;
    let inner = shared.lock().await;
    let bal = inner.chain.balance(&addr).map_err(ApiError::internal)?;
    ok(json!(bal.to_string()))
}

fn int_addr(a: &IntAddr) -> String {
    match a {
        IntAddr::Std(s) => raw(s),
        IntAddr::Var(_) => String::new(),
    }
}

fn message_json(cell: &Cell) -> Value {
    let Ok(msg) = cell.parse::<OwnedMessage>() else {
        return json!({"@type": "raw.message", "message": b64(&Boc::encode(cell))});
    };
    let (range, body_cell) = &msg.body;
    let body = tycho_types::cell::CellBuilder::build_from((*range).apply_allow_exotic(body_cell))
        .map(|c| b64(&Boc::encode(c)))
        .unwrap_or_default();
    let init = msg
        .init
        .as_ref()
        .and_then(|i| tycho_types::cell::CellBuilder::build_from(i).ok())
        .map(|c| b64(&Boc::encode(c)))
        .unwrap_or_default();
    let (source, destination, value, fwd_fee, created_lt, bounce, bounced) = match &msg.info {
        MsgInfo::Int(i) => (
            int_addr(&i.src),
            int_addr(&i.dst),
            i.value.tokens.into_inner().to_string(),
            i.fwd_fee.into_inner().to_string(),
            i.created_lt.to_string(),
            i.bounce,
            i.bounced,
        ),
        MsgInfo::ExtIn(e) => (
            String::new(),
            int_addr(&e.dst),
            "0".into(),
            "0".into(),
            "0".into(),
            false,
            false,
        ),
        MsgInfo::ExtOut(e) => (
            int_addr(&e.src),
            String::new(),
            "0".into(),
            "0".into(),
            e.created_lt.to_string(),
            false,
            false,
        ),
    };
    json!({"@type": "raw.message", "hash": b64(cell.repr_hash().as_slice()), "source": source,
        "destination": destination, "value": value, "fwd_fee": fwd_fee, "ihr_fee": "0",
        "created_lt": created_lt, "bounce": bounce, "bounced": bounced,
        "body_hash": "", "msg_data": {"@type": "msg.dataRaw", "body": body, "init_state": init}})
}

fn transaction_json(cell: &Cell) -> Result<Value, ApiError> {
    let tx = cell.parse::<Transaction>().map_err(ApiError::internal)?;
    let out_msgs: Vec<Value> = tx
        .out_msgs
        .values()
        .filter_map(Result::ok)
        .map(|c| message_json(&c))
        .collect();
    let in_msg = tx.in_msg.as_ref().map(message_json).unwrap_or(Value::Null);
    let _: &Dict<_, _> = &tx.out_msgs;
    Ok(
        json!({"@type": "raw.transaction", "utime": tx.now, "data": b64(&Boc::encode(cell)),
        "transaction_id": tx_id(tx.lt, cell.repr_hash()),
        "fee": tx.total_fees.tokens.into_inner().to_string(), "storage_fee": "0", "other_fee": "0",
        "in_msg": in_msg, "out_msgs": out_msgs}),
    )
}

async fn get_transactions(State(shared): State<Shared>, q: QueryMap) -> ApiResult {
    let q = query(q)?;
    let addr = address_param(&q)?;
    let num = |k: &str| -> Result<Option<u64>, ApiError> {
        q.get(k)
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad(format!("{k} is not a number")))
            })
            .transpose()
    };
    let limit = num("limit")?.unwrap_or(10).clamp(1, 100) as usize;
    let from_lt = num("lt")?;
    let to_lt = num("to_lt")?.unwrap_or(0);
    let inner = shared.lock().await;
    let txs = inner
        .db
        .transactions(&addr, from_lt, to_lt, limit)
        .map_err(ApiError::internal)?;
    let out = txs
        .iter()
        .map(|t| transaction_json(&t.cell))
        .collect::<Result<Vec<_>, _>>()?;
    ok(Value::Array(out))
}

async fn get_masterchain_info(State(shared): State<Shared>) -> ApiResult {
    let inner = shared.lock().await;
    let block = json!({"@type": "ton.blockIdExt", "workchain": -1, "shard": "-9223372036854775808",
        "seqno": inner.blocks, "root_hash": b64(&[0; 32]), "file_hash": b64(&[0; 32])});
    ok(
        json!({"@type": "blocks.masterchainInfo", "last": block.clone(), "init": block,
        "state_root_hash": b64(&[0; 32]), "now": inner.chain.now()}),
    )
}

async fn admin_advance_time(State(shared): State<Shared>, bytes: Bytes) -> ApiResult {
    let v = json_body(&bytes)?;
    let secs = v
        .get("seconds")
        .and_then(Value::as_u64)
        .and_then(|s| u32::try_from(s).ok())
        .ok_or_else(|| ApiError::bad("seconds must be a non-negative 32-bit integer"))?;
    let mut inner = shared.lock().await;
    inner.chain.advance(secs);
    inner.persist().map_err(ApiError::internal)?;
    ok(json!({"now": inner.chain.now()}))
}

async fn admin_fund(State(shared): State<Shared>, bytes: Bytes) -> ApiResult {
    let v = json_body(&bytes)?;
    let addr =
        parse_address(str_field(&v, "address")?).map_err(|e| ApiError::bad(e.to_string()))?;
    let amount: u128 = str_field(&v, "amount")?
        .parse()
        .map_err(|_| ApiError::bad("amount must be a decimal number of nanotons"))?;
    let mut inner = shared.lock().await;
    inner
        .chain
        .send_internal(InternalMessage {
            src: StdAddr::new(-1, HashBytes([0xfa; 32])),
            dst: addr.clone(),
            value: amount,
            bounce: false,
            body: Cell::default(),
            init: None,
        })
        .map_err(ApiError::internal)?;
    inner.persist().map_err(ApiError::internal)?;
    let bal = inner.chain.balance(&addr).map_err(ApiError::internal)?;
    ok(json!({"balance": bal.to_string()}))
}
