//! A model's hyper-parameters, as read from its weight file's metadata: the widths every
//! Llama-style block shares, and the [`BlockFeatures`] by which the supported
//! architectures (`llama`, `qwen2`, `qwen3`, `gemma3`) differ.

use serde::Serialize;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    /// Rotate adjacent pairs `(2i, 2i+1)`: llama-architecture GGUFs, whose converter
    /// permuted the q/k rows.
    Adjacent,
    /// Rotate `(i, i + head_dim/2)`: Hugging Face checkpoints (`rotate_half`) and GGUF
    /// architectures such as qwen2, qwen3 and gemma3.
    NeoX,
}

/// The gated feed-forward's activation: `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum FfnActivation {
    /// SiLU (SwiGLU): llama, qwen2, qwen3.
    #[default]
    Silu,
    /// GELU, tanh approximation (GeGLU): gemma3.
    GeluTanh,
}

/// How positions are stretched before RoPE (Llama 3.1+ and linear scaling).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub enum RopeScaling {
    #[default]
    None,
    /// `rope.scaling.type = linear`: positions divided by the factor.
    Linear(f32),
    /// Per-pair divisors of the rotation frequency (`rope_freqs.weight`, head_dim / 2
    /// values): Llama 3.1+'s `llama3` scaling as its converter writes it.
    FreqFactors(Vec<f32>),
}

/// Gemma 3's sliding-window attention: most layers attend to the last `window`
/// positions only and rotate with their own RoPE base.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SlidingWindow {
    /// Positions a local layer sees, its own included.
    pub window: usize,
    /// Every `pattern`-th layer (`b % pattern == pattern - 1`) is global; the rest local.
    pub pattern: usize,
    /// RoPE base of the local layers.
    pub local_rope_theta: f32,
}

/// What a block computes beyond the plain Llama block
/// (`x += o(attn(rope(q), rope(k), v))`, `x += down(silu(gate) * up)` over RMS norms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockFeatures {
    /// Biases on q, k and v (`attn_{q,k,v}.bias`): qwen2.
    pub qkv_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (`attn_{q,k}_norm.weight`, head_dim
    /// weights): qwen3, gemma3.
    pub qk_norm: bool,
    /// RMSNorm of the attention and FFN outputs before each residual add
    /// (`post_attention_norm.weight`, `post_ffw_norm.weight`): gemma3.
    pub post_norms: bool,
    pub ffn_activation: FfnActivation,
    /// Multiplies the embedding rows (gemma3: √d_model).
    pub embed_scale: Option<f32>,
    /// The attention logits' scale (1/√head_dim unless the architecture says otherwise).
    pub attention_scale: f32,
    pub sliding_window: Option<SlidingWindow>,
    pub rope_scaling: RopeScaling,
}

impl BlockFeatures {
    /// The plain Llama block for heads of `head_dim`.
    pub fn llama(head_dim: usize) -> Self {
        Self {
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            ffn_activation: FfnActivation::Silu,
            embed_scale: None,
            attention_scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            sliding_window: None,
            rope_scaling: RopeScaling::None,
        }
    }

    /// Whether this is the plain Llama block (the fused GPU path's only case before).
    pub fn is_plain_llama(&self, head_dim: usize) -> bool {
        *self == Self::llama(head_dim)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// Architecture name as the file states it (`llama`, `qwen2`, `qwen3`, `gemma3`).
    pub architecture: String,
    /// Human name from metadata, if any.
    pub name: Option<String>,
    pub n_blocks: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    /// RoPE base (of the global layers, where some are local).
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    /// The LM head reuses `token_embd.weight` (no `output.weight` tensor).
    pub tied_embeddings: bool,
    pub features: BlockFeatures,
}

impl ModelConfig {
    /// Width of the concatenated K (or V) heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Bytes of f32 K and V cache one position takes in one block.
    pub fn kv_bytes_per_position_per_block(&self) -> usize {
        2 * self.kv_dim() * std::mem::size_of::<f32>()
    }

    /// The sliding window block `b` attends within, or `None` for full attention.
    pub fn window_of(&self, b: usize) -> Option<usize> {
        let sw = self.features.sliding_window?;
        (sw.pattern == 0 || b % sw.pattern != sw.pattern - 1).then_some(sw.window)
    }

    /// The RoPE base block `b` rotates with.
    pub fn rope_theta_of(&self, b: usize) -> f32 {
        match (self.window_of(b), self.features.sliding_window) {
            (Some(_), Some(sw)) => sw.local_rope_theta,
            _ => self.rope_theta,
        }
    }
}
