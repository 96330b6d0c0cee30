//! cocoon-protocol: the sans-IO core every driver (the node, the simulator) shares.
//!
//! Every decision lives here as a plain function or state machine: the current time and
//! input events go in, actions come out. Nothing in this crate owns a socket, a timer, a
//! thread or a GPU.

pub mod announce;
pub mod channel;
pub mod client;
pub mod failover;
pub mod identity;
pub mod membership;
pub mod peers;
pub mod route;
pub mod session;
pub mod tensor;
pub mod units;

/// Generated protobuf types (`protocol/proto/*.proto`), one submodule per file.
/// Announcement types are also re-exported at `proto::*`, where they first lived.
pub mod proto {
    /// `proto/announce.proto`: signed shard announcements (gossipsub).
    pub mod announce {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/cocoon.announce.v1.rs"));
    }

    /// `proto/infer.proto`: the plaintext of end-to-end inference sessions.
    pub mod infer {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/cocoon.infer.v1.rs"));
    }

    /// `proto/channel.proto`: open and close requests between a channel's two parties.
    pub mod channel {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/cocoon.channel.v1.rs"));
    }

    pub use announce::*;
}

pub use libp2p_identity::PeerId;
