//! The architectures cocoon serves, read from a GGUF's metadata: which keys make a
//! [`ModelConfig`] (always under the architecture's own prefix, `gemma3.block_count`),
//! which [`BlockFeatures`] each has, and which tensors a block of it holds.
//!
//! Hyper-parameters come from metadata, never from assumptions: `head_dim` is
//! `attention.key_length` where the file gives it (Gemma 3 and Qwen 3 heads are not
//! `d_model / heads` wide). What llama.cpp hard-codes per architecture and no file states
//! (Gemma 3's local RoPE base and its 5 local : 1 global layer pattern) is written here
//! once, with the reason.

use super::config::{
    BlockFeatures, FfnActivation, ModelConfig, RopeScaling, RopeStyle, SlidingWindow,
};
use super::gguf::{GgufHeader, GgufMetadata};
use super::quant::dequantize;
use super::{GgmlType, ModelError};

/// The architectures whose blocks cocoon computes.
pub const SUPPORTED: [&str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

/// Mixture-of-experts architectures, refused by name until expert routing exists.
const MIXTURE_OF_EXPERTS: [&str; 6] = [
    "qwen3moe",
    "qwen2moe",
    "mixtral",
    "deepseek2",
    "llama4",
    "gpt-oss",
];

/// Gemma 3: local layers rotate with base 10 000 and every 6th layer is global. Neither
/// is in the file; both are in the model's definition (and llama.cpp's `gemma3` loader).
const GEMMA3_LOCAL_ROPE_THETA: f32 = 10_000.0;
const GEMMA3_SWA_PATTERN: usize = 6;

/// Reads `{arch}.*` keys with the checks every architecture shares.
struct Keys<'a> {
    md: &'a GgufMetadata,
    arch: &'a str,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn has(&self, k: &str) -> bool {
        self.md.get(&self.key(k)).is_some()
    }

    fn usize(&self, k: &str) -> Result<usize, ModelError> {
        let key = self.key(k);
        if let Some(super::MetaValue::Array(_)) = self.md.get(&key) {
            return Err(ModelError::UnsupportedFeature {
                architecture: self.arch.to_string(),
                feature: format!("per-layer {key} (an array)"),
            });
        }
        self.md.get_usize(&key)
    }

    fn positive(&self, k: &str) -> Result<usize, ModelError> {
        let v = self.usize(k)?;
        if v == 0 {
            return Err(ModelError::Malformed(format!(
                "metadata {} is 0",
                self.key(k)
            )));
        }
        Ok(v)
    }

    fn usize_or(&self, k: &str, default: usize) -> Result<usize, ModelError> {
        if self.has(k) {
            self.usize(k)
        } else {
            Ok(default)
        }
    }

    fn f32_or(&self, k: &str, default: f32) -> Result<f32, ModelError> {
        if self.has(k) {
            self.md.get_f32(&self.key(k))
        } else {
            Ok(default)
        }
    }
}

/// Tensors a block of `config`'s architecture holds besides the nine of a Llama block.
fn extra_tensors_per_block(f: &BlockFeatures) -> usize {
    3 * f.qkv_bias as usize + 2 * f.qk_norm as usize + 2 * f.post_norms as usize
}

