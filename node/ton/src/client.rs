//! A toncenter v2 HTTP client (the subset cocoon needs): `sendBoc`, `runGetMethod`,
//! `getAddressInformation`, `getAddressBalance`, `getTransactions`,
//! `getMasterchainInfo`; the same code talks to `cocoon ton-local`, testnet or mainnet
//! (base URL and API key from config, e.g. `https://testnet.toncenter.com/api/v2`).
//!
//! On top: the wallet's `seqno`, the channel's `get_channel_data` decoded, and
//! [`verify_channel_on_chain`], which a worker calls before serving a client: the
//! channel exists, runs the official code, and holds both keys and the deposit claimed.
//! Every field of a reply is checked; nothing from the network is unwrapped.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cocoon_protocol::channel::{
    ChannelId, ClosingConfig, NanoTon, QuarantinedState, Side, StdAddress,
};
use serde_json::{Value, json};
use thiserror::Error;
use tycho_types::boc::Boc;
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

use crate::address::raw;
use crate::local_chain::CHANNEL_CODE_HASH;
use crate::stack::StackEntry;

/// Where the API is.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081/api/v2` or `https://toncenter.com/api/v2`.
    pub url: String,
    /// toncenter API key (sent as `X-API-Key`), if any. Never logged.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl ClientConfig {
    /// A config for `url` without an API key, 30 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A failed call.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Transport (connect, timeout, TLS).
    #[error("{method}: HTTP: {reason}")]
    Http {
        /// The API method.
        method: &'static str,
        /// Why.
        reason: String,
    },
    /// The API answered `ok: false`.
    #[error("{method}: API error {code}: {error}")]
    Api {
        /// The API method.
        method: &'static str,
        /// toncenter's code (the HTTP status).
        code: i64,
        /// Its message.
        error: String,
    },
    /// The answer does not have the expected shape.
    #[error("{method}: unexpected reply: {reason}")]
    Decode {
        /// The API method.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// An account as `getAddressInformation` describes it.
#[derive(Clone, Debug)]
pub struct AddressInfo {
    /// Balance in nanotons.
    pub balance: u128,
    /// `active`, `uninitialized` or `frozen`.
    pub state: String,
    /// Code (active accounts).
    pub code: Option<Cell>,
    /// Data (active accounts).
    pub data: Option<Cell>,
    /// Logical time of the last transaction (0 if none).
    pub last_lt: u64,
}

/// One transaction from `getTransactions`.
#[derive(Clone, Debug)]
pub struct TransactionInfo {
    /// Logical time.
    pub lt: u64,
    /// Hash (32 bytes).
    pub hash: [u8; 32],
    /// Unix time.
    pub utime: u32,
    /// Total fees.
    pub fee: u128,
    /// The inbound message's source (raw form; empty for external).
    pub in_source: String,
    /// The inbound message's value.
    pub in_value: u128,
    /// Destinations and values of outbound messages.
    pub out: Vec<(String, u128)>,
    /// The transaction cell.
    pub data: Cell,
}

/// The result of a get method.
#[derive(Clone, Debug)]
pub struct GetMethodResult {
    /// TVM exit code (0 or 1: success; -13: no such account or no code).
    pub exit_code: i32,
    /// Gas used.
    pub gas_used: u64,
    /// The stack, bottom first.
    pub stack: Vec<StackEntry>,
}

/// The payment channel's state as `get_channel_data` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChainChannel {
    /// 0 uninited, 1 open, 2 closure started, 3 settling conditionals, 4 awaiting
    /// finalization.
    pub state: u8,
    /// A's balance.
    pub balance_a: NanoTon,
    /// B's balance.
    pub balance_b: NanoTon,
    /// A's key.
    pub key_a: [u8; 32],
    /// B's key.
    pub key_b: [u8; 32],
    /// Channel id.
    pub channel_id: ChannelId,
    /// Closing config.
    pub closing: ClosingConfig,
    /// Committed seqnos (A, B).
    pub committed_seqnos: (u64, u64),
    /// The quarantined state, during an uncooperative close.
    pub quarantine: Option<QuarantinedState>,
    /// Where A's payout goes.
    pub dest_a: StdAddress,
    /// Where B's payout goes.
    pub dest_b: StdAddress,
}

