//! GGUF writing: [`GgufWriter`] lays out metadata and tensors (v3, aligned) so tests and
//! tools can make small model files; [`tiny_llama`] builds a complete tiny llama model with
//! a byte-level tokenizer and a ChatML template.

use super::ModelError;
use super::config::{
    BlockFeatures, FfnActivation, ModelConfig, RopeScaling, RopeStyle, SlidingWindow,
};
use super::gguf::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MetaArray, MetaValue, llama_tensor_shapes};
use super::tensor::GgmlType;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Builds a GGUF file in memory: metadata in insertion order, then tensor infos, then the
/// tensors' bytes, each aligned to the file's alignment.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    alignment: usize,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    /// ggml type id (any id, so tests can write types readers reject).
    ty: u32,
    dims: Vec<usize>,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty GGUF v3 file with the default alignment (32).
    pub fn new() -> Self {
        Self {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Writes this GGUF version (2 or 3: the layouts are the same) in the header.
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Aligns tensor data to `alignment` (a power of two) and records it as
    /// `general.alignment` when it is not the default.
    pub fn alignment(&mut self, alignment: usize) -> Result<&mut Self, ModelError> {
        if alignment == 0 || !alignment.is_power_of_two() || alignment > u32::MAX as usize {
            return Err(ModelError::Malformed(format!(
                "alignment {alignment} is not a power of two"
            )));
        }
        self.alignment = alignment;
        self.metadata.retain(|(k, _)| k != "general.alignment");
        if alignment != DEFAULT_ALIGNMENT {
            self.metadata.push((
                "general.alignment".to_string(),
                MetaValue::U32(alignment as u32),
            ));
        }
        Ok(self)
    }

    /// Sets a metadata key (replacing an earlier value of the same key).
    pub fn meta(&mut self, key: &str, value: MetaValue) -> &mut Self {
        if let Some(e) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            e.1 = value;
        } else {
            self.metadata.push((key.to_string(), value));
        }
        self
    }

    pub fn meta_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.meta(key, MetaValue::String(value.to_string()))
    }

    pub fn meta_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.meta(key, MetaValue::U32(value))
    }

    pub fn meta_f32(&mut self, key: &str, value: f32) -> &mut Self {
        self.meta(key, MetaValue::F32(value))
    }

    pub fn meta_bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.meta(key, MetaValue::Bool(value))
    }

    /// Removes a metadata key, if present.
    pub fn remove_meta(&mut self, key: &str) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self
    }

    /// Adds a tensor of raw bytes (already in `ty`'s layout); `dims` in ggml order.
    pub fn tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        dims: &[usize],
        data: Vec<u8>,
    ) -> Result<&mut Self, ModelError> {
        let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let expected = elems.and_then(|n| ty.bytes_for(n));
        if expected != Some(data.len()) {
            return Err(ModelError::Malformed(format!(
                "tensor {name}: {} bytes given, {} dims {dims:?} need {expected:?}",
                data.len(),
                ty.name()
            )));
        }
        Ok(self.tensor_raw_type(name, ty as u32, dims, data))
    }

    /// Adds a tensor with any ggml type id and unchecked bytes: for tests of readers
    /// (unsupported types, sizes that do not match).
    pub fn tensor_raw_type(
        &mut self,
        name: &str,
        type_id: u32,
        dims: &[usize],
        data: Vec<u8>,
    ) -> &mut Self {
        self.remove_tensor(name);
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            ty: type_id,
            dims: dims.to_vec(),
            data,
        });
        self
    }

    /// Adds an F32 tensor; `dims` in ggml order.
    pub fn tensor_f32(
        &mut self,
        name: &str,
        dims: &[usize],
        values: &[f32],
    ) -> Result<&mut Self, ModelError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, GgmlType::F32, dims, data)
    }

    /// Removes a tensor, if present.
    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|t| t.name != name);
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_str(&mut out, key);
            out.extend_from_slice(&value_type(value).to_le_bytes());
            write_value(&mut out, value);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len()).next_multiple_of(self.alignment);
        }
        if !self.tensors.is_empty() {
            let data_start = out.len().next_multiple_of(self.alignment);
            out.resize(data_start, 0);
            for (t, off) in self.tensors.iter().zip(offsets) {
                out.resize(data_start + off, 0);
                out.extend_from_slice(&t.data);
            }
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn array_type(a: &MetaArray) -> u32 {
    match a {
        MetaArray::U8(_) => 0,
        MetaArray::I8(_) => 1,
        MetaArray::U16(_) => 2,
        MetaArray::I16(_) => 3,
        MetaArray::U32(_) => 4,
        MetaArray::I32(_) => 5,
        MetaArray::F32(_) => 6,
        MetaArray::Bool(_) => 7,
        MetaArray::String(_) => 8,
        MetaArray::Array(_) => 9,
        MetaArray::U64(_) => 10,
        MetaArray::I64(_) => 11,
        MetaArray::F64(_) => 12,
    }
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::String(s) => write_str(out, s),
        MetaValue::Array(a) => write_array(out, a),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&array_type(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each!(v),
        MetaArray::U16(v) => each!(v),
        MetaArray::I16(v) => each!(v),
        MetaArray::U32(v) => each!(v),
        MetaArray::I32(v) => each!(v),
        MetaArray::F32(v) => each!(v),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        MetaArray::String(v) => v.iter().for_each(|s| write_str(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|a| write_array(out, a)),
        MetaArray::U64(v) => each!(v),
        MetaArray::I64(v) => each!(v),
        MetaArray::F64(v) => each!(v),
    }
}

/// The shape of the model [`tiny_llama`] writes: 2 blocks, d=32, 4 heads / 2 KV heads of
/// 8, ffn 64, the [`tiny_tokenizer_vocab`] vocabulary (267 tokens), tied embeddings.
pub fn tiny_llama_config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".to_string(),
        name: Some("tiny-llama".to_string()),
        n_blocks: 2,
        d_model: 32,
        d_ff: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        vocab_size: tiny_tokenizer_vocab().0.len(),
        context_length: 256,
        rope_theta: 10_000.0,
        rope_style: RopeStyle::Adjacent,
        rms_eps: 1e-5,
        tied_embeddings: true,
        features: BlockFeatures::llama(8),
    }
}