/// Builds the [`ModelConfig`] of a GGUF from its metadata and, for Llama 3.1+ RoPE
/// scaling, its `rope_freqs.weight` tensor (read from `bytes`, the whole file).
pub fn config_from_gguf(header: &GgufHeader, bytes: &[u8]) -> Result<ModelConfig, ModelError> {
    let md = &header.metadata;
    let arch = md.get_str("general.architecture")?;
    if MIXTURE_OF_EXPERTS.contains(&arch) {
        return Err(ModelError::UnsupportedFeature {
            architecture: arch.to_string(),
            feature: "mixture of experts (expert routing is not implemented)".to_string(),
        });
    }
    if !SUPPORTED.contains(&arch) {
        return Err(ModelError::UnsupportedArchitecture(arch.to_string()));
    }
    let k = Keys { md, arch };
    if k.usize_or("expert_count", 0)? > 0 {
        return Err(ModelError::UnsupportedFeature {
            architecture: arch.to_string(),
            feature: format!(
                "mixture of experts ({} = {})",
                k.key("expert_count"),
                k.usize("expert_count")?
            ),
        });
    }
    let n_blocks = k.positive("block_count")?;
    let d_model = k.positive("embedding_length")?;
    let d_ff = k.positive("feed_forward_length")?;
    let n_heads = k.positive("attention.head_count")?;
    let n_kv_heads = if k.has("attention.head_count_kv") {
        k.positive("attention.head_count_kv")?
    } else {
        n_heads
    };
    if n_heads % n_kv_heads != 0 {
        return Err(ModelError::Malformed(format!(
            "{} {n_heads} is not a multiple of head_count_kv {n_kv_heads}",
            k.key("attention.head_count")
        )));
    }
    let head_dim = if k.has("attention.key_length") {
        k.positive("attention.key_length")?
    } else {
        if d_model % n_heads != 0 {
            return Err(ModelError::Malformed(format!(
                "{} {d_model} is not a multiple of head_count {n_heads}",
                k.key("embedding_length")
            )));
        }
        d_model / n_heads
    };
    if head_dim % 2 != 0 {
        return Err(ModelError::Malformed(format!(
            "head_dim {head_dim} is odd: RoPE rotates pairs"
        )));
    }
    if k.has("attention.value_length") && k.usize("attention.value_length")? != head_dim {
        return Err(ModelError::UnsupportedFeature {
            architecture: arch.to_string(),
            feature: format!(
                "{} {} differs from the key length {head_dim}",
                k.key("attention.value_length"),
                k.usize("attention.value_length")?
            ),
        });
    }
    if k.has("rope.dimension_count") && k.usize("rope.dimension_count")? != head_dim {
        return Err(ModelError::UnsupportedFeature {
            architecture: arch.to_string(),
            feature: format!(
                "partial RoPE ({} {} of head_dim {head_dim})",
                k.key("rope.dimension_count"),
                k.usize("rope.dimension_count")?
            ),
        });
    }
    // Vocabulary: the tokenizer's token list, else the embedding's row count.
    let vocab_size = if let Ok(tokens) = md.get_array("tokenizer.ggml.tokens") {
        tokens.len()
    } else if let Some(t) = header.tensor_info("token_embd.weight") {
        t.dims.get(1).copied().unwrap_or(0)
    } else if k.has("vocab_size") {
        k.usize("vocab_size")?
    } else {
        return Err(ModelError::MissingTensor("token_embd.weight".to_string()));
    };
    if vocab_size == 0 {
        return Err(ModelError::Malformed("vocabulary size is 0".into()));
    }
    let context_length = k.usize_or("context_length", 2048)?;
    let rope_theta = k.f32_or("rope.freq_base", 10_000.0)?;
    let rms_eps = md.get_f32(&k.key("attention.layer_norm_rms_epsilon"))?;
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(ModelError::Malformed(format!(
            "{} {rope_theta} is not a positive number",
            k.key("rope.freq_base")
        )));
    }
    if !(rms_eps.is_finite() && rms_eps >= 0.0) {
        return Err(ModelError::Malformed(format!(
            "{} {rms_eps} is not a non-negative number",
            k.key("attention.layer_norm_rms_epsilon")
        )));
    }
    let mut features = BlockFeatures::llama(head_dim);
    features.rope_scaling = rope_scaling(&k, header, bytes, head_dim)?;
    let rope_style = match arch {
        "llama" => RopeStyle::Adjacent,
        _ => RopeStyle::NeoX,
    };
    match arch {
        "qwen2" => features.qkv_bias = true,
        "qwen3" => features.qk_norm = true,
        "gemma3" => {
            features.qk_norm = true;
            features.post_norms = true;
            features.ffn_activation = FfnActivation::GeluTanh;
            features.embed_scale = Some((d_model as f32).sqrt());
            // Gemma 3 27B scales queries by 1/√(d_model / heads) (its
            // query_pre_attn_scalar); every other size by 1/√head_dim. Only the 27B has
            // 62 blocks (llama.cpp tells the sizes apart the same way).
            if n_blocks == 62 {
                features.attention_scale = 1.0 / ((d_model / n_heads) as f32).sqrt();
            }
            let window = k.positive("attention.sliding_window")?;
            features.sliding_window = Some(SlidingWindow {
                window,
                pattern: GEMMA3_SWA_PATTERN,
                local_rope_theta: GEMMA3_LOCAL_ROPE_THETA,
            });
        }
        _ => {}
    }
    // A block count the file cannot hold is a lie (checked before anything is sized by it).
    let per_block = 9 + extra_tensors_per_block(&features);
    let n_tensors = header.tensors.len();
    if n_blocks > n_tensors / per_block {
        return Err(ModelError::Malformed(format!(
            "{} {n_blocks} needs {} block tensors, the file has {n_tensors} tensors",
            k.key("block_count"),
            n_blocks.saturating_mul(per_block)
        )));
    }
    let config = ModelConfig {
        architecture: arch.to_string(),
        name: md.get_str("general.name").ok().map(str::to_string),
        n_blocks,
        d_model,
        d_ff,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size,
        context_length,
        rope_theta,
        rope_style,
        rms_eps,
        tied_embeddings: header.tensor_info("output.weight").is_none(),
        features,
    };
    super::gguf::check_config_arithmetic(&config)?;
    Ok(config)
}

