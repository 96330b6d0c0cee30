//! What a llama-family model must hold (its tensors and their shapes, config arithmetic
//! that cannot overflow) and the model id: the manifest hash over config and tensors.

use sha2::{Digest, Sha256};

use crate::model::config::ModelConfig;
use crate::model::tensor::GgmlType;
use crate::model::{ModelError, WeightSource};

/// Checks that the widths [`ModelConfig`]'s methods compute (q, kv, KV-cache bytes per
/// position) cannot overflow, so later code may multiply them freely.
pub fn check_config_arithmetic(config: &ModelConfig) -> Result<(), ModelError> {
    let q = config.n_heads.checked_mul(config.head_dim);
    let kv = config
        .n_kv_heads
        .checked_mul(config.head_dim)
        .and_then(|kv| kv.checked_mul(2 * std::mem::size_of::<f32>()));
    let ffn = config.d_ff.checked_mul(config.d_model);
    let embd = config.vocab_size.checked_mul(config.d_model);
    if q.is_none() || kv.is_none() || ffn.is_none() || embd.is_none() {
        return Err(ModelError::Malformed(format!(
            "model widths overflow: {} heads x {} (kv {}), d_model {}, ffn {}, vocab {}",
            config.n_heads,
            config.head_dim,
            config.n_kv_heads,
            config.d_model,
            config.d_ff,
            config.vocab_size
        )));
    }
    Ok(())
}

/// Every tensor a model of `config` needs (a Llama-style block and its architecture's
/// extras, [`super::arch`]), with its dims in ggml order.
pub fn llama_tensor_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    llama_tensor_shapes_iter(config).collect()
}

/// [`llama_tensor_shapes`], lazily: a lying block count costs nothing until reached.
pub fn llama_tensor_shapes_iter(
    config: &ModelConfig,
) -> impl Iterator<Item = (String, Vec<usize>)> + '_ {
    crate::model::arch::tensor_shapes(config)
}

/// Checks that `source` has every tensor of a llama model of `config`, with the right dims,
/// and that 1-D tensors (norms) are not quantized (F32 in GGUFs, often BF16 in Hugging
/// Face checkpoints).
pub fn validate_llama_tensors(
    source: &dyn WeightSource,
    config: &ModelConfig,
) -> Result<(), ModelError> {
    check_config_arithmetic(config)?;
    for (name, dims) in llama_tensor_shapes_iter(config) {
        let t = source.tensor(&name)?;
        t.expect_dims(&dims)?;
        if dims.len() == 1 && !crate::model::arch::is_plain_float(t.ty) {
            return Err(ModelError::UnsupportedType(format!(
                "{} for 1-D tensor {name} (expected F32, F16 or BF16)",
                t.ty.name()
            )));
        }
    }
    Ok(())
}

/// The model id: sha256 over a canonical manifest.
///
/// Manifest = `"cocoon-model-manifest/1\n"`, the architecture-defining config fields
/// (architecture, blocks, widths, heads, vocab, RoPE theta and style, eps, tying), then,
/// for each tensor in name order: name, type, dims and the sha256 of its bytes.
///
/// Why per-tensor hashes rather than one hash of the data section: the id then depends on
/// what the model computes, not on how a file lays it out (tensor order, alignment
/// padding, metadata such as the name or chat template do not change it), and a worker
/// that holds only blocks `[s, e)` can check its tensors against the per-tensor digests.
/// The cost is the same: each weight byte is hashed once. The config fields are included
/// because the same tensors with another RoPE theta or eps compute something else.
pub fn manifest_hash<'a>(
    config: &ModelConfig,
    tensors: impl Iterator<Item = (&'a str, GgmlType, &'a [usize], &'a [u8])>,
) -> [u8; 32] {
    let mut entries: Vec<(&str, GgmlType, &[usize], [u8; 32])> = tensors
        .map(|(name, ty, dims, data)| (name, ty, dims, Sha256::digest(data).into()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    h.update(b"cocoon-model-manifest/1\n");
    let c = config;
    h.update(
        format!(
            "arch={} blocks={} d={} ff={} heads={} kv_heads={} head_dim={} vocab={} theta={:08x} rope={:?} eps={:08x} tied={}\n",
            c.architecture,
            c.n_blocks,
            c.d_model,
            c.d_ff,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.vocab_size,
            c.rope_theta.to_bits(),
            c.rope_style,
            c.rms_eps.to_bits(),
            c.tied_embeddings
        )
        .as_bytes(),
    );
    // Architectures other than the plain Llama block add what their blocks compute; the
    // plain one keeps the manifest (and so the model ids) it always had.
    if !c.features.is_plain_llama(c.head_dim) {
        h.update(format!("features={:?}\n", c.features).as_bytes());
    }
    h.update((entries.len() as u64).to_le_bytes());
    for (name, ty, dims, digest) in entries {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((ty as u32).to_le_bytes());
        h.update((dims.len() as u32).to_le_bytes());
        for &d in dims {
            h.update((d as u64).to_le_bytes());
        }
        h.update(digest);
    }
    h.finalize().into()
}