/// Gives `c` the features of architecture `arch` (`llama` unchanged, `qwen2`, `qwen3`,
/// `gemma3` with a sliding window of `window`), as the loader reads them back from a file
/// [`tiny_llama_with`] writes; `None` for another architecture. Shared by the tests, the
/// fuzz seeds and the example that writes them.
pub fn with_architecture(mut c: ModelConfig, arch: &str, window: usize) -> Option<ModelConfig> {
    c.architecture = arch.to_string();
    if arch != "llama" {
        c.rope_style = RopeStyle::NeoX;
    }
    let f = &mut c.features;
    match arch {
        "llama" => {}
        "qwen2" => f.qkv_bias = true,
        "qwen3" => f.qk_norm = true,
        "gemma3" => {
            f.qk_norm = true;
            f.post_norms = true;
            f.ffn_activation = FfnActivation::GeluTanh;
            f.embed_scale = Some((c.d_model as f32).sqrt());
            f.sliding_window = Some(SlidingWindow {
                window,
                pattern: 6,
                local_rope_theta: 10_000.0,
            });
        }
        _ => return None,
    }
    Some(c)
}

/// A small byte-level BPE vocabulary in GPT-2's byte-to-unicode alphabet: the 256 byte
/// tokens, a few merges (`"Ġt"`, `"he"`, `"Ġthe"`, ...), and the ChatML control tokens
/// `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`. Returns (tokens, token types, merges).
pub fn tiny_tokenizer_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![3, 3, 3];
    let alphabet = super::tokenizer::byte_level_alphabet();
    for c in alphabet.iter() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "i n", "o n", "e r", "Ġ a", "a t"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, types, merges)
}

