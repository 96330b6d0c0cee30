//! The node's payment channels: opening one with a peer (store first, then the chain,
//! then the peer), answering a peer's open and close requests on `/cocoon/channel/1`,
//! closing cooperatively (the peer co-signs) or uncooperatively, listing channels with
//! their state on chain, and the watcher over every channel in the store.
//!
//! Keys: a node's key in its channels is its identity key (the ed25519 key its peers
//! verify announcements with), so a peer's channel key comes from its verified
//! announcement; its TON wallet (`DATA_DIR/ton-wallet.key`) pays deposits and gas and
//! receives payouts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cocoon_protocol::channel::acceptance::{self, zero_body};
use cocoon_protocol::channel::keys::{sign_hash, verify_hash, verifying_key};
use cocoon_protocol::channel::messages::StartCloseBody;
use cocoon_protocol::channel::state::{close_body_for, sign_state};
use cocoon_protocol::channel::{
    ChannelId, ChannelMessage, ChannelParams, ChannelStorage, CloseBody, ClosingConfig, NanoTon,
    OneSigned, PaymentConfig, Price, Side, SignedBody, SignedSemiChannel, StdAddress, TwoSigned,
};
use cocoon_protocol::identity::peer_id_of;
use cocoon_protocol::proto::channel::{
    ChannelRequest, ChannelResponse, CloseProposal, CloseSigned, OpenAccepted, OpenNotice,
    channel_request, channel_response,
};
use cocoon_ton::address::{parse_address, raw};
use cocoon_ton::channel_ops::{DEFAULT_GAS_MONEY, address_of, channel_state_init};
use cocoon_ton::client::{
    ClientConfig, ExpectedChannel, OnChainChannel, TonClient, channel_state,
    verify_channel_on_chain,
};
use cocoon_ton::local_chain::{load_channel_code, load_wallet_code};
use cocoon_ton::onchain::{open_channel, send_channel_message};
use cocoon_ton::store::{ChannelInfo, ChannelRecord, ChannelStore, Role};
use cocoon_ton::wallet::{WalletV4, load_or_create_key};
use cocoon_ton::watcher::Watcher;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use libp2p::PeerId;
use rand::RngCore;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::models::StdAddr;

use super::meter::{MeterSource, Meters, PayeeMeter, PayerMeter, Shared};
use super::wire::{CHANNEL_PROTOCOL, read_frame, write_frame};
use crate::control::api::{ChannelCloseReport, ChannelRow};

/// Nanotons in one toncoin.
const TON: u128 = 1_000_000_000;
/// Quarantine of an uncooperative close, seconds: the other side's time to challenge.
const QUARANTINE_SECS: u32 = 3600;
/// Conditional-close window after the quarantine, seconds.
const CONDITIONAL_CLOSE_SECS: u32 = 1800;
/// How often the watcher looks at every channel.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// A request to a peer gives up after this long.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the node's TON chain is.
#[derive(Clone, Debug)]
pub struct TonSettings {
    /// toncenter-v2 base URL.
    pub url: String,
    /// API key, if any.
    pub api_key: Option<String>,
}

/// The node's channels: its wallet, its channel key, the chain and the store.
pub struct Channels {
    client: TonClient,
    wallet: WalletV4,
    wallet_addr: StdAddr,
    key: SigningKey,
    code: Cell,
    store: Arc<ChannelStore>,
    control: libp2p_stream::Control,
    meters: Meters,
    /// Held while a channel is opened on demand, so concurrent sessions open one.
    opening: tokio::sync::Mutex<()>,
}

fn std_address(a: &StdAddr) -> StdAddress {
    StdAddress {
        workchain: a.workchain,
        account: a.address.0,
    }
}

fn channel_hex(id: u128) -> String {
    format!("{id:032x}")
}

fn side_of(rec: &ChannelRecord) -> Side {
    if rec.we_are_a { Side::A } else { Side::B }
}

fn state_name(state: u8) -> &'static str {
    match state {
        channel_state::UNINITED => "uninited",
        channel_state::OPEN => "open",
        channel_state::CLOSURE_STARTED => "closing",
        channel_state::SETTLING_CONDITIONALS => "settling",
        channel_state::AWAITING_FINALIZATION => "awaiting-finalization",
        _ => "unknown",
    }
}

/// The state's name, `closed` for a channel that was inited once and is empty now.
fn chain_state_name(d: &OnChainChannel) -> &'static str {
    let closed = d.state == channel_state::UNINITED
        && d.balance_a.0 == 0
        && d.balance_b.0 == 0
        && d.committed_seqnos != (0, 0);
    if closed {
        "closed"
    } else {
        state_name(d.state)
    }
}

