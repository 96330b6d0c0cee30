//! `cocoon run`: generate text from a model on this machine — one `Head` and one
//! `BlockRange` over all blocks — streaming tokens as they come.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use cocoon_shaders::engine::{
    BlockBackend, BlockRange, GenerateOptions, Head, HeadBackend, LocalChain, Sampler,
    SamplingParams, SessionId,
};
use cocoon_shaders::model::chat::ChatMessage;
use cocoon_shaders::model::gguf::GgufFile;
use serde::Serialize;

use crate::default_model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// WGSL kernels through wgpu (Vulkan, Metal, DX12, GL; lavapipe without a GPU).
    Wgpu,
    /// The float32 CPU reference.
    Cpu,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A GGUF file, or `default` for the cached default model.
    #[arg(long, default_value = "default")]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy decoding (argmax, lowest id on ties).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sample among the K most likely tokens (0: the 64 most likely, the most considered).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Backend::Wgpu)]
    pub backend: Backend,
    /// Memory for the KV cache, MiB.
    #[arg(long, default_value_t = 512)]
    pub kv_budget_mib: usize,
    /// End stdout with one JSON object describing the generation.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct RunReport<'a> {
    prompt_token_ids: &'a [u32],
    token_ids: &'a [u32],
    text: String,
    tokens_per_second: f64,
    prefill_tokens_per_second: f64,
    decode_tokens_per_second: f64,
    stopped: bool,
    backend: Backend,
    device: String,
}

pub fn main(args: RunArgs) -> Result<()> {
    let path = default_model::resolve(&args.model)?;
    if !(0.0..=1.0).contains(&args.top_p) {
        bail!("--top-p must be within 0..=1, got {}", args.top_p);
    }
    let file = load(&path)?;
    let (head_backend, blocks, device) = backends(&file, args.backend)?;
    let mut head = Head::from_gguf(&file, head_backend)?;
    let prompt_ids = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        head.encode_chat(&messages)?
    } else {
        head.encode_text(&args.prompt)?
    };
    if prompt_ids.is_empty() {
        bail!("the prompt is empty");
    }
    let context = head.config().context_length;
    let positions = prompt_ids.len() + args.max_tokens;
    if positions > context {
        bail!(
            "prompt of {} tokens plus {} new tokens is longer than the model's context of {context}",
            prompt_ids.len(),
            args.max_tokens
        );
    }
    let mut ranges = [BlockRange::new(blocks, args.kv_budget_mib << 20)];
    let mut chain = LocalChain::open(&mut ranges, SessionId(1), positions)?;
    let mut sampler = Sampler::new(SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    });
    let stop_ids = head.stop_ids();
    let options = GenerateOptions {
        max_new_tokens: args.max_tokens,
        stop_ids: &stop_ids,
    };
    let tokenizer = head.tokenizer().clone();
    let mut decoder = tokenizer.stream_decoder();
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let generation = head.generate(&mut chain, &mut sampler, &prompt_ids, &options, |id| {
        let piece = decoder.push(id).unwrap_or_default();
        match stdout
            .write_all(piece.as_bytes())
            .and_then(|_| stdout.flush())
        {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    let tail = decoder.finish().unwrap_or_default();
    stdout.write_all(tail.as_bytes())?;
    writeln!(stdout)?;
    eprintln!(
        "{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s (decode {:.1} tok/s) on {device}",
        generation.prompt_token_ids.len(),
        generation.prefill_tokens_per_second(),
        generation.token_ids.len(),
        generation.tokens_per_second(),
        generation.decode_tokens_per_second(),
    );
    if args.json {
        let report = RunReport {
            prompt_token_ids: &generation.prompt_token_ids,
            token_ids: &generation.token_ids,
            text: head.tokenizer().decode(&generation.token_ids),
            tokens_per_second: generation.tokens_per_second(),
            prefill_tokens_per_second: generation.prefill_tokens_per_second(),
            decode_tokens_per_second: generation.decode_tokens_per_second(),
            stopped: generation.stopped,
            backend: args.backend,
            device,
        };
        writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    }
    Ok(())
}

fn load(path: &Path) -> Result<GgufFile> {
    GgufFile::open(path).with_context(|| format!("loading the model {}", path.display()))
}

type Backends = (Box<dyn HeadBackend>, Box<dyn BlockBackend>, String);

/// The head and the whole block range on the chosen backend, and the device's name.
fn backends(file: &GgufFile, backend: Backend) -> Result<Backends> {
    use cocoon_shaders::engine::cpu::{CpuBlocks, CpuHead};
    use cocoon_shaders::engine::gpu::{GpuBlocks, GpuHead};
    use cocoon_shaders::gpu::GpuContext;
    let n_blocks = cocoon_shaders::model::WeightSource::config(file).n_blocks;
    Ok(match backend {
        Backend::Cpu => (
            Box::new(CpuHead::new(file)?),
            Box::new(CpuBlocks::new(file, 0..n_blocks)?),
            "cpu (float32 reference)".to_string(),
        ),
        Backend::Wgpu => {
            let ctx = GpuContext::new().context("opening a wgpu device")?;
            let device = ctx.info();
            (
                Box::new(GpuHead::new(ctx.clone(), file)?),
                Box::new(GpuBlocks::new(ctx, file, 0..n_blocks)?),
                device,
            )
        }
    })
}