/// RoPE scaling: `rope_freqs.weight` (Llama 3.1+), or `rope.scaling.type` = `linear`; other
/// types (YaRN, LongRoPE) are refused by name rather than computed wrong.
fn rope_scaling(
    k: &Keys<'_>,
    header: &GgufHeader,
    bytes: &[u8],
    head_dim: usize,
) -> Result<RopeScaling, ModelError> {
    if let Some(info) = header.tensor_info("rope_freqs.weight") {
        if info.dims != [head_dim / 2] || info.ty.block_elems() != 1 {
            return Err(ModelError::ShapeMismatch {
                name: info.name.clone(),
                found: info.dims.clone(),
                expected: vec![head_dim / 2],
            });
        }
        let data = bytes
            .get(info.offset..info.offset + info.size)
            .ok_or_else(|| ModelError::Malformed("rope_freqs.weight: data past the end".into()))?;
        let mut f = vec![0f32; head_dim / 2];
        dequantize(info.ty, data, &mut f)?;
        if f.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(ModelError::Malformed(
                "rope_freqs.weight holds a factor that is not a positive number".into(),
            ));
        }
        return Ok(RopeScaling::FreqFactors(f));
    }
    let ty = if k.has("rope.scaling.type") {
        k.md.get_str(&k.key("rope.scaling.type"))?.to_string()
    } else {
        "none".to_string()
    };
    let factor = k.f32_or("rope.scaling.factor", 1.0)?;
    match ty.as_str() {
        "none" => Ok(RopeScaling::None),
        "linear" if factor == 1.0 => Ok(RopeScaling::None),
        "linear" if factor.is_finite() && factor > 0.0 => Ok(RopeScaling::Linear(factor)),
        "linear" => Err(ModelError::Malformed(format!(
            "{} {factor} is not a positive number",
            k.key("rope.scaling.factor")
        ))),
        // The llama3 type without rope_freqs.weight: llama.cpp computes nothing either.
        "llama3" => Ok(RopeScaling::None),
        other => Err(ModelError::UnsupportedFeature {
            architecture: k.arch.to_string(),
            feature: format!("RoPE scaling {other:?}"),
        }),
    }
}

/// Every tensor a model of `config` needs, with its dims in ggml order, lazily (a lying
/// block count costs nothing until reached).
pub fn tensor_shapes(config: &ModelConfig) -> impl Iterator<Item = (String, Vec<usize>)> + '_ {
    let d = config.d_model;
    let mut head = vec![
        ("token_embd.weight".to_string(), vec![d, config.vocab_size]),
        ("output_norm.weight".to_string(), vec![d]),
    ];
    if !config.tied_embeddings {
        head.push(("output.weight".to_string(), vec![d, config.vocab_size]));
    }
    let blocks = (0..config.n_blocks).flat_map(move |i| block_tensor_shapes(config, i));
    head.into_iter().chain(blocks)
}

/// The tensors of block `b`, with dims in ggml order.
pub fn block_tensor_shapes(config: &ModelConfig, b: usize) -> Vec<(String, Vec<usize>)> {
    let d = config.d_model;
    let f = &config.features;
    let w = |s: &str| format!("blk.{b}.{s}.weight");
    let mut out = vec![
        (w("attn_norm"), vec![d]),
        (w("attn_q"), vec![d, config.q_dim()]),
        (w("attn_k"), vec![d, config.kv_dim()]),
        (w("attn_v"), vec![d, config.kv_dim()]),
        (w("attn_output"), vec![config.q_dim(), d]),
        (w("ffn_norm"), vec![d]),
        (w("ffn_gate"), vec![d, config.d_ff]),
        (w("ffn_up"), vec![d, config.d_ff]),
        (w("ffn_down"), vec![config.d_ff, d]),
    ];
    if f.qkv_bias {
        out.push((format!("blk.{b}.attn_q.bias"), vec![config.q_dim()]));
        out.push((format!("blk.{b}.attn_k.bias"), vec![config.kv_dim()]));
        out.push((format!("blk.{b}.attn_v.bias"), vec![config.kv_dim()]));
    }
    if f.qk_norm {
        out.push((w("attn_q_norm"), vec![config.head_dim]));
        out.push((w("attn_k_norm"), vec![config.head_dim]));
    }
    if f.post_norms {
        out.push((w("post_attention_norm"), vec![d]));
        out.push((w("post_ffw_norm"), vec![d]));
    }
    out
}

/// Whether a 1-D tensor's type is a plain float (norms and biases are never quantized).
pub fn is_plain_float(ty: GgmlType) -> bool {
    ty.block_elems() == 1
}