impl Channels {
    /// Opens the store (`DATA_DIR/channels.redb`), the wallet (`ton-wallet.key`, created
    /// if missing) and the contract code from the setup cache.
    pub fn load(
        data_dir: &Path,
        ton: &TonSettings,
        identity_seed: &[u8; 32],
        control: libp2p_stream::Control,
    ) -> anyhow::Result<Arc<Self>> {
        let key_path = crate::cmd::ton::wallet_key_path(data_dir);
        let wallet_key = load_or_create_key(&key_path)
            .with_context(|| format!("loading the wallet key {}", key_path.display()))?;
        let wallet_code =
            load_wallet_code().context("the wallet contract code (run scripts/setup)")?;
        let code = load_channel_code().context("the payment-channel code (run scripts/setup)")?;
        let wallet = WalletV4::new(wallet_code, wallet_key);
        let wallet_addr = wallet.address().context("deriving the wallet address")?;
        let client = TonClient::new(ClientConfig {
            url: ton.url.clone(),
            api_key: ton.api_key.clone(),
            timeout: Duration::from_secs(15),
        })
        .context("the TON client")?;
        let store_path = data_dir.join("channels.redb");
        let store = ChannelStore::open(&store_path)
            .with_context(|| format!("opening {}", store_path.display()))?;
        Ok(Arc::new(Self {
            client,
            wallet,
            wallet_addr,
            key: SigningKey::from_bytes(identity_seed),
            code,
            store: Arc::new(store),
            control,
            meters: Meters::default(),
            opening: tokio::sync::Mutex::new(()),
        }))
    }

    /// This node's wallet address.
    pub fn wallet_address(&self) -> &StdAddr {
        &self.wallet_addr
    }

