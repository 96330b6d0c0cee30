//! Payments on the node: its TON payment channels ([`service`]) and the
//! `/cocoon/channel/1` requests between a channel's two parties ([`wire`]).

pub mod service;
pub mod wire;

pub use service::{Channels, TonSettings};
