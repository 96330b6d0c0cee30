//! The client's generator: the model's head (tokenizer, embedding, final norm, LM head,
//! sampler) kept on this machine, driving a [`RemoteChain`] of workers. One generation
//! at a time; the OpenAI API and `cocoon generate` queue on it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cocoon_protocol::session::{CipherSuite, WireDtype};
use cocoon_protocol::units::{BlockRange as Span, ModelId, NanoTon};
use cocoon_shaders::engine::{
    BlockBackend, BlockChain, BlockRange, EngineError, GenerateOptions, Head, HeadBackend, Sampler,
    SamplingParams, SessionId,
};
use cocoon_shaders::model::WeightSource;
use cocoon_shaders::model::chat::ChatMessage;
use cocoon_shaders::model::gguf::GgufFile;
use serde::Serialize;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::MeshLink;
use super::client::{ChainOptions, ClientPay, Failover, HopInfo, RemoteChain};
use crate::cmd::run::Backend;

/// What to continue.
#[derive(Clone, Debug)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

#[derive(Clone, Debug)]
pub struct GenRequest {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Text that ends the completion (not included).
    pub stop: Vec<String>,
}

/// Streamed to the requester as the generation goes.
#[derive(Debug)]
pub enum GenEvent {
    /// Text decoded so far that is safe to show (complete UTF-8, no stop string).
    Text(String),
    Done(Box<GenSummary>),
    Failed(GenFailure),
}

#[derive(Debug, Clone)]
pub enum GenFailure {
    /// The request itself is wrong (e.g. longer than the context).
    BadRequest(String),
    /// The mesh could not serve it.
    Unavailable(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct GenSummary {
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub text: String,
    /// `stop` (end of sequence or a stop string) or `length`.
    pub finish_reason: &'static str,
    pub route: Vec<HopInfo>,
    pub failovers: Vec<Failover>,
    pub time_to_first_token_ms: f64,
    /// Part of the time to first token spent planning the route and opening a session
    /// on each hop.
    pub open_route_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub tokens_per_second: f64,
}

/// The first and last blocks, run on the client (`--local-blocks`): a worker holding
/// them could approximately invert their hidden states back to tokens.
struct LocalEnds {
    first: BlockRange,
    last: BlockRange,
}

/// Local first block → remote workers → local last block, for one session.
struct WithLocalEnds<'a> {
    ends: &'a mut LocalEnds,
    remote: &'a mut RemoteChain,
    session: SessionId,
}

impl BlockChain for WithLocalEnds<'_> {
    fn forward(&mut self, start_pos: usize, hidden: &mut [f32]) -> Result<(), EngineError> {
        self.ends.first.forward(self.session, start_pos, hidden)?;
        self.remote.forward(start_pos, hidden)?;
        self.ends.last.forward(self.session, start_pos, hidden)
    }
}

/// Serves generations for one model.
pub struct Generator {
    head: Mutex<Head>,
    local_ends: Option<Mutex<LocalEnds>>,
    pub model_id: ModelId,
    /// The name clients pass as `model`.
    pub model_name: String,
    n_blocks: u32,
    d_model: usize,
    context_length: usize,
    mesh: MeshLink,
    noise_secret: Zeroizing<[u8; 32]>,
    pub dtype: WireDtype,
    pub price_cap: Option<NanoTon>,
    pub forward_timeout: Duration,
    /// How workers that charge are paid (a client with a chain).
    pub pay: Option<ClientPay>,
    /// Session cipher suites this client may use (AES-GCM with workers that offer it).
    pub cipher_suites: Vec<CipherSuite>,
}