/// Channel states as the contract numbers them.
pub mod channel_state {
    /// Not inited.
    pub const UNINITED: u8 = 0;
    /// Open.
    pub const OPEN: u8 = 1;
    /// Uncooperative close started (quarantine).
    pub const CLOSURE_STARTED: u8 = 2;
    /// Settling conditionals.
    pub const SETTLING_CONDITIONALS: u8 = 3;
    /// Awaiting finalization.
    pub const AWAITING_FINALIZATION: u8 = 4;
}

/// A toncenter v2 client.
#[derive(Clone)]
pub struct TonClient {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for TonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key is a secret: never printed.
        f.debug_struct("TonClient")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

fn decode(method: &'static str, reason: impl Into<String>) -> ClientError {
    ClientError::Decode {
        method,
        reason: reason.into(),
    }
}

fn str_num<T: std::str::FromStr>(
    method: &'static str,
    v: &Value,
    name: &str,
) -> Result<T, ClientError> {
    let field = v
        .get(name)
        .ok_or_else(|| decode(method, format!("no field {name}")))?;
    let s = match field {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(decode(method, format!("{name} is not a number"))),
    };
    s.parse()
        .map_err(|_| decode(method, format!("{name} is not a valid number")))
}

fn b64_cell(method: &'static str, s: &str) -> Result<Option<Cell>, ClientError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bytes = STANDARD
        .decode(s)
        .map_err(|e| decode(method, format!("bad base64: {e}")))?;
    Boc::decode(&bytes)
        .map(Some)
        .map_err(|e| decode(method, format!("bad BoC: {e}")))
}

impl TonClient {
    /// A client for `config`.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ClientError::Http {
                method: "client",
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            url: config.url.trim_end_matches('/').to_string(),
            api_key: config.api_key,
        })
    }

    async fn call(
        &self,
        method: &'static str,
        query: Option<&[(&str, String)]>,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}/{}", self.url, method);
        let mut req = match &body {
            Some(b) => self.http.post(&url).json(b),
            None => self.http.get(&url),
        };
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(key) = &self.api_key {
            req = req.header("X-API-Key", key);
        }
        let http = |e: reqwest::Error| ClientError::Http {
            method,
            reason: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(http)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| ClientError::Api {
            method,
            code: i64::from(status),
            error: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        })?;
        if v.get("ok").and_then(Value::as_bool) != Some(true) {
            return Err(ClientError::Api {
                method,
                code: v
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::from(status)),
                error: v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no error message")
                    .chars()
                    .take(500)
                    .collect(),
            });
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| decode(method, "no result"))
    }

    /// Sends an external message BoC.
    pub async fn send_boc(&self, boc: &[u8]) -> Result<(), ClientError> {
        self.call("sendBoc", None, Some(json!({"boc": STANDARD.encode(boc)})))
            .await
            .map(drop)
    }

    /// Sends an external message BoC; returns the message hash.
    pub async fn send_boc_return_hash(&self, boc: &[u8]) -> Result<[u8; 32], ClientError> {
        const M: &str = "sendBocReturnHash";
        let r = self
            .call(M, None, Some(json!({"boc": STANDARD.encode(boc)})))
            .await?;
        let h = r
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| decode(M, "no hash"))?;
        let bytes = STANDARD
            .decode(h)
            .map_err(|_| decode(M, "hash is not base64"))?;
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| decode(M, "hash is not 32 bytes"))
    }

    /// Runs get method `method` with `stack` (numbers only, as toncenter takes).
    pub async fn run_get_method(
        &self,
        addr: &StdAddr,
        method: &str,
        stack: &[StackEntry],
    ) -> Result<GetMethodResult, ClientError> {
        const M: &str = "runGetMethod";
        let stack: Vec<Value> = stack.iter().map(StackEntry::to_toncenter).collect();
        let r = self
            .call(
                M,
                None,
                Some(json!({"address": raw(addr), "method": method, "stack": stack})),
            )
            .await?;
        let exit_code: i32 = str_num(M, &r, "exit_code")?;
        let gas_used: u64 = str_num(M, &r, "gas_used").unwrap_or(0);
        let stack = r
            .get("stack")
            .and_then(Value::as_array)
            .ok_or_else(|| decode(M, "no stack"))?
            .iter()
            .map(|e| StackEntry::from_toncenter(e).map_err(|e| decode(M, e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(GetMethodResult {
            exit_code,
            gas_used,
            stack,
        })
    }

    /// An account's balance, state, code and data.
    pub async fn get_address_information(
        &self,
        addr: &StdAddr,
    ) -> Result<AddressInfo, ClientError> {
        const M: &str = "getAddressInformation";
        let r = self.call(M, Some(&[("address", raw(addr))]), None).await?;
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
        let last_lt = r
            .get("last_transaction_id")
            .map(|t| str_num::<u64>(M, t, "lt"))
            .transpose()?
            .unwrap_or(0);
        Ok(AddressInfo {
            balance: str_num(M, &r, "balance")?,
            state: s("state").to_string(),
            code: b64_cell(M, s("code"))?,
            data: b64_cell(M, s("data"))?,
            last_lt,
        })
    }

    /// An account's balance.
    pub async fn get_address_balance(&self, addr: &StdAddr) -> Result<u128, ClientError> {
        const M: &str = "getAddressBalance";
        let r = self.call(M, Some(&[("address", raw(addr))]), None).await?;
        match &r {
            Value::String(s) => s.parse().map_err(|_| decode(M, "balance is not a number")),
            Value::Number(n) => n
                .to_string()
                .parse()
                .map_err(|_| decode(M, "balance is not a number")),
            _ => Err(decode(M, "balance is not a number")),
        }
    }

    /// An account's latest `limit` transactions, newest first.
    pub async fn get_transactions(
        &self,
        addr: &StdAddr,
        limit: u32,
    ) -> Result<Vec<TransactionInfo>, ClientError> {
        const M: &str = "getTransactions";
        let r = self
            .call(
                M,
                Some(&[("address", raw(addr)), ("limit", limit.to_string())]),
                None,
            )
            .await?;
        let items = r
            .as_array()
            .ok_or_else(|| decode(M, "result is not an array"))?;
        let mut out = Vec::with_capacity(items.len());
        for t in items {
            let id = t
                .get("transaction_id")
                .ok_or_else(|| decode(M, "no transaction_id"))?;
            let hash_b64 = id.get("hash").and_then(Value::as_str).unwrap_or_default();
            let hash: [u8; 32] = STANDARD
                .decode(hash_b64)
                .ok()
                .and_then(|h| h.as_slice().try_into().ok())
                .ok_or_else(|| decode(M, "bad transaction hash"))?;
            let data = b64_cell(M, t.get("data").and_then(Value::as_str).unwrap_or_default())?
                .ok_or_else(|| decode(M, "no transaction data"))?;
            let msg_value = |m: &Value| str_num::<u128>(M, m, "value").unwrap_or(0);
            let in_msg = t.get("in_msg").cloned().unwrap_or(Value::Null);
            out.push(TransactionInfo {
                lt: str_num(M, id, "lt")?,
                hash,
                utime: str_num(M, t, "utime")?,
                fee: str_num(M, t, "fee")?,
                in_source: in_msg
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                in_value: msg_value(&in_msg),
                out: t
                    .get("out_msgs")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|m| {
                                let dst = m.get("destination").and_then(Value::as_str);
                                (dst.unwrap_or_default().to_string(), msg_value(m))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                data,
            });
        }
        Ok(out)
    }

    /// The latest masterchain block's seqno and, where the server says, its time.
    pub async fn get_masterchain_info(&self) -> Result<(u64, Option<u32>), ClientError> {
        const M: &str = "getMasterchainInfo";
        let r = self.call(M, None, None).await?;
        let last = r.get("last").ok_or_else(|| decode(M, "no last block"))?;
        let now = r
            .get("now")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        Ok((str_num(M, last, "seqno")?, now))
    }

    /// A wallet's seqno (0 if it is not deployed yet).
    pub async fn wallet_seqno(&self, wallet: &StdAddr) -> Result<u32, ClientError> {
        const M: &str = "runGetMethod";
        let r = self.run_get_method(wallet, "seqno", &[]).await?;
        if r.exit_code == -13 {
            return Ok(0);
        }
        if r.exit_code != 0 && r.exit_code != 1 {
            return Err(decode(M, format!("seqno exited with {}", r.exit_code)));
        }
        r.stack
            .first()
            .and_then(StackEntry::as_u128)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| decode(M, "seqno is not a u32"))
    }

    /// The channel's `get_channel_data`, decoded (`None`: no contract there).
    pub async fn channel_data(
        &self,
        channel: &StdAddr,
    ) -> Result<Option<OnChainChannel>, ClientError> {
        const M: &str = "runGetMethod";
        let r = self
            .run_get_method(channel, "get_channel_data", &[])
            .await?;
        if r.exit_code == -13 {
            return Ok(None);
        }
        if r.exit_code != 0 && r.exit_code != 1 {
            return Err(decode(
                M,
                format!("get_channel_data exited with {}", r.exit_code),
            ));
        }
        decode_channel_data(&r.stack)
            .map(Some)
            .map_err(|e| decode(M, e))
    }

    /// Local chain only: moves the clock forward; returns the new time.
    pub async fn advance_time(&self, seconds: u32) -> Result<u32, ClientError> {
        const M: &str = "admin/advanceTime";
        let r = self
            .call(M, None, Some(json!({"seconds": seconds})))
            .await?;
        str_num(M, &r, "now")
    }

    /// Local chain only: mints `amount` nanotons to `addr`; returns its balance.
    pub async fn fund(&self, addr: &StdAddr, amount: u128) -> Result<u128, ClientError> {
        const M: &str = "admin/fund";
        let r = self
            .call(
                M,
                None,
                Some(json!({"address": raw(addr), "amount": amount.to_string()})),
            )
            .await?;
        str_num(M, &r, "balance")
    }
}

/// Decodes `get_channel_data`'s stack: `(state, [bal_a, bal_b], [key_a, key_b], id,
/// [quarantine_duration, fine, conditional_close_duration], [seqno_a, seqno_b],
/// quarantine cell or null, [excess_fee, addr_a, addr_b])`.
pub fn decode_channel_data(stack: &[StackEntry]) -> Result<OnChainChannel, String> {
    let pair = |i: usize, what: &str| -> Result<(&StackEntry, &StackEntry), String> {
        match stack.get(i).and_then(StackEntry::as_tuple) {
            Some([a, b, ..]) => Ok((a, b)),
            _ => Err(format!("{what}: expected a tuple")),
        }
    };
    let num =
        |e: &StackEntry, what: &str| e.as_u128().ok_or_else(|| format!("{what}: not a number"));
    let key =
        |e: &StackEntry, what: &str| e.as_bytes32().ok_or_else(|| format!("{what}: not a key"));
    let state = stack
        .first()
        .and_then(StackEntry::as_u128)
        .and_then(|s| u8::try_from(s).ok())
        .ok_or("state: not a small number")?;
    let (ba, bb) = pair(1, "balances")?;
    let (ka, kb) = pair(2, "keys")?;
    let id = stack
        .get(3)
        .and_then(StackEntry::as_u128)
        .ok_or("channel id: not a u128")?;
    let closing = match stack.get(4).and_then(StackEntry::as_tuple) {
        Some([q, fine, cc, ..]) => ClosingConfig {
            quarantine_duration: u32::try_from(num(q, "quarantine")?).map_err(|e| e.to_string())?,
            misbehavior_fine: NanoTon(num(fine, "fine")?),
            conditional_close_duration: u32::try_from(num(cc, "conditional close")?)
                .map_err(|e| e.to_string())?,
        },
        _ => return Err("closing config: expected a 3-tuple".into()),
    };
    let (sa, sb) = pair(5, "seqnos")?;
    let seqno = |e: &StackEntry, w: &str| -> Result<u64, String> {
        u64::try_from(num(e, w)?).map_err(|e| e.to_string())
    };
    let quarantine = match stack.get(6) {
        Some(StackEntry::Cell(c)) => {
            Some(QuarantinedState::from_cell(c).map_err(|e| format!("quarantine: {e}"))?)
        }
        Some(StackEntry::Null) | None => None,
        Some(_) => return Err("quarantine: expected a cell or null".into()),
    };
    let dest = |e: &StackEntry, what: &str| -> Result<StdAddress, String> {
        match e {
            StackEntry::Slice(c) | StackEntry::Cell(c) => {
                StdAddress::load(&mut c.as_slice_allow_exotic()).map_err(|e| format!("{what}: {e}"))
            }
            _ => Err(format!("{what}: not a slice")),
        }
    };
    let (dest_a, dest_b) = match stack.get(7).and_then(StackEntry::as_tuple) {
        Some([_, a, b, ..]) => (dest(a, "payout address A")?, dest(b, "payout address B")?),
        _ => return Err("payment config: expected a 3-tuple".into()),
    };
    Ok(OnChainChannel {
        dest_a,
        dest_b,
        state,
        balance_a: NanoTon(num(ba, "balance A")?),
        balance_b: NanoTon(num(bb, "balance B")?),
        key_a: key(ka, "key A")?,
        key_b: key(kb, "key B")?,
        channel_id: ChannelId(id),
        closing,
        committed_seqnos: (seqno(sa, "seqno A")?, seqno(sb, "seqno B")?),
        quarantine,
    })
}

/// What a worker expects of a channel a client names.
#[derive(Clone, Debug)]
pub struct ExpectedChannel {
    /// The channel id.
    pub channel_id: ChannelId,
    /// A's key (the client's when the client is A).
    pub key_a: [u8; 32],
    /// B's key.
    pub key_b: [u8; 32],
    /// Which side pays.
    pub payer: Side,
    /// The deposit the payer claims (at least this much must be on its side).
    pub deposit: NanoTon,
    /// Where the payee's payouts must go (its own wallet): a channel paying out
    /// elsewhere pays the worker nothing.
    pub payee_dest: StdAddress,
}

/// Why a channel is not fit to serve against.
#[derive(Debug, Error)]
pub enum ChannelCheckError {
    /// The API failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// No active contract at that address.
    #[error("no active contract at {0}")]
    NotDeployed(String),
    /// The contract there is not the official payment channel.
    #[error(
        "contract at {address} has code hash {found}, not the payment channel's {CHANNEL_CODE_HASH}"
    )]
    WrongCode {
        /// The address.
        address: String,
        /// Its code hash.
        found: String,
    },
    /// Different keys.
    #[error("channel keys differ from those expected")]
    WrongKeys,
    /// A different channel id.
    #[error("channel id {found} on chain, expected {expected}")]
    WrongChannelId {
        /// On chain.
        found: u128,
        /// Expected.
        expected: u128,
    },
    /// The payee's payouts go to another address.
    #[error("payee's payouts go to {found:?}, not to {expected:?}")]
    WrongPayoutAddress {
        /// On chain.
        found: StdAddress,
        /// Expected.
        expected: StdAddress,
    },
    /// Not open (not inited, or closing).
    #[error("channel is in state {0}, not open (1)")]
    NotOpen(u8),
    /// Less deposited than claimed.
    #[error("deposit on chain {found} nanoton, claimed {claimed}")]
    DepositTooLow {
        /// On chain.
        found: u128,
        /// Claimed.
        claimed: u128,
    },
}

