//! A Llama-family model's hyper-parameters, as read from its weight file's metadata.

use serde::Serialize;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    /// Rotate adjacent pairs `(2i, 2i+1)`: llama-architecture GGUFs, whose converter
    /// permuted the q/k rows.
    Adjacent,
    /// Rotate `(i, i + head_dim/2)`: Hugging Face checkpoints (`rotate_half`) and GGUF
    /// architectures such as qwen2.
    NeoX,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// Architecture name as the file states it (`llama`).
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
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    /// The LM head reuses `token_embd.weight` (no `output.weight` tensor).
    pub tied_embeddings: bool,
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
}
