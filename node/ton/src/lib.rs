//! cocoon-ton: the node's TON side, without its GPU and network stack.
//!
//! It lives beside the binary (`node/ton/`) rather than inside `node/src/` so that its
//! tests (the real payment-channel contract in an embedded TVM, crash tests of the
//! store) build without wgpu and libp2p; `cocoon` depends on it and wraps it
//! (`cocoon ton-local` serves [`local_chain`] over HTTP; the daemon keeps its channels
//! in [`store`]).
//!
//! - [`local_chain`]: an embedded TON chain: the real contracts (the official payment
//!   channel's compiled code, fetched at setup) in `tycho-vm` through `tycho-executor`,
//!   with TON's network config, on a clock the caller moves.
//! - [`store`]: channel states in `redb` (records in `bincode` 2), committed durably
//!   before the work they pay for is done.

pub mod local_chain;
pub mod store;
