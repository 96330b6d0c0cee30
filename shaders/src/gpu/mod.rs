//! The wgpu runtime: device selection ([`GpuContext`]), buffers ([`buffer`]) and the
//! pipeline cache ([`pipeline`]). Kernels themselves live in [`crate::ops`].

pub mod buffer;
pub mod context;
pub mod pipeline;

pub use buffer::Readback;
pub use context::GpuContext;
pub use pipeline::{Binding, Kernel, KernelSpec};

/// What went wrong talking to the GPU.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no Vulkan adapter found: {0}")]
    NoAdapter(String),
    #[error("requesting a device from {adapter}: {reason}")]
    NoDevice { adapter: String, reason: String },
    #[error(
        "buffer {label:?} of {size} bytes exceeds this adapter's storage binding limit of {limit} bytes"
    )]
    BindingTooLarge {
        label: String,
        size: u64,
        limit: u64,
    },
    #[error("kernel {kernel}: {reason}")]
    Kernel { kernel: String, reason: String },
    #[error("reading back {label:?}: {reason}")]
    Readback { label: String, reason: String },
}

impl From<GpuError> for crate::engine::EngineError {
    fn from(e: GpuError) -> Self {
        crate::engine::EngineError::Gpu(e.to_string())
    }
}

/// A process-wide context, opened on first use (tests, benchmarks and binaries that want
/// one device for every backend).
pub fn shared() -> Result<std::sync::Arc<GpuContext>, GpuError> {
    static CTX: std::sync::OnceLock<Result<std::sync::Arc<GpuContext>, String>> =
        std::sync::OnceLock::new();
    CTX.get_or_init(|| GpuContext::new().map_err(|e| e.to_string()))
        .clone()
        .map_err(GpuError::NoAdapter)
}
