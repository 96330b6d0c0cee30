//! GGUF (v2 and v3) reading: a bounds-checked parser over `&[u8]`, memory-mapped files,
//! typed metadata, tensor views, the llama [`ModelConfig`] and the model's manifest hash.
//!
//! Every count, size and offset read from the file is checked against the bytes that
//! remain before it is used, with checked arithmetic: a truncated or corrupt file gives a
//! [`ModelError`] naming what is wrong, never a panic, an out-of-bounds read or an
//! allocation sized by a lying count.
//!
//! [`metadata`] holds the key/value section, [`header`] the parser, [`manifest`] the
//! tensors a model must hold and its id; this module the file itself ([`GgufFile`]).

pub mod header;
pub mod manifest;
pub mod metadata;

pub use header::{GgufHeader, TensorInfo};
pub use manifest::{
    check_config_arithmetic, llama_tensor_shapes, llama_tensor_shapes_iter, manifest_hash,
    validate_llama_tensors,
};
pub use metadata::{GgufMetadata, MetaArray, MetaType, MetaValue};

use super::config::ModelConfig;
use super::tensor::TensorRef;
use super::{ModelError, SharedTensor, WeightSource};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// `GGUF` as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: usize = 4;

/// The bytes a GGUF file lives in.
enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mmap(m) => m,
            Self::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// A llama-architecture GGUF model: the checked header over the file's bytes (memory-mapped
/// or owned), its [`ModelConfig`], and views of its tensors. Opening checks every expected
/// tensor's presence and shape.
///
/// Tensor data lie at multiples of [`GgufFile::alignment`] from the start of the file: in
/// a memory-mapped file (page-aligned) that is their alignment in memory too; with
/// [`GgufFile::from_bytes`] only the `Vec`'s own alignment holds, so copy before casting.
pub struct GgufFile {
    /// Shared with the [`SharedTensor`]s handed out, which keep the map alive.
    backing: Arc<Backing>,
    header: GgufHeader,
    config: ModelConfig,
    manifest: OnceLock<[u8; 32]>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("tensors", &self.header.tensors.len())
            .field("config", &self.config)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and checks the GGUF file at `path` (see [`GgufFile::from_bytes`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; the file must not be truncated or rewritten while
        // it is open, as for every memory-mapped model loader (llama.cpp does the same).
        // Every read goes through slices bounds-checked against the length at open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_backing(Backing::Mmap(map)).map_err(|e| match e {
            ModelError::Malformed(m) => ModelError::Malformed(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a whole GGUF file held in memory, builds its llama config and checks its
    /// tensors against it.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ModelError> {
        Self::from_backing(Backing::Owned(bytes))
    }

    fn from_backing(backing: Backing) -> Result<Self, ModelError> {
        let header = GgufHeader::parse(backing.bytes())?;
        let config = super::arch::config_from_gguf(&header, backing.bytes())?;
        let file = Self {
            backing: Arc::new(backing),
            header,
            config,
            manifest: OnceLock::new(),
        };
        file.validate_llama_tensors()?;
        Ok(file)
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn metadata(&self) -> &GgufMetadata {
        &self.header.metadata
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn alignment(&self) -> usize {
        self.header.alignment
    }

    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Checks that every tensor a llama model of this config needs exists with the
    /// right dims (ggml order), and that norms are not quantized.
    pub fn validate_llama_tensors(&self) -> Result<(), ModelError> {
        validate_llama_tensors(self, &self.config)
    }

    /// The model id the mesh uses; see [`manifest_hash`].
    pub fn manifest_hash(&self) -> [u8; 32] {
        *self.manifest.get_or_init(|| {
            // Pages are released every 64 MiB hashed, so a large file never sits whole in
            // the resident set (each tensor is hashed as the next one is pulled).
            let mut since_release = 0usize;
            let tensors = self.header.tensors.iter().map(|t| {
                if since_release >= 64 << 20 {
                    self.release_pages();
                    since_release = 0;
                }
                since_release += t.size;
                let data = &self.backing.bytes()[t.offset..t.offset + t.size];
                (t.name.as_str(), t.ty, t.dims.as_slice(), data)
            });
            let hash = manifest_hash(&self.config, tensors);
            // Hashing read every page: a worker that holds a third of the blocks should
            // not keep the whole file resident for it.
            self.release_pages();
            hash
        })
    }

    /// Drops the memory-mapped file's pages from this process's resident set (they are
    /// read again from the file if touched): after the weights are uploaded or copied,
    /// the map's pages only count against the process. Nothing for an owned buffer.
    pub fn release_pages(&self) {
        if let Backing::Mmap(m) = &*self.backing {
            // SAFETY: the map is a private, read-only view of a file that must not change
            // while open (see `open`); MADV_DONTNEED on it only discards clean pages, which
            // later reads fault in again from the same file. Slices borrowed from the map
            // stay valid: the mapping itself is untouched.
            let result = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
            if let Err(e) = result {
                tracing::debug!("madvise(DONTNEED) on the model map: {e}");
            }
        }
    }
}

impl WeightSource for GgufFile {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn release_pages(&self) {
        GgufFile::release_pages(self)
    }

    fn tensor(&self, name: &str) -> Result<TensorRef<'_>, ModelError> {
        let info = self
            .header
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let data = self
            .backing
            .bytes()
            .get(info.offset..info.offset + info.size)
            .ok_or_else(|| {
                ModelError::Malformed(format!("tensor {name}: data past the end of the file"))
            })?;
        Ok(TensorRef {
            name: &info.name,
            ty: info.ty,
            dims: &info.dims,
            data,
        })
    }

    fn shared_tensor(&self, name: &str) -> Result<SharedTensor, ModelError> {
        let t = self.tensor(name)?;
        let info = self
            .header
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        SharedTensor::new(
            &t,
            self.backing.clone(),
            info.offset..info.offset + info.size,
        )
    }
}