/// Checks on chain, before serving, that `channel` runs the official payment-channel
/// code, is open, carries the expected id and both keys, pays the payee's payouts to
/// the payee's address, and that the payer's balance covers the deposit claimed. Returns what the chain holds.
pub async fn verify_channel_on_chain(
    client: &TonClient,
    channel: &StdAddr,
    expected: &ExpectedChannel,
) -> Result<OnChainChannel, ChannelCheckError> {
    let info = client.get_address_information(channel).await?;
    let code = match (info.state.as_str(), info.code) {
        ("active", Some(code)) => code,
        _ => return Err(ChannelCheckError::NotDeployed(raw(channel))),
    };
    let found = hex::encode(code.repr_hash().0);
    if found != CHANNEL_CODE_HASH {
        return Err(ChannelCheckError::WrongCode {
            address: raw(channel),
            found,
        });
    }
    let data = client
        .channel_data(channel)
        .await?
        .ok_or_else(|| ChannelCheckError::NotDeployed(raw(channel)))?;
    if data.channel_id != expected.channel_id {
        return Err(ChannelCheckError::WrongChannelId {
            found: data.channel_id.0,
            expected: expected.channel_id.0,
        });
    }
    if data.key_a != expected.key_a || data.key_b != expected.key_b {
        return Err(ChannelCheckError::WrongKeys);
    }
    let payee_dest = match expected.payer {
        Side::A => data.dest_b,
        Side::B => data.dest_a,
    };
    if payee_dest != expected.payee_dest {
        return Err(ChannelCheckError::WrongPayoutAddress {
            found: payee_dest,
            expected: expected.payee_dest,
        });
    }
    if data.state != channel_state::OPEN {
        return Err(ChannelCheckError::NotOpen(data.state));
    }
    let found = match expected.payer {
        Side::A => data.balance_a,
        Side::B => data.balance_b,
    };
    if found < expected.deposit {
        return Err(ChannelCheckError::DepositTooLow {
            found: found.0,
            claimed: expected.deposit.0,
        });
    }
    Ok(data)
}