/// A complete tiny llama GGUF: [`tiny_llama_config`]'s shape with F32 weights drawn from
/// `seed` (norms 1.0), the [`tiny_tokenizer_vocab`] tokenizer (`gpt2`, pre `smollm`) and a
/// ChatML template. Callers may change or remove anything before writing.
pub fn tiny_llama(seed: u64) -> GgufWriter {
    tiny_llama_with(&tiny_llama_config(), seed)
}

/// [`tiny_llama`] with another shape. `cfg.vocab_size` must be the tiny vocabulary's
/// length (267) for the tokenizer to match; `architecture`, `rope_style` and
/// `tied_embeddings` are taken from `cfg` as they are (tied: no `output.weight`).
pub fn tiny_llama_with(cfg: &ModelConfig, seed: u64) -> GgufWriter {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut w = GgufWriter::new();
    let (tokens, types, merges) = tiny_tokenizer_vocab();
    let key = |k: &str| format!("{}.{k}", cfg.architecture);
    w.meta_str("general.architecture", &cfg.architecture)
        .meta_str("general.name", "tiny-llama")
        .meta_u32(&key("block_count"), cfg.n_blocks as u32)
        .meta_u32(&key("context_length"), cfg.context_length as u32)
        .meta_u32(&key("embedding_length"), cfg.d_model as u32)
        .meta_u32(&key("feed_forward_length"), cfg.d_ff as u32)
        .meta_u32(&key("attention.head_count"), cfg.n_heads as u32)
        .meta_u32(&key("attention.head_count_kv"), cfg.n_kv_heads as u32)
        .meta_f32(&key("rope.freq_base"), cfg.rope_theta)
        .meta_f32(&key("attention.layer_norm_rms_epsilon"), cfg.rms_eps)
        .meta_u32(&key("rope.dimension_count"), cfg.head_dim as u32)
        .meta_str("tokenizer.ggml.model", "gpt2")
        .meta_str("tokenizer.ggml.pre", "smollm")
        .meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(tokens)),
        )
        .meta(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(types)),
        )
        .meta(
            "tokenizer.ggml.merges",
            MetaValue::Array(MetaArray::String(merges)),
        )
        .meta_u32("tokenizer.ggml.bos_token_id", 1)
        .meta_u32("tokenizer.ggml.eos_token_id", 2)
        .meta_u32("tokenizer.ggml.padding_token_id", 0)
        .meta_bool("tokenizer.ggml.add_bos_token", false)
        .meta_str("tokenizer.chat_template", super::chat::CHATML_TEMPLATE);
    if cfg.head_dim * cfg.n_heads != cfg.d_model {
        w.meta_u32(&key("attention.key_length"), cfg.head_dim as u32)
            .meta_u32(&key("attention.value_length"), cfg.head_dim as u32);
    }
    if let Some(sw) = cfg.features.sliding_window {
        w.meta_u32(&key("attention.sliding_window"), sw.window as u32);
    }
    if let RopeScaling::Linear(factor) = cfg.features.rope_scaling {
        w.meta_str(&key("rope.scaling.type"), "linear")
            .meta_f32(&key("rope.scaling.factor"), factor);
    }
    if let RopeScaling::FreqFactors(f) = &cfg.features.rope_scaling {
        w.tensor_f32("rope_freqs.weight", &[f.len()], f)
            .expect("one factor per pair");
    }
    for (name, dims) in llama_tensor_shapes(cfg) {
        let n: usize = dims.iter().product();
        // The Llama block's norms are 1.0 (as they always were here); the other
        // architectures' extra norms and biases are drawn, so a test sees them act.
        let plain_norm = ["attn_norm.weight", "ffn_norm.weight", "output_norm.weight"]
            .iter()
            .any(|s| name.ends_with(s));
        let values: Vec<f32> = if dims.len() == 1 && plain_norm {
            vec![1.0; n]
        } else if dims.len() == 1 && name.ends_with("norm.weight") {
            (0..n).map(|_| rng.random_range(0.5f32..1.5)).collect()
        } else {
            (0..n).map(|_| rng.random_range(-0.1f32..0.1)).collect()
        };
        w.tensor_f32(&name, &dims, &values)
            .expect("sizes come from the shape table");
    }
    w
}
