//! Hugging Face Llama checkpoints: `config.json` plus `model.safetensors` (or shards listed
//! in `model.safetensors.index.json`), memory-mapped, with tensors renamed to the canonical
//! GGUF names and shapes reported in ggml order.

use super::config::{BlockFeatures, ModelConfig, RopeStyle};
use super::gguf::{check_config_arithmetic, manifest_hash, validate_llama_tensors};
use super::tensor::{GgmlType, TensorRef};
use super::{ModelError, SharedTensor, WeightSource};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The canonical (GGUF) name of a Hugging Face Llama tensor name; `None` for tensors the
/// model does not use (such as `rotary_emb.inv_freq`).
pub fn canonical_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (index, part) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let short = match part {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{index}.{short}.weight"))
}

struct Entry {
    name: String,
    file: usize,
    ty: GgmlType,
    dims: Vec<usize>,
    start: usize,
    end: usize,
}

/// A Hugging Face Llama checkpoint (F32, F16 or BF16 weights) as a [`WeightSource`].
/// RoPE is [`RopeStyle::NeoX`]: Hugging Face keeps q/k rows in `rotate_half` order.
pub struct SafetensorsModel {
    dir: PathBuf,
    /// Shared with the [`SharedTensor`]s handed out, which keep the maps alive.
    maps: Vec<Arc<memmap2::Mmap>>,
    tensors: HashMap<String, Entry>,
    config: ModelConfig,
}

impl std::fmt::Debug for SafetensorsModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsModel")
            .field("dir", &self.dir)
            .field("files", &self.maps.len())
            .field("tensors", &self.tensors.len())
            .field("config", &self.config)
            .finish()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Builds the [`ModelConfig`] of a Hugging Face Llama `config.json`.
pub fn hf_llama_config(json: &Value) -> Result<ModelConfig, ModelError> {
    let model_type = json
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| ModelError::MissingMetadata("config.json model_type".into()))?;
    if model_type != "llama" {
        return Err(ModelError::UnsupportedArchitecture(model_type.to_string()));
    }
    let uint = |key: &str| -> Result<usize, ModelError> {
        json.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| ModelError::MissingMetadata(format!("config.json {key}")))
    };
    let opt_uint = |key: &str| -> Result<Option<usize>, ModelError> {
        match json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => uint(key).map(Some),
        }
    };
    let float = |key: &str, default: f64| -> Result<f32, ModelError> {
        match json.get(key) {
            None | Some(Value::Null) => Ok(default as f32),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(|x| x as f32)
                .ok_or_else(|| ModelError::MissingMetadata(format!("config.json {key}"))),
        }
    };
    let d_model = uint("hidden_size")?;
    let n_heads = uint("num_attention_heads")?;
    let n_kv_heads = opt_uint("num_key_value_heads")?.unwrap_or(n_heads);
    if n_heads % n_kv_heads != 0 {
        return Err(ModelError::Malformed(format!(
            "config.json: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}"
        )));
    }
    let head_dim = match opt_uint("head_dim")? {
        Some(h) => h,
        None if d_model % n_heads == 0 => d_model / n_heads,
        None => {
            return Err(ModelError::Malformed(format!(
                "config.json: hidden_size {d_model} is not a multiple of num_attention_heads {n_heads}"
            )));
        }
    };
    if let Some(scaling) = json.get("rope_scaling").filter(|v| !v.is_null()) {
        return Err(ModelError::Malformed(format!(
            "config.json: rope_scaling {scaling} is not supported"
        )));
    }
    let config = ModelConfig {
        architecture: model_type.to_string(),
        name: json
            .get("_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string),
        n_blocks: uint("num_hidden_layers")?,
        d_model,
        d_ff: uint("intermediate_size")?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size: uint("vocab_size")?,
        context_length: opt_uint("max_position_embeddings")?.unwrap_or(2048),
        rope_theta: float("rope_theta", 10_000.0)?,
        rope_style: RopeStyle::NeoX,
        rms_eps: float("rms_norm_eps", 1e-6)?,
        tied_embeddings: json
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        features: BlockFeatures::llama(head_dim),
    };
    check_config_arithmetic(&config)?;
    Ok(config)
}

