//! cocoon-shaders: the compute core every worker and client shares.
//!
//! - [`model`]: loading weights (GGUF), the model's shape, tokenizer and chat
//!   template, and the CPU formats of quantized blocks.
//! - [`ops`]: one module per kernel: its WGSL (in `shaders/wgsl/`), its dispatch, and a
//!   CPU reference beside it.
//! - [`gpu`]: the wgpu runtime: device, buffers, pipeline cache.
//! - [`engine`]: the two units the network splits a model along: [`engine::BlockRange`]
//!   (blocks `[start, end)` with their KV caches) and [`engine::Head`] (tokenizer,
//!   embedding, final norm, LM head, sampler).

pub mod engine;
pub mod gpu;
pub mod model;
pub mod ops;