    /// Starts answering peers on `/cocoon/channel/1` and the watcher over every channel
    /// in the store; both stop when `shutdown` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut incoming = self
            .control
            .clone()
            .accept(CHANNEL_PROTOCOL)
            .map_err(|_| anyhow::anyhow!("channel protocol registered twice"))?;
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((peer, mut stream)) = incoming.next().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let served = async {
                        let req: ChannelRequest = read_frame(&mut stream).await?;
                        let resp = me.answer(peer, req).await;
                        write_frame(&mut stream, &resp).await
                    };
                    if let Err(e) = tokio::time::timeout(PEER_TIMEOUT, served)
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
                    {
                        tracing::warn!(%peer, "channel request: {e:#}");
                    }
                });
            }
        });
        let watcher = Watcher::new(
            self.client.clone(),
            self.wallet.clone(),
            self.key.clone(),
            self.store.clone(),
        );
        let store = self.store.clone();
        tokio::spawn(async move {
            let channels = move || match store.infos() {
                Ok(infos) => infos
                    .iter()
                    .map(|i| StdAddr::new(i.workchain, HashBytes(i.account)))
                    .collect(),
                Err(e) => {
                    tracing::warn!("watcher: reading the channel store: {e}");
                    Vec::new()
                }
            };
            watcher.run(channels, WATCH_EVERY, shutdown).await;
        });
        Ok(())
    }

    fn params(&self, info: &ChannelInfo) -> anyhow::Result<(ChannelStorage, ChannelParams)> {
        let cell = Boc::decode(&info.storage_boc).context("stored channel storage")?;
        let storage = ChannelStorage::from_cell(&cell).context("stored channel storage")?;
        let params = ChannelParams {
            channel_id: storage.channel_id,
            key_a: verifying_key(&storage.key_a)?,
            key_b: verifying_key(&storage.key_b)?,
            deposit_a: NanoTon(info.deposit_a),
            deposit_b: NanoTon(info.deposit_b),
            closing: storage.closing,
        };
        Ok((storage, params))
    }

    /// Finds a channel by id (hex, with or without `0x`) or by contract address.
    fn find(&self, id: &str) -> anyhow::Result<(ChannelInfo, ChannelRecord)> {
        let infos = self.store.infos()?;
        let by_addr = parse_address(id).ok();
        let hex = id.trim_start_matches("0x").to_ascii_lowercase();
        let info = infos
            .into_iter()
            .find(|i| {
                channel_hex(i.channel_id) == format!("{hex:0>32}")
                    || by_addr
                        .as_ref()
                        .is_some_and(|a| a.workchain == i.workchain && a.address.0 == i.account)
            })
            .with_context(|| format!("no channel {id} in this node's store"))?;
        let rec = self
            .store
            .load(ChannelId(info.channel_id))?
            .with_context(|| format!("channel {id} has no state record"))?;
        Ok((info, rec))
    }

    /// The worker's meter for a session that names `channel` (address or id) and comes
    /// from `peer`: the channel must be one `peer` pays this node through, not closing.
    pub fn payee_meter(
        &self,
        peer: PeerId,
        channel: &str,
        price: Price,
        window: Option<NanoTon>,
    ) -> anyhow::Result<Shared<PayeeMeter>> {
        let (info, rec) = self.find(channel)?;
        anyhow::ensure!(
            info.peer == peer.to_string() && rec.role == Role::Payee,
            "channel {channel} is not one {peer} pays this worker through"
        );
        anyhow::ensure!(!info.close_requested, "channel {channel} is closing");
        let (_, params) = self.params(&info)?;
        let src = MeterSource {
            params,
            key: &self.key,
            store: &self.store,
        };
        self.meters.payee(src, price, window)
    }

    /// The client's channel to `peer` (its contract address) and its meter, paying at
    /// `price`: an open channel from the store, or, when there is none, a new one with
    /// `deposit` from this node's wallet.
    pub async fn payer_meter(
        &self,
        peer: PeerId,
        peer_key: [u8; 32],
        peer_wallet: &str,
        price: Price,
        deposit: NanoTon,
    ) -> anyhow::Result<(String, Shared<PayerMeter>)> {
        let _opening = self.opening.lock().await;
        let info = match self.paying_channel(peer)? {
            Some(info) => info,
            None => {
                tracing::info!(%peer, deposit = deposit.0, "opening a payment channel to pay a worker");
                let row = self.open_with(peer, peer_key, peer_wallet, deposit).await?;
                self.find(&row.channel_id)?.0
            }
        };
        let (_, params) = self.params(&info)?;
        let src = MeterSource {
            params,
            key: &self.key,
            store: &self.store,
        };
        let meter = self.meters.payer(src, price)?;
        let addr = StdAddr::new(info.workchain, HashBytes(info.account));
        Ok((raw(&addr), meter))
    }

    /// An open channel in the store through which this node pays `peer`.
    fn paying_channel(&self, peer: PeerId) -> anyhow::Result<Option<ChannelInfo>> {
        let peer = peer.to_string();
        for info in self.store.infos()? {
            if info.peer != peer || info.close_requested {
                continue;
            }
            let rec = self.store.load(ChannelId(info.channel_id))?;
            if rec.is_some_and(|r| r.role == Role::Payer) {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    /// Every channel in the store with its state on chain.
    pub async fn list(&self) -> anyhow::Result<Vec<ChannelRow>> {
        let mut rows = Vec::new();
        for info in self.store.infos()? {
            let rec = self.store.load(ChannelId(info.channel_id))?;
            rows.push(self.row(&info, rec.as_ref()).await);
        }
        Ok(rows)
    }

    async fn row(&self, info: &ChannelInfo, rec: Option<&ChannelRecord>) -> ChannelRow {
        let addr = StdAddr::new(info.workchain, HashBytes(info.account));
        let (state, balances) = match self.client.channel_data(&addr).await {
            Ok(None) => ("not-deployed".to_owned(), None),
            Ok(Some(d)) => (
                chain_state_name(&d).to_owned(),
                Some((d.balance_a.0, d.balance_b.0)),
            ),
            Err(e) => (format!("unknown: {e}"), None),
        };
        let role = rec.map(|r| r.role);
        let sent = rec.map_or(0, |r| r.sent);
        ChannelRow {
            channel_id: channel_hex(info.channel_id),
            address: raw(&addr),
            peer: info.peer.clone(),
            role: match role {
                Some(Role::Payer) => "payer",
                Some(Role::Payee) => "payee",
                None => "unknown",
            }
            .to_owned(),
            deposit_nanoton: info.deposit_a,
            sent_nanoton: if role == Some(Role::Payer) { sent } else { 0 },
            received_nanoton: if role == Some(Role::Payee) { sent } else { 0 },
            seqno: rec.map_or(0, |r| r.seqno),
            prompt_tokens: rec.map_or(0, |r| r.prompt_tokens),
            completion_tokens: rec.map_or(0, |r| r.completion_tokens),
            state,
            balances_nanoton: balances,
        }
    }

    async fn ask(
        &self,
        peer: PeerId,
        req: ChannelRequest,
    ) -> anyhow::Result<channel_response::Kind> {
        let exchange = async {
            let mut stream = self
                .control
                .clone()
                .open_stream(peer, CHANNEL_PROTOCOL)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open a channel stream to {peer}: {e}"))?;
            write_frame(&mut stream, &req).await?;
            let resp: ChannelResponse = read_frame(&mut stream).await?;
            anyhow::Ok(resp)
        };
        let resp = tokio::time::timeout(PEER_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("{peer} did not answer within {PEER_TIMEOUT:?}"))??;
        match resp.kind {
            Some(channel_response::Kind::Error(e)) => bail!("{peer} refused: {e}"),
            Some(k) => Ok(k),
            None => bail!("{peer} sent an empty answer"),
        }
    }

    /// Opens a channel paying `peer` (whose channel key and wallet come from its verified
    /// announcement), depositing `deposit` from this node's wallet. The channel is in
    /// the store before anything goes to the peer or the chain.
    pub async fn open_with(
        &self,
        peer: PeerId,
        peer_key: [u8; 32],
        peer_wallet: &str,
        deposit: NanoTon,
    ) -> anyhow::Result<ChannelRow> {
        anyhow::ensure!(deposit.0 > 0, "the deposit must be above zero");
        anyhow::ensure!(
            peer_id_of(&peer_key).is_ok_and(|p| p == peer),
            "peer {peer}'s announced key does not match its id"
        );
        let peer_addr = parse_address(peer_wallet)
            .map_err(|e| anyhow::anyhow!("peer {peer} announces wallet {peer_wallet:?}: {e}"))?;
        let gas = DEFAULT_GAS_MONEY;
        let balance = self.client.get_address_balance(&self.wallet_addr).await?;
        // The deposit, the gas carried by the deploy and the init, and the wallet's fees.
        let need = deposit.0 + 3 * gas;
        anyhow::ensure!(
            balance >= need,
            "wallet {} holds {} nanoton; opening needs {need} (deposit, gas and fees)",
            raw(&self.wallet_addr),
            balance
        );
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let channel_id = ChannelId(u128::from_be_bytes(id));
        let storage = ChannelStorage::initial(
            self.key.verifying_key().to_bytes(),
            peer_key,
            channel_id,
            ClosingConfig {
                quarantine_duration: QUARANTINE_SECS,
                misbehavior_fine: NanoTon(0),
                conditional_close_duration: CONDITIONAL_CLOSE_SECS,
            },
            PaymentConfig {
                excess_fee: NanoTon(TON / 100),
                dest_a: std_address(&self.wallet_addr),
                dest_b: std_address(&peer_addr),
            },
        );
        let addr = address_of(&channel_state_init(self.code.clone(), &storage)?)?;
        let storage_boc = Boc::encode(storage.to_cell()?);
        let own = sign_state(channel_id, &self.key, zero_body(), Some(zero_body()))?;
        let mut notice = OpenNotice {
            workchain: i32::from(addr.workchain),
            account: addr.address.0.to_vec(),
            storage_boc: storage_boc.clone(),
            deposit_nanoton: u64::try_from(deposit.0).context("deposit too large")?,
            payer_state_boc: own.to_boc()?,
            deployed: false,
        };
        // 1. The peer agrees and hands over its signed zero state.
        let theirs = self.ask_open(peer, &notice, &peer_key, channel_id).await?;
        // 2. The store, before the chain.
        let info = ChannelInfo {
            channel_id: channel_id.0,
            workchain: addr.workchain,
            account: addr.address.0,
            peer: peer.to_string(),
            storage_boc,
            deposit_a: deposit.0,
            deposit_b: 0,
            counterparty_boc: theirs.to_boc()?,
            close_requested: false,
        };
        self.store.put_info(&info)?;
        self.store.commit(&ChannelRecord {
            channel_id: channel_id.0,
            role: Role::Payer,
            we_are_a: true,
            seqno: 0,
            sent: 0,
            state_boc: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
        })?;
        // 3. Deploy, top up and init in one wallet transfer.
        open_channel(
            &self.client,
            &self.wallet,
            &self.key,
            self.code.clone(),
            &storage,
            deposit,
            gas,
        )
        .await
        .context("sending the channel's deploy, top-up and init")?;
        let data = self.client.channel_data(&addr).await?;
        match &data {
            Some(d) if d.state == channel_state::OPEN && d.balance_a == deposit => {}
            other => bail!(
                "channel {} did not open on chain (found {:?})",
                raw(&addr),
                other.as_ref().map(|d| (state_name(d.state), d.balance_a.0))
            ),
        }
        // 4. The peer checks the chain and records it.
        notice.deployed = true;
        if let Err(e) = self.ask_open(peer, &notice, &peer_key, channel_id).await {
            bail!(
                "channel {} is open on chain but {peer} did not confirm it ({e:#}); \
                 close it with `cocoon channel close {} --force`",
                raw(&addr),
                channel_hex(channel_id.0)
            );
        }
        let rec = self.store.load(channel_id)?;
        Ok(self.row(&info, rec.as_ref()).await)
    }

    async fn ask_open(
        &self,
        peer: PeerId,
        notice: &OpenNotice,
        peer_key: &[u8; 32],
        channel_id: ChannelId,
    ) -> anyhow::Result<SignedSemiChannel> {
        let req = ChannelRequest {
            kind: Some(channel_request::Kind::Open(notice.clone())),
        };
        let channel_response::Kind::Opened(ok) = self.ask(peer, req).await? else {
            bail!("{peer} answered an open with something else");
        };
        Ok(acceptance::check_zero_state(
            &ok.own_state_boc,
            peer_key,
            Side::B,
            channel_id,
        )?)
    }

    /// Answers one request from `peer`.
    async fn answer(&self, peer: PeerId, req: ChannelRequest) -> ChannelResponse {
        let kind = match req.kind {
            Some(channel_request::Kind::Open(n)) => self
                .answer_open(peer, n)
                .await
                .map(channel_response::Kind::Opened),
            Some(channel_request::Kind::Close(c)) => self
                .answer_close(peer, c)
                .map(channel_response::Kind::CloseSigned),
            None => Err(anyhow::anyhow!("empty request")),
        };
        ChannelResponse {
            kind: Some(kind.unwrap_or_else(|e| {
                tracing::warn!(%peer, "refused a channel request: {e:#}");
                channel_response::Kind::Error(format!("{e:#}"))
            })),
        }
    }

    async fn answer_open(&self, peer: PeerId, n: OpenNotice) -> anyhow::Result<OpenAccepted> {
        let me = self.key.verifying_key().to_bytes();
        let payouts = std_address(&self.wallet_addr);
        let payee = acceptance::Payee {
            key: &me,
            payouts: &payouts,
            requester: &peer,
        };
        let open = acceptance::check_open(&n, payee)?;
        let storage = &open.storage;
        let addr = address_of(&channel_state_init(self.code.clone(), storage)?)?;
        acceptance::check_open_address(&open, &std_address(&addr))?;
        let known = self.store.info(storage.channel_id)?.map(|k| k.peer);
        acceptance::check_channel_owner(known.as_deref(), &peer)?;
        let (payer_state, deposit) = (&open.payer_state, open.deposit);
        if n.deployed {
            verify_channel_on_chain(
                &self.client,
                &addr,
                &ExpectedChannel {
                    channel_id: storage.channel_id,
                    key_a: storage.key_a,
                    key_b: storage.key_b,
                    payer: Side::A,
                    deposit,
                    payee_dest: std_address(&self.wallet_addr),
                },
            )
            .await
            .context("checking the channel on chain")?;
            if self.store.info(storage.channel_id)?.is_none() {
                self.store.put_info(&ChannelInfo {
                    channel_id: storage.channel_id.0,
                    workchain: addr.workchain,
                    account: addr.address.0,
                    peer: peer.to_string(),
                    storage_boc: n.storage_boc.clone(),
                    deposit_a: deposit.0,
                    deposit_b: 0,
                    counterparty_boc: payer_state.to_boc()?,
                    close_requested: false,
                })?;
                self.store.commit(&ChannelRecord {
                    channel_id: storage.channel_id.0,
                    role: Role::Payee,
                    we_are_a: false,
                    seqno: 0,
                    sent: 0,
                    state_boc: Vec::new(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                })?;
                tracing::info!(%peer, channel = %raw(&addr), deposit = deposit.0, "channel opened by a peer");
            }
        }
        let own = sign_state(
            storage.channel_id,
            &self.key,
            zero_body(),
            Some(zero_body()),
        )?;
        Ok(OpenAccepted {
            own_state_boc: own.to_boc()?,
        })
    }

    /// The cooperative close this node would sign: payouts from the latest states.
    fn expected_close(&self, info: &ChannelInfo, rec: &ChannelRecord) -> anyhow::Result<CloseBody> {
        let (_, params) = self.params(info)?;
        // The opener, side A, pays: both sides' records hold A's latest body (signed, or
        // accepted); B sends nothing, so its body stays the zero state.
        Ok(close_body_for(&params, &rec.body(), &zero_body())?)
    }

    fn answer_close(&self, peer: PeerId, c: CloseProposal) -> anyhow::Result<CloseSigned> {
        let id = acceptance::close_channel_id(&c)?;
        let (mut info, rec) = self.find(&channel_hex(id.0))?;
        let want = self.expected_close(&info, &rec)?;
        acceptance::check_close(&c, &peer, &info.peer, &want)?;
        info.close_requested = true;
        self.store.put_info(&info)?;
        Ok(CloseSigned {
            signature: sign_hash(&self.key, &want.signing_hash()?).to_vec(),
        })
    }

    /// Closes channel `id`: cooperatively (the peer co-signs the payouts of the latest
    /// states and this node sends the close), or with `force` by starting an
    /// uncooperative close with the latest states both sides signed.
    pub async fn close(&self, id: &str, force: bool) -> anyhow::Result<ChannelCloseReport> {
        let (mut info, rec) = self.find(id)?;
        let (_, params) = self.params(&info)?;
        let addr = StdAddr::new(info.workchain, HashBytes(info.account));
        let peer: PeerId = info.peer.parse().context("stored peer id")?;
        let us = side_of(&rec);
        match self.client.channel_data(&addr).await? {
            Some(d) if d.state == channel_state::OPEN => {}
            Some(d) => bail!(
                "channel {} is {} on chain, not open",
                raw(&addr),
                chain_state_name(&d)
            ),
            None => bail!("channel {} is not deployed", raw(&addr)),
        }
        let msg = if force {
            let ours = match rec.state()? {
                Some(s) if rec.role == Role::Payer => s,
                _ => {
                    let body = if rec.role == Role::Payer {
                        rec.body()
                    } else {
                        zero_body()
                    };
                    let theirs = if rec.role == Role::Payee {
                        rec.body()
                    } else {
                        zero_body()
                    };
                    sign_state(params.channel_id, &self.key, body, Some(theirs))?
                }
            };
            let theirs = match (rec.role, rec.state()?) {
                (Role::Payee, Some(s)) => s,
                _ => SignedSemiChannel::from_boc(&info.counterparty_boc)
                    .context("no signed state of the other side is held")?,
            };
            let (sch_a, sch_b) = match us {
                Side::A => (ours, theirs),
                Side::B => (theirs, ours),
            };
            let body = StartCloseBody {
                channel_id: params.channel_id,
                sch_a,
                sch_b,
            };
            ChannelMessage::StartUncooperativeClose(OneSigned::sign(us, &self.key, body)?)
        } else {
            let body = self.expected_close(&info, &rec)?;
            let proposal = CloseProposal {
                channel_id: params.channel_id.0.to_be_bytes().to_vec(),
                balance_a_nanoton: u64::try_from(body.balance_a.0).context("balance A")?,
                balance_b_nanoton: u64::try_from(body.balance_b.0).context("balance B")?,
                seqno_a: body.seqno_a.0,
                seqno_b: body.seqno_b.0,
            };
            let req = ChannelRequest {
                kind: Some(channel_request::Kind::Close(proposal)),
            };
            let channel_response::Kind::CloseSigned(signed) = self.ask(peer, req).await? else {
                bail!("{peer} answered a close with something else");
            };
            let theirs: [u8; 64] = signed
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("{peer}'s signature is not 64 bytes"))?;
            let hash = body.signing_hash()?;
            verify_hash(params.key(us.other()), &hash, &theirs, us.other())
                .context("the peer's close signature")?;
            let ours = sign_hash(&self.key, &hash);
            let (sig_a, sig_b) = match us {
                Side::A => (ours, theirs),
                Side::B => (theirs, ours),
            };
            ChannelMessage::CooperativeClose(TwoSigned { sig_a, sig_b, body })
        };
        info.close_requested = true;
        self.store.put_info(&info)?;
        send_channel_message(&self.client, &self.wallet, &addr, &msg, DEFAULT_GAS_MONEY)
            .await
            .context("sending the close")?;
        let row = self.row(&info, Some(&rec)).await;
        Ok(ChannelCloseReport {
            channel_id: channel_hex(info.channel_id),
            address: raw(&addr),
            kind: if force {
                "uncooperative"
            } else {
                "cooperative"
            }
            .to_owned(),
            row,
        })
    }
}
