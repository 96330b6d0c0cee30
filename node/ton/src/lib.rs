//! cocoon-ton: the node's TON side, without its GPU and network stack.
//!
//! It lives beside the binary (`node/ton/`) rather than inside `node/src/` so that its
//! tests (the real contracts in an embedded TVM, real sockets on 127.0.0.1, crash tests
//! of the store) build without wgpu and libp2p; `cocoon` depends on it and wraps it.
//!
//! - [`local_chain`]: an embedded TON chain: the real contracts (the official payment
//!   channel's and the standard wallet v4r2's compiled code, fetched at setup) in
//!   `tycho-vm` through `tycho-executor`, with TON's network config, on a clock the
//!   caller moves.
//! - [`server`]: `cocoon ton-local`: the local chain served as a toncenter-v2 HTTP
//!   subset on 127.0.0.1, its state in redb, devnet wallets pre-funded.
//! - [`client`]: a toncenter-v2 client (the same code talks to the local chain, testnet
//!   or mainnet), and the worker's on-chain check of a channel before serving.
//! - [`wallet`]: wallet v4r2: address, signed transfers, key files (0600).
//! - [`channel_ops`]: channel deploy, top-up and messages as wallet transfers.
//! - [`onchain`]: sending them through the wallet and the client; `open_channel`.
//! - [`watcher`]: the loop that follows channels on chain and challenges stale closes.
//! - [`store`]: channel states in `redb` (records in `bincode` 2), committed durably
//!   before the work they pay for is done.

pub mod address;
pub mod channel_ops;
pub mod client;
pub mod local_chain;
pub mod onchain;
pub mod server;
pub mod stack;
pub mod store;
pub mod wallet;
pub mod watcher;
