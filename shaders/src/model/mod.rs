//! Model loading: weight files (GGUF, safetensors) behind one [`WeightSource`] view, the
//! model's hyper-parameters ([`ModelConfig`]), quantized block formats, the tokenizer and
//! the chat template.

pub mod arch;
pub mod chat;
pub mod config;
pub mod gguf;
pub mod gguf_writer;
pub mod paths;
pub mod quant;
pub mod safetensors;
pub mod tensor;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use config::{
    BlockFeatures, FfnActivation, ModelConfig, RopeScaling, RopeStyle, SlidingWindow,
};
pub use gguf::{GgufFile, GgufHeader, GgufMetadata, MetaArray, MetaValue, TensorInfo};
pub use gguf_writer::GgufWriter;
pub use paths::{default_model_path, gemma3_270m_path};
pub use safetensors::SafetensorsModel;
pub use tensor::{GgmlType, TensorRef};
pub use tokenizer::{StreamDecoder, Tokenizer};

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
}