impl SafetensorsModel {
    /// Opens a checkpoint directory: `config.json` and either `model.safetensors` or
    /// `model.safetensors.index.json` with its shards. Checks every tensor the config
    /// needs for presence and shape.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Malformed(format!("{}: {e}", config_path.display())))?;
        let mut config = hf_llama_config(&json)?;

        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
            let index: Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Malformed(format!("{}: {e}", index_path.display())))?;
            let map = index
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ModelError::Malformed(format!("{}: no weight_map", index_path.display()))
                })?;
            let mut shards = BTreeSet::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    ModelError::Malformed(format!(
                        "{}: shard of {name} is not a string",
                        index_path.display()
                    ))
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(ModelError::Malformed(format!(
                        "{}: shard name {file:?} leaves the directory",
                        index_path.display()
                    )));
                }
                shards.insert(file.to_string());
            }
            shards.into_iter().collect()
        } else {
            vec!["model.safetensors".to_string()]
        };

        let mut maps = Vec::with_capacity(files.len());
        let mut tensors: HashMap<String, Entry> = HashMap::new();
        for (file_index, file_name) in files.iter().enumerate() {
            let path = dir.join(file_name);
            let file = std::fs::File::open(&path).map_err(io_err(&path))?;
            // SAFETY: read-only map of a file that must not change while open; every read
            // is a slice checked against the length at open.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&map)
                .map_err(|e| ModelError::Malformed(format!("{}: {e}", path.display())))?;
            let data_start = 8 + header_len;
            for (hf_name, info) in metadata.tensors() {
                let Some(name) = canonical_name(&hf_name) else {
                    continue;
                };
                let ty = match info.dtype {
                    Dtype::F32 => GgmlType::F32,
                    Dtype::F16 => GgmlType::F16,
                    Dtype::BF16 => GgmlType::BF16,
                    other => {
                        return Err(ModelError::UnsupportedType(format!(
                            "{other:?} of tensor {hf_name} (supported: F32, F16, BF16)"
                        )));
                    }
                };
                let (a, b) = info.data_offsets;
                let start = data_start.checked_add(a);
                let end = data_start.checked_add(b);
                let (start, end) = match (start, end) {
                    (Some(s), Some(e)) if s <= e && e <= map.len() => (s, e),
                    _ => {
                        return Err(ModelError::Malformed(format!(
                            "{}: tensor {hf_name} data {a}..{b} lies outside the file",
                            path.display()
                        )));
                    }
                };
                let dims: Vec<usize> = info.shape.iter().rev().copied().collect();
                if tensors.contains_key(&name) {
                    return Err(ModelError::Malformed(format!(
                        "tensor {hf_name} appears in more than one shard"
                    )));
                }
                tensors.insert(
                    name.clone(),
                    Entry {
                        name,
                        file: file_index,
                        ty,
                        dims,
                        start,
                        end,
                    },
                );
            }
            maps.push(Arc::new(map));
        }
        // Tied when the config says so or when there is no LM head.
        if config.tied_embeddings {
            tensors.remove("output.weight");
        }
        config.tied_embeddings = !tensors.contains_key("output.weight");
        let model = Self {
            dir,
            maps,
            tensors,
            config,
        };
        validate_llama_tensors(&model, &model.config)?;
        Ok(model)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Canonical names of the tensors the model uses.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The model id (see [`manifest_hash`]). Hashes every weight byte: call it once.
    pub fn manifest_hash(&self) -> [u8; 32] {
        let tensors = self.tensors.values().map(|e| {
            (
                e.name.as_str(),
                e.ty,
                e.dims.as_slice(),
                &self.maps[e.file][e.start..e.end],
            )
        });
        manifest_hash(&self.config, tensors)
    }
}

impl WeightSource for SafetensorsModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn tensor(&self, name: &str) -> Result<TensorRef<'_>, ModelError> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let data = self
            .maps
            .get(e.file)
            .and_then(|m| m.get(e.start..e.end))
            .ok_or_else(|| ModelError::Malformed(format!("tensor {name}: data out of range")))?;
        Ok(TensorRef {
            name: &e.name,
            ty: e.ty,
            dims: &e.dims,
            data,
        })
    }

    fn shared_tensor(&self, name: &str) -> Result<SharedTensor, ModelError> {
        let t = self.tensor(name)?;
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let map = self
            .maps
            .get(e.file)
            .ok_or_else(|| ModelError::Malformed(format!("tensor {name}: no file {}", e.file)))?;
        SharedTensor::new(&t, map.clone(), e.start..e.end)
    }
}
