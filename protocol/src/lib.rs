//! cocoon-protocol: the sans-IO core every driver (the node, the simulator) shares.
//!
//! Every decision lives here as a plain function or state machine: the current time and
//! input events go in, actions come out. Nothing in this crate owns a socket, a timer, a
//! thread or a GPU.
pub mod channel;
