//! The OpenAI-compatible API a client node serves on 127.0.0.1: `POST
//! /v1/chat/completions` and `POST /v1/completions` (with `"stream": true` as server-sent
//! events, or whole), `GET /v1/models`. Completions run on the mesh through the
//! [`Generator`]; non-streamed answers carry a `cocoon` object (token ids, route,
//! failovers, speeds) beside OpenAI's fields.

pub mod types;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cocoon_shaders::engine::SamplingParams;
use cocoon_shaders::model::chat::ChatMessage;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::infer::generator::{GenEvent, GenFailure, GenRequest, GenSummary, Generator, Prompt};
use types::{
    ApiError, ChatCompletionRequest, CompletionRequest, ModelObject, PromptIn, Sampling, Usage,
};

/// Tokens generated when a completion request names no `max_tokens` (OpenAI's default
/// for `/v1/completions` is 16; chat has no limit there, so the context bounds it).
const DEFAULT_COMPLETION_TOKENS: usize = 16;
const DEFAULT_CHAT_TOKENS: usize = 512;

/// Binds `addr` (loopback) and returns the bound address and the server future.
pub async fn bind(
    addr: SocketAddr,
    generator: Arc<Generator>,
) -> anyhow::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the OpenAI API listens on loopback only, not {addr}"
    );
    let app = router(generator);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, async move { axum::serve(listener, app).await }))
}

pub fn router(generator: Arc<Generator>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: "no such endpoint".into(),
                kind: "invalid_request_error",
                param: None,
                code: Some("unknown_url"),
            }
        })
        .with_state(generator)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn model_object(g: &Generator) -> ModelObject {
    ModelObject {
        id: g.model_name.clone(),
        object: "model",
        created: 0,
        owned_by: "cocoon",
    }
}

async fn models(State(g): State<Arc<Generator>>) -> Response {
    axum::Json(json!({ "object": "list", "data": [model_object(&g)] })).into_response()
}

async fn model(State(g): State<Arc<Generator>>, Path(id): Path<String>) -> Response {
    if g.answers_to(&id) {
        axum::Json(model_object(&g)).into_response()
    } else {
        ApiError::model_not_found(&id).into_response()
    }
}

/// Parses a JSON body, with OpenAI-shaped errors instead of axum's plain-text ones.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}"), None))
}

fn sampling_params(s: &Sampling) -> Result<SamplingParams, ApiError> {
    let temperature = s.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request(
            format!("temperature must be within 0..=2, got {temperature}"),
            Some("temperature"),
        ));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&top_p) || top_p == 0.0 {
        return Err(ApiError::bad_request(
            format!("top_p must be within (0, 1], got {top_p}"),
            Some("top_p"),
        ));
    }
    if s.n.unwrap_or(1) != 1 {
        return Err(ApiError::bad_request("only n = 1 is supported", Some("n")));
    }
    Ok(SamplingParams {
        temperature,
        top_k: 0,
        top_p,
        seed: s.seed.unwrap_or_else(rand::random),
    })
}

fn check_model(g: &Generator, model: &str) -> Result<(), ApiError> {
    if g.answers_to(model) {
        Ok(())
    } else {
        Err(ApiError::model_not_found(model))
    }
}

fn failure(f: GenFailure) -> ApiError {
    match f {
        GenFailure::BadRequest(m) => ApiError::bad_request(m, None),
        GenFailure::Unavailable(m) => ApiError::unavailable(m),
    }
}

async fn chat_completions(State(g): State<Arc<Generator>>, body: Bytes) -> Response {
    match chat_request(&g, &body) {
        Ok((request, stream)) => run(g, request, stream, Kind::Chat).await,
        Err(e) => e.into_response(),
    }
}

fn chat_request(g: &Generator, body: &Bytes) -> Result<(GenRequest, bool), ApiError> {
    let req: ChatCompletionRequest = parse(body)?;
    check_model(g, &req.model)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role.as_str() {
            "developer" => "system",
            r @ ("system" | "user" | "assistant") => r,
            other => {
                return Err(ApiError::bad_request(
                    format!("unsupported role {other:?}"),
                    Some("messages"),
                ));
            }
        };
        let content = match &m.content {
            Some(c) => c.text()?,
            None => String::new(),
        };
        messages.push(ChatMessage::new(role, content));
    }
    let sampling = sampling_params(&req.sampling)?;
    let request = GenRequest {
        prompt: Prompt::Chat(messages),
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(DEFAULT_CHAT_TOKENS),
        sampling,
        stop: req.sampling.stop.into_vec(),
    };
    Ok((request, req.sampling.stream))
}