impl Generator {
    /// Loads the head of the model at `path` (and, with `local_blocks`, its first and last
    /// blocks).
    pub fn load(
        path: &Path,
        model_id: ModelId,
        backend: Backend,
        local_blocks: bool,
        mesh: MeshLink,
        noise_secret: Zeroizing<[u8; 32]>,
    ) -> anyhow::Result<Self> {
        use cocoon_shaders::engine::{CpuBlocks, CpuHead, GpuBlocks, GpuHead};
        let file = GgufFile::open(path)
            .with_context(|| format!("loading the model {}", path.display()))?;
        let config = file.config().clone();
        let n = config.n_blocks;
        anyhow::ensure!(
            !local_blocks || n >= 3,
            "--local-blocks needs a model of at least 3 blocks, this one has {n}"
        );
        let ctx = match backend {
            Backend::Cpu => None,
            Backend::Wgpu => {
                Some(cocoon_shaders::gpu::GpuContext::new().context("opening a wgpu device")?)
            }
        };
        let blocks = |r: std::ops::Range<usize>| -> anyhow::Result<Box<dyn BlockBackend>> {
            Ok(match &ctx {
                None => Box::new(CpuBlocks::new(&file, r)?),
                Some(ctx) => Box::new(GpuBlocks::new(ctx.clone(), &file, r)?),
            })
        };
        let head_backend: Box<dyn HeadBackend> = match &ctx {
            None => Box::new(CpuHead::new(&file)?),
            Some(ctx) => Box::new(GpuHead::new(ctx.clone(), &file)?),
        };
        const LOCAL_KV_BUDGET: usize = 64 << 20;
        let local_ends = if local_blocks {
            Some(Mutex::new(LocalEnds {
                first: BlockRange::new(blocks(0..1)?, LOCAL_KV_BUDGET),
                last: BlockRange::new(blocks(n - 1..n)?, LOCAL_KV_BUDGET),
            }))
        } else {
            None
        };
        let head = Head::from_gguf(&file, head_backend)?;
        Ok(Self {
            head: Mutex::new(head),
            local_ends,
            model_id,
            model_name: model_name(path),
            n_blocks: config.n_blocks as u32,
            d_model: config.d_model,
            context_length: config.context_length,
            mesh,
            noise_secret,
            dtype: WireDtype::F32,
            price_cap: None,
            forward_timeout: Duration::from_secs(60),
            pay: None,
            cipher_suites: crate::config::SessionCipher::Auto.suites(),
        })
    }

    /// Does `name` (from a request's `model`) mean this model?
    pub fn answers_to(&self, name: &str) -> bool {
        name == self.model_name
            || name == "default"
            || name.eq_ignore_ascii_case(&self.model_id.to_hex())
    }

