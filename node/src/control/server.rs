//! The daemon's side of the control API (axum on 127.0.0.1). Handlers forward each
//! request to the swarm loop over a channel and wait for its answer; `/metrics` renders
//! the Prometheus registry.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::api::{
    ChannelCloseReport, ChannelRow, ForgeKind, ModelInfo, PeerDetail, PeerInfo, PingReport,
    RoutesInfo, StatusInfo,
};

/// A request from a handler to the swarm loop.
pub enum ControlRequest {
    Status(oneshot::Sender<StatusInfo>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Peer(String, oneshot::Sender<Result<PeerDetail, String>>),
    Ping(String, u32, oneshot::Sender<Result<PingReport, String>>),
    Models(oneshot::Sender<Vec<ModelInfo>>),
    Forge(ForgeKind, oneshot::Sender<Result<String, String>>),
    /// Model (hex id, or empty for this node's), how many chains.
    Routes(String, usize, oneshot::Sender<Result<RoutesInfo, String>>),
    /// This node's payment channels.
    Channels(oneshot::Sender<Result<Vec<ChannelRow>, String>>),
    /// Open a channel to a peer with a deposit in nanoton.
    ChannelOpen(String, u128, oneshot::Sender<Result<ChannelRow, String>>),
    /// Close a channel (id or address), uncooperatively when `true`.
    ChannelClose(
        String,
        bool,
        oneshot::Sender<Result<ChannelCloseReport, String>>,
    ),
}

#[derive(Clone)]
struct AppState {
    cookie: Arc<String>,
    requests: mpsc::Sender<ControlRequest>,
    registry: Arc<Mutex<Registry>>,
    forge_enabled: bool,
}

/// Binds 127.0.0.1:`port` and returns the bound address and the server future.
pub async fn bind(
    port: u16,
    cookie: String,
    requests: mpsc::Sender<ControlRequest>,
    registry: Arc<Mutex<Registry>>,
    forge_enabled: bool,
) -> anyhow::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let state = AppState {
        cookie: Arc::new(cookie),
        requests,
        registry,
        forge_enabled,
    };
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/peers/{id}", get(peer))
        .route("/v1/peers/{id}/ping", post(ping))
        .route("/v1/models", get(models))
        .route("/v1/routes", get(routes))
        .route("/v1/dev/forge", post(forge))
        .route("/v1/channels", get(channels))
        .route("/v1/channels/open", post(channel_open))
        .route("/v1/channels/{id}/close", post(channel_close))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_cookie,
        ))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("binding the control API on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr().context("control API address")?;
    Ok((addr, async move { axum::serve(listener, app).await }))
}

async fn require_cookie(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !super::secrets_equal(presented.trim().as_bytes(), state.cookie.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong control cookie (send Authorization: Bearer <data dir>/control.cookie)\n",
        )
            .into_response();
    }
    next.run(req).await
}

async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let gone = || (StatusCode::SERVICE_UNAVAILABLE, "node is shutting down\n").into_response();
    state.requests.send(make(tx)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

async fn status(State(s): State<AppState>) -> Result<Json<StatusInfo>, Response> {
    Ok(Json(ask(&s, ControlRequest::Status).await?))
}

async fn peers(State(s): State<AppState>) -> Result<Json<Vec<PeerInfo>>, Response> {
    Ok(Json(ask(&s, ControlRequest::Peers).await?))
}

async fn peer(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PeerDetail>, Response> {
    ask(&s, |tx| ControlRequest::Peer(id, tx))
        .await?
        .map(Json)
        .map_err(|e| (StatusCode::NOT_FOUND, e).into_response())
}

#[derive(Deserialize)]
struct PingQuery {
    count: Option<u32>,
}

async fn ping(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PingQuery>,
) -> Result<Json<PingReport>, Response> {
    let count = q.count.unwrap_or(3).clamp(1, 100);
    ask(&s, |tx| ControlRequest::Ping(id, count, tx))
        .await?
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())
}

async fn models(State(s): State<AppState>) -> Result<Json<Vec<ModelInfo>>, Response> {
    Ok(Json(ask(&s, ControlRequest::Models).await?))
}

#[derive(Deserialize)]
struct RoutesQuery {
    model: Option<String>,
    k: Option<usize>,
}

async fn routes(
    State(s): State<AppState>,
    Query(q): Query<RoutesQuery>,
) -> Result<Json<RoutesInfo>, Response> {
    let k = q.k.unwrap_or(3).clamp(1, 20);
    ask(&s, |tx| {
        ControlRequest::Routes(q.model.unwrap_or_default(), k, tx)
    })
    .await?
    .map(Json)
    .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())
}

async fn channels(State(s): State<AppState>) -> Result<Json<Vec<ChannelRow>>, Response> {
    ask(&s, ControlRequest::Channels)
        .await?
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())
}

#[derive(Deserialize)]
struct OpenQuery {
    peer: String,
    /// Decimal (query strings carry no u128).
    deposit_nanoton: String,
}

async fn channel_open(
    State(s): State<AppState>,
    Query(q): Query<OpenQuery>,
) -> Result<Json<ChannelRow>, Response> {
    let deposit = q.deposit_nanoton.parse::<u128>().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            format!("deposit_nanoton {:?} is not a number\n", q.deposit_nanoton),
        )
            .into_response()
    })?;
    ask(&s, |tx| ControlRequest::ChannelOpen(q.peer, deposit, tx))
        .await?
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())
}

#[derive(Deserialize)]
struct CloseQuery {
    #[serde(default)]
    force: bool,
}

async fn channel_close(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CloseQuery>,
) -> Result<Json<ChannelCloseReport>, Response> {
    ask(&s, |tx| ControlRequest::ChannelClose(id, q.force, tx))
        .await?
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())
}

#[derive(Deserialize)]
struct ForgeQuery {
    kind: ForgeKind,
}

async fn forge(
    State(s): State<AppState>,
    Query(q): Query<ForgeQuery>,
) -> Result<Json<String>, Response> {
    if !s.forge_enabled {
        return Err((
            StatusCode::NOT_FOUND,
            "forging is enabled only with --dev-forge\n",
        )
            .into_response());
    }
    ask(&s, |tx| ControlRequest::Forge(q.kind, tx))
        .await?
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = String::new();
    let encoded = match s.registry.lock() {
        Ok(reg) => prometheus_client::encoding::text::encode(&mut text, &reg),
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics registry poisoned\n",
            )
                .into_response();
        }
    };
    match encoded {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}
