//! What the node knows of its model: its id (the hash of the GGUF's tensor manifest, see
//! `cocoon_shaders::model::gguf`) and its number of blocks.

use std::path::Path;

use anyhow::Context;
use cocoon_protocol::units::ModelId;
use cocoon_shaders::model::{GgufFile, WeightSource};

/// Blocks of the default model (SmolLM2-135M-Instruct).
pub const DEFAULT_N_BLOCKS: u32 = 30;

/// The model id of the default model (SmolLM2-135M-Instruct Q4_1): the manifest hash of
/// its GGUF, as `describe_model` computes it.
pub const DEFAULT_MODEL_ID: &str =
    "ce19703eaa34b7337a45bb7c7e60493358320c4af258c2d17053ec7f21f993e4";

/// A model's identity as announced, and what its blocks weigh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDescription {
    pub id: ModelId,
    pub n_blocks: u32,
    /// Bytes of each block's tensors in the file (`blk.N.*`), by block.
    pub block_bytes: Vec<u64>,
}

/// Describes the GGUF model at `path`: its manifest hash and block count. Reading it
/// validates the whole file (a truncated or corrupt one is an error naming what is wrong).
pub fn describe_model(path: &Path) -> anyhow::Result<ModelDescription> {
    let file = GgufFile::open(path).with_context(|| format!("reading model {}", path.display()))?;
    let n_blocks = u32::try_from(file.config().n_blocks).context("block count")?;
    Ok(ModelDescription {
        id: ModelId(file.manifest_hash()),
        n_blocks,
        block_bytes: block_bytes(&file),
    })
}

/// Bytes of each block's tensors (`blk.N.*`) in the file, by block.
pub fn block_bytes(file: &GgufFile) -> Vec<u64> {
    let mut out = vec![0u64; file.config().n_blocks];
    for t in file.tensor_infos() {
        let block = t
            .name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(b) = block.and_then(|b| out.get_mut(b)) {
            *b += t.size as u64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_id_is_the_default_models_manifest_hash() {
        let path = cocoon_shaders::model::default_model_path();
        assert!(
            path.exists(),
            "{} missing: run scripts/setup",
            path.display()
        );
        let d = describe_model(&path).expect("the default model");
        assert_eq!(d.id.to_hex(), DEFAULT_MODEL_ID);
        assert_eq!(d.n_blocks, DEFAULT_N_BLOCKS);
    }
    use cocoon_shaders::model::gguf_writer::tiny_llama;

    #[test]
    fn id_is_the_manifest_hash_and_blocks_come_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.gguf");
        tiny_llama(3).write(&p).expect("write");
        let file = GgufFile::open(&p).expect("tiny model");
        let d = describe_model(&p).expect("describes");
        assert_eq!(d.id, ModelId(file.manifest_hash()));
        assert_eq!(d.n_blocks as usize, file.config().n_blocks);
        assert_eq!(d.block_bytes.len(), d.n_blocks as usize);
        assert!(
            d.block_bytes
                .iter()
                .all(|&b| b > 0 && b == d.block_bytes[0])
        );
        assert!(describe_model(&dir.path().join("missing")).is_err());
        std::fs::write(&p, b"not a model").expect("write");
        let err = describe_model(&p).expect_err("garbage");
        assert!(format!("{err:#}").contains("magic"), "{err:#}");
    }
}
