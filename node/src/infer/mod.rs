//! Sharded inference on the node: the worker's engine and stream service, the client's
//! remote chain of workers, and the generator behind the OpenAI API. The decisions
//! (sessions, routes) are `cocoon_protocol`'s; this module moves their bytes.

pub mod client;
pub mod engine;
pub mod generator;
pub mod tap;
pub mod worker;

use cocoon_protocol::failover::Fault;
use cocoon_protocol::route::Candidate;
use cocoon_protocol::session::CipherSuite;
use cocoon_protocol::units::ModelId;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

/// Inference streams: one end-to-end Noise session per stream, in ChaChaPoly
/// (`Noise_IK_25519_ChaChaPoly_BLAKE2s`), which every worker serves.
pub const INFER_PROTOCOL: StreamProtocol = StreamProtocol::new("/cocoon/infer/1");
/// The same sessions in `Noise_IK_25519_AESGCM_BLAKE2s`, for workers that announce it.
pub const INFER_PROTOCOL_AESGCM: StreamProtocol = StreamProtocol::new("/cocoon/infer/1/aesgcm");

/// The stream protocol of sessions in `suite`: the protocol id tells the worker the suite.
pub fn infer_protocol(suite: CipherSuite) -> StreamProtocol {
    match suite {
        CipherSuite::ChaChaPoly => INFER_PROTOCOL,
        CipherSuite::AesGcm => INFER_PROTOCOL_AESGCM,
    }
}

/// A worker as the client sees it, all from its verified announcement: its route
/// candidate, its Noise static key, and for payments its node key (its channel key) and
/// TON wallet.
#[derive(Clone, Debug)]
pub struct WorkerView {
    pub candidate: Candidate,
    pub noise_key: [u8; 32],
    pub node_key: [u8; 32],
    pub wallet: String,
    /// Session cipher suites the worker accepts.
    pub cipher_suites: Vec<CipherSuite>,
}

/// What inference asks of the daemon, which owns the peer table.
pub enum MeshQuery {
    /// Live, unbanned workers serving `model`.
    Workers {
        model: ModelId,
        reply: oneshot::Sender<Vec<WorkerView>>,
    },
    /// A hop failed: charge the fault to the worker (which may ban it). Queries are
    /// answered in order, so the next candidate list already reflects the charge.
    Charge { peer: PeerId, fault: Fault },
    /// Connect to a worker (through its announced addresses) if not connected.
    Dial { peer: PeerId },
}

/// The client's line to the daemon and to the swarm's streams.
#[derive(Clone)]
pub struct MeshLink {
    pub queries: mpsc::Sender<MeshQuery>,
    pub control: libp2p_stream::Control,
}

impl MeshLink {
    pub async fn workers(&self, model: ModelId) -> Vec<WorkerView> {
        let (reply, rx) = oneshot::channel();
        if self
            .queries
            .send(MeshQuery::Workers { model, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub fn dial(&self, peer: PeerId) {
        let _ = self.queries.try_send(MeshQuery::Dial { peer });
    }

    /// Has the daemon charge `fault` to `peer` in its peer table (nothing when it is
    /// gone: the generation's own decision stands).
    pub async fn charge(&self, peer: PeerId, fault: Fault) {
        let _ = self.queries.send(MeshQuery::Charge { peer, fault }).await;
    }
}
