//! An in-memory [`WeightSource`] with random Llama weights of any shape, quantized with
//! [`crate::model::quant::quantize`]: for tests and benchmarks that need no model file.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::quant::quantize;
use crate::model::{
    BlockFeatures, GgmlType, ModelConfig, ModelError, RopeStyle, SharedTensor, TensorRef,
    WeightSource,
};
use crate::ops::pseudo_random;

struct Tensor {
    name: String,
    ty: GgmlType,
    dims: Vec<usize>,
    /// Shared with the [`SharedTensor`]s handed out.
    data: Arc<Vec<u8>>,
}

/// Random weights for a llama-architecture model.
pub struct SyntheticWeights {
    config: ModelConfig,
    tensors: HashMap<String, Tensor>,
}

/// A tiny llama: 3 blocks, d 64, ffn 128, 4 heads / 2 KV heads of 16, vocab 256, tied.
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        name: Some("synthetic tiny llama".into()),
        n_blocks: 3,
        d_model: 64,
        d_ff: 128,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        vocab_size: 256,
        context_length: 128,
        rope_theta: 10000.0,
        rope_style: RopeStyle::Adjacent,
        rms_eps: 1e-5,
        tied_embeddings: true,
        features: BlockFeatures::llama(16),
    }
}

/// SmolLM2-135M's shapes (the default model): 30 blocks, d 576, ffn 1536, 9/3 heads of 64,
/// vocab 49152, theta 1e5, tied embeddings.
pub fn smollm2_135m_config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        name: Some("synthetic SmolLM2-135M shapes".into()),
        n_blocks: 30,
        d_model: 576,
        d_ff: 1536,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 100000.0,
        rope_style: RopeStyle::Adjacent,
        rms_eps: 1e-5,
        tied_embeddings: true,
        features: BlockFeatures::llama(64),
    }
}

impl SyntheticWeights {
    /// Block matrices in `block_type`, the embedding (and LM head, tied or not) in
    /// `embd_type`, norms f32 near 1. Deterministic in `seed`.
    pub fn llama(
        config: ModelConfig,
        block_type: GgmlType,
        embd_type: GgmlType,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let mut s = Self {
            config: config.clone(),
            tensors: HashMap::new(),
        };
        let c = &config;
        let mut seed = seed.wrapping_mul(1_000_003);
        let mut next = || {
            seed += 1;
            seed
        };
        s.add(
            "token_embd.weight",
            embd_type,
            &[c.d_model, c.vocab_size],
            1.0,
            next(),
        )?;
        s.add_norm("output_norm.weight", c.d_model, next())?;
        if !c.tied_embeddings {
            s.add(
                "output.weight",
                embd_type,
                &[c.d_model, c.vocab_size],
                1.0,
                next(),
            )?;
        }
        for b in 0..c.n_blocks {
            let p = |n: &str| format!("blk.{b}.{n}.weight");
            let din = 1.0 / (c.d_model as f32).sqrt();
            s.add_norm(&p("attn_norm"), c.d_model, next())?;
            s.add_norm(&p("ffn_norm"), c.d_model, next())?;
            s.add(
                &p("attn_q"),
                block_type,
                &[c.d_model, c.q_dim()],
                2.0 * din,
                next(),
            )?;
            s.add(
                &p("attn_k"),
                block_type,
                &[c.d_model, c.kv_dim()],
                2.0 * din,
                next(),
            )?;
            s.add(
                &p("attn_v"),
                block_type,
                &[c.d_model, c.kv_dim()],
                din,
                next(),
            )?;
            s.add(
                &p("attn_output"),
                block_type,
                &[c.q_dim(), c.d_model],
                din,
                next(),
            )?;
            s.add(
                &p("ffn_gate"),
                block_type,
                &[c.d_model, c.d_ff],
                din,
                next(),
            )?;
            s.add(&p("ffn_up"), block_type, &[c.d_model, c.d_ff], din, next())?;
            let dff = 1.0 / (c.d_ff as f32).sqrt();
            s.add(
                &p("ffn_down"),
                block_type,
                &[c.d_ff, c.d_model],
                dff,
                next(),
            )?;
        }
        Ok(s)
    }

    fn add(
        &mut self,
        name: &str,
        ty: GgmlType,
        dims: &[usize],
        scale: f32,
        seed: u64,
    ) -> Result<(), ModelError> {
        let n = dims.iter().product();
        let data = quantize(ty, &pseudo_random(n, seed, scale))?;
        self.tensors.insert(
            name.to_string(),
            Tensor {
                name: name.to_string(),
                ty,
                dims: dims.to_vec(),
                data: Arc::new(data),
            },
        );
        Ok(())
    }

    fn add_norm(&mut self, name: &str, d: usize, seed: u64) -> Result<(), ModelError> {
        let v: Vec<f32> = pseudo_random(d, seed, 0.2)
            .iter()
            .map(|x| 1.0 + x)
            .collect();
        self.tensors.insert(
            name.to_string(),
            Tensor {
                name: name.to_string(),
                ty: GgmlType::F32,
                dims: vec![d],
                data: Arc::new(quantize(GgmlType::F32, &v)?),
            },
        );
        Ok(())
    }
}

impl WeightSource for SyntheticWeights {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn tensor(&self, name: &str) -> Result<TensorRef<'_>, ModelError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        Ok(TensorRef {
            name: &t.name,
            ty: t.ty,
            dims: &t.dims,
            data: &t.data,
        })
    }

    fn shared_tensor(&self, name: &str) -> Result<SharedTensor, ModelError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        SharedTensor::new(&self.tensor(name)?, t.data.clone(), 0..t.data.len())
    }
}
