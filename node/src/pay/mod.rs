//! Payments on the node: its TON payment channels ([`service`]), the
//! `/cocoon/channel/1` requests between a channel's two parties ([`wire`]), and the
//! per-token metering of inference sessions over them ([`meter`]).

pub mod meter;
pub mod service;
pub mod wire;

pub use service::{Channels, TonSettings};