    /// Starts a generation; its events arrive on the returned channel.
    pub fn submit(self: &Arc<Self>, request: GenRequest) -> mpsc::UnboundedReceiver<GenEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = self.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let result = me.run(rt, &request, &tx);
            let _ = tx.send(match result {
                Ok(summary) => GenEvent::Done(Box::new(summary)),
                Err(failure) => GenEvent::Failed(failure),
            });
        });
        rx
    }

    fn run(
        &self,
        rt: tokio::runtime::Handle,
        request: &GenRequest,
        tx: &mpsc::UnboundedSender<GenEvent>,
    ) -> Result<GenSummary, GenFailure> {
        let bad = |e: String| GenFailure::BadRequest(e);
        let mut head = self
            .head
            .lock()
            .map_err(|_| GenFailure::Unavailable("the generator is poisoned".into()))?;
        let prompt_ids = match &request.prompt {
            Prompt::Text(t) => head.encode_text(t),
            Prompt::Chat(m) => head.encode_chat(m),
        }
        .map_err(|e| bad(e.to_string()))?;
        if prompt_ids.is_empty() {
            return Err(bad("the prompt is empty".into()));
        }
        let positions = prompt_ids.len() + request.max_tokens;
        if positions > self.context_length {
            return Err(bad(format!(
                "prompt of {} tokens plus max_tokens {} exceeds the model's context of {}",
                prompt_ids.len(),
                request.max_tokens,
                self.context_length
            )));
        }
        let span = match self.local_ends {
            Some(_) => Span::new(1, self.n_blocks - 1),
            None => Span::new(0, self.n_blocks),
        }
        .map_err(|e| GenFailure::Unavailable(e.to_string()))?;
        let opts = ChainOptions {
            model: self.model_id,
            blocks: span,
            max_positions: positions as u32,
            dtype: self.dtype,
            price_cap: self.price_cap,
            open_timeout: Duration::from_secs(15),
            forward_timeout: self.forward_timeout,
            pay: self.pay.clone(),
            cipher_suites: self.cipher_suites.clone(),
        };
        let started = Instant::now();
        let mut chain = RemoteChain::open(
            rt,
            self.mesh.clone(),
            self.noise_secret.clone(),
            opts,
            self.d_model,
        )
        .map_err(|e| GenFailure::Unavailable(e.to_string()))?;
        let open_route_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut ends = match &self.local_ends {
            Some(m) => Some(
                m.lock()
                    .map_err(|_| GenFailure::Unavailable("local blocks poisoned".into()))?,
            ),
            None => None,
        };
        let session = SessionId(rand::random());
        if let Some(e) = ends.as_deref_mut() {
            let opened = e.first.open_session(session, positions).and_then(|()| {
                e.last.open_session(session, positions).inspect_err(|_| {
                    e.first.close_session(session);
                })
            });
            opened.map_err(|e| GenFailure::Unavailable(format!("local blocks: {e}")))?;
        }
        let mut sampler = Sampler::new(request.sampling);
        let stop_ids = head.stop_ids();
        let options = GenerateOptions {
            max_new_tokens: request.max_tokens,
            stop_ids: &stop_ids,
        };
        let tokenizer = head.tokenizer().clone();
        let mut decoder = tokenizer.stream_decoder();
        let mut text = String::new();
        let mut shown = 0;
        let mut stopped_by_string = false;
        let mut first_token_at = None;
        let mut local;
        let chain_ref: &mut dyn BlockChain = match ends.as_deref_mut() {
            Some(e) => {
                local = WithLocalEnds {
                    ends: e,
                    remote: &mut chain,
                    session,
                };
                &mut local
            }
            None => &mut chain,
        };
        let generation = head.generate(chain_ref, &mut sampler, &prompt_ids, &options, |id| {
            first_token_at.get_or_insert_with(Instant::now);
            if let Some(piece) = decoder.push(id) {
                text.push_str(&piece);
            }
            if let Some(cut) = request
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(cut);
                stopped_by_string = true;
            }
            // Hold back a tail that could be the start of a stop string.
            let hold = request.stop.iter().map(|s| s.len()).max().unwrap_or(1) - 1;
            let mut safe = if stopped_by_string {
                text.len()
            } else {
                text.len().saturating_sub(hold)
            };
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            if safe > shown {
                let _ = tx.send(GenEvent::Text(text[shown..safe].to_owned()));
                shown = safe;
            }
            !stopped_by_string && !tx.is_closed()
        });
        if let Some(e) = ends.as_deref_mut() {
            e.first.close_session(session);
            e.last.close_session(session);
        }
        let route = chain.route();
        let failovers = chain.failovers.clone();
        chain.close();
        let generation = generation.map_err(|e| GenFailure::Unavailable(e.to_string()))?;
        if !stopped_by_string {
            if let Some(tail) = decoder.finish() {
                text.push_str(&tail);
            }
            if text.len() > shown {
                let _ = tx.send(GenEvent::Text(text[shown..].to_owned()));
            }
        }
        let finish_reason = if generation.stopped
            || stopped_by_string
            || generation.token_ids.len() < request.max_tokens
        {
            "stop"
        } else {
            "length"
        };
        Ok(GenSummary {
            time_to_first_token_ms: first_token_at
                .map(|t| (t - started).as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
            open_route_ms,
            prefill_tokens_per_second: generation.prefill_tokens_per_second(),
            decode_tokens_per_second: generation.decode_tokens_per_second(),
            tokens_per_second: generation.tokens_per_second(),
            prompt_token_ids: generation.prompt_token_ids,
            token_ids: generation.token_ids,
            text,
            finish_reason,
            route,
            failovers,
        })
    }
}

/// A model's name for the API: its file name without `.gguf`.
fn model_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_owned()
}
