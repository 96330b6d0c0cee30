//! Model loading: GGUF weight files behind the [`WeightSource`] view, the
//! model's hyper-parameters ([`ModelConfig`]), quantized block formats, the tokenizer and
//! the chat template.

pub mod arch;
pub mod chat;
pub mod config;
pub mod gguf;
pub mod gguf_writer;
pub mod paths;
pub mod quant;
pub mod tensor;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use config::{
    BlockFeatures, FfnActivation, ModelConfig, RopeScaling, RopeStyle, SlidingWindow,
};
pub use gguf::{GgufFile, GgufHeader, GgufMetadata, MetaArray, MetaValue, TensorInfo};
pub use gguf_writer::GgufWriter;
pub use paths::{default_model_path, gemma3_270m_path};
pub use tensor::{GgmlType, TensorRef};
pub use tokenizer::{StreamDecoder, Tokenizer};

use std::ops::Range;
use std::sync::Arc;

/// Errors from reading or interpreting a model file. Each variant names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed model file: {0}")]
    Malformed(String),
    #[error("unsupported tensor type {0}")]
    UnsupportedType(String),
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, qwen3, gemma3)")]
    UnsupportedArchitecture(String),
    #[error("architecture {architecture:?}: {feature} is not supported")]
    UnsupportedFeature {
        architecture: String,
        feature: String,
    },
    #[error("tensor {0:?} not found in the model")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("metadata key {0:?} missing or of the wrong type")]
    MissingMetadata(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
}

/// Read access to a model's tensors by their canonical (GGUF) names:
/// `token_embd.weight`, `output_norm.weight`, `output.weight` (absent when tied),
/// `blk.{i}.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}.weight`.
pub trait WeightSource: Send + Sync {
    fn config(&self) -> &ModelConfig;
    fn tensor(&self, name: &str) -> Result<TensorRef<'_>, ModelError>;
    /// The tensor as an owned view that outlives this borrow of the source, sharing the
    /// source's storage (memory map or buffer) rather than copying it: see
    /// [`SharedTensor`].
    fn shared_tensor(&self, name: &str) -> Result<SharedTensor, ModelError>;
    /// Lets the storage's pages leave the resident set once a backend has uploaded or
    /// copied what it needs (a memory-mapped file; nothing otherwise).
    fn release_pages(&self) {}
}

/// Storage a [`SharedTensor`] keeps alive: a memory-mapped file, or bytes in memory.
pub type SharedStorage = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A tensor's type, shape and bytes, owned and cheap to clone: the `Arc` of its source's
/// storage and its byte range there. A backend keeps one to read a tensor after it is
/// built (the heads look embedding rows up in the memory-mapped file this way) without
/// copying it into process memory or borrowing the source.
#[derive(Clone)]
pub struct SharedTensor {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order, as [`TensorRef::dims`].
    pub dims: Vec<usize>,
    storage: SharedStorage,
    range: Range<usize>,
}

impl std::fmt::Debug for SharedTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTensor")
            .field("name", &self.name)
            .field("ty", &self.ty)
            .field("dims", &self.dims)
            .field("range", &self.range)
            .finish()
    }
}

impl SharedTensor {
    /// `t` viewed in `storage`, where its bytes lie at `range`; checked to lie within the
    /// storage and to be `t`'s bytes (same length).
    pub fn new(
        t: &TensorRef<'_>,
        storage: SharedStorage,
        range: Range<usize>,
    ) -> Result<Self, ModelError> {
        let len = (*storage).as_ref().len();
        if range.start > range.end || range.end > len || range.len() != t.data.len() {
            return Err(ModelError::Malformed(format!(
                "tensor {}: bytes {range:?} of {} do not hold its {} bytes",
                t.name,
                len,
                t.data.len()
            )));
        }
        Ok(Self {
            name: t.name.to_string(),
            ty: t.ty,
            dims: t.dims.to_vec(),
            storage,
            range,
        })
    }

    /// The tensor's bytes.
    pub fn data(&self) -> &[u8] {
        &(*self.storage).as_ref()[self.range.clone()]
    }

    /// A borrowed view, as [`WeightSource::tensor`] gives.
    pub fn view(&self) -> TensorRef<'_> {
        TensorRef {
            name: &self.name,
            ty: self.ty,
            dims: &self.dims,
            data: self.data(),
        }
    }
}