async fn completions(State(g): State<Arc<Generator>>, body: Bytes) -> Response {
    match completion_request(&g, &body) {
        Ok((request, stream)) => run(g, request, stream, Kind::Text).await,
        Err(e) => e.into_response(),
    }
}

fn completion_request(g: &Generator, body: &Bytes) -> Result<(GenRequest, bool), ApiError> {
    let req: CompletionRequest = parse(body)?;
    check_model(g, &req.model)?;
    let prompt = match req.prompt {
        PromptIn::One(p) => p,
        PromptIn::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptIn::Many(_) => {
            return Err(ApiError::bad_request(
                "exactly one prompt per request is supported",
                Some("prompt"),
            ));
        }
    };
    let sampling = sampling_params(&req.sampling)?;
    let request = GenRequest {
        prompt: Prompt::Text(prompt),
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS),
        sampling,
        stop: req.sampling.stop.into_vec(),
    };
    Ok((request, req.sampling.stream))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

async fn run(g: Arc<Generator>, request: GenRequest, stream: bool, kind: Kind) -> Response {
    if request.max_tokens == 0 {
        return ApiError::bad_request("max_tokens must be at least 1", Some("max_tokens"))
            .into_response();
    }
    let id = format!(
        "{}-{:016x}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        rand::random::<u64>()
    );
    let created = now_secs();
    let model = g.model_name.clone();
    let mut events = g.submit(request);
    if stream {
        return Sse::new(sse_events(events, id, created, model, kind)).into_response();
    }
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Failed(f) => return failure(f).into_response(),
            GenEvent::Done(summary) => {
                return axum::Json(whole(&summary, &id, created, &model, kind)).into_response();
            }
        }
    }
    ApiError::unavailable("the generation stopped without an answer").into_response()
}

fn usage(s: &GenSummary) -> Usage {
    Usage {
        prompt_tokens: s.prompt_token_ids.len(),
        completion_tokens: s.token_ids.len(),
        total_tokens: s.prompt_token_ids.len() + s.token_ids.len(),
    }
}

fn whole(s: &GenSummary, id: &str, created: u64, model: &str, kind: Kind) -> serde_json::Value {
    let choice = match kind {
        Kind::Chat => json!({
            "index": 0,
            "message": { "role": "assistant", "content": s.text },
            "finish_reason": s.finish_reason,
            "logprobs": null,
        }),
        Kind::Text => json!({
            "index": 0,
            "text": s.text,
            "finish_reason": s.finish_reason,
            "logprobs": null,
        }),
    };
    json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(s),
        "cocoon": s,
    })
}

fn chunk(
    id: &str,
    created: u64,
    model: &str,
    kind: Kind,
    text: Option<&str>,
    finish: Option<&str>,
) -> serde_json::Value {
    let choice = match kind {
        Kind::Chat => {
            let delta = match text {
                Some(t) => json!({ "content": t }),
                None if finish.is_none() => json!({ "role": "assistant", "content": "" }),
                None => json!({}),
            };
            json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null })
        }
        Kind::Text => json!({
            "index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null
        }),
    };
    json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
        "created": created,
        "model": model,
        "choices": [choice],
    })
}

/// Server-sent events: a first chunk (the role, for chat), one chunk per piece of text,
/// a last chunk with `finish_reason` (and `usage`), then `[DONE]`. A failure after the
/// stream began is sent as an OpenAI error object.
fn sse_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<GenEvent>,
    id: String,
    created: u64,
    model: String,
    kind: Kind,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream(move |tx| async move {
        let send = |v: serde_json::Value| Event::default().data(v.to_string());
        if kind == Kind::Chat {
            let _ = tx.send(send(chunk(&id, created, &model, kind, None, None)));
        }
        while let Some(event) = events.recv().await {
            match event {
                GenEvent::Text(t) => {
                    let _ = tx.send(send(chunk(&id, created, &model, kind, Some(&t), None)));
                }
                GenEvent::Failed(f) => {
                    let _ = tx.send(send(failure(f).body()));
                    break;
                }
                GenEvent::Done(summary) => {
                    let mut last = chunk(
                        &id,
                        created,
                        &model,
                        kind,
                        None,
                        Some(summary.finish_reason),
                    );
                    last["usage"] = json!(usage(&summary));
                    last["cocoon"] = json!(&*summary);
                    let _ = tx.send(send(last));
                    break;
                }
            }
        }
        let _ = tx.send(Event::default().data("[DONE]"));
    })
}

/// A stream fed by a task through a channel (keeps the SSE body simple without a macro
/// crate).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(f(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}
