//! What the node knows of its model: its id and number of blocks. One function, so the
//! real GGUF manifest hash can replace the file hash used here without touching callers.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use cocoon_protocol::units::ModelId;
use sha2::{Digest, Sha256};

/// Blocks of the default model (SmolLM2-135M-Instruct).
pub const DEFAULT_N_BLOCKS: u32 = 30;

/// A model's identity as announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelDescription {
    pub id: ModelId,
    pub n_blocks: u32,
}

/// Describes the model file at `path`: for now its id is the sha256 of the whole file
/// and `n_blocks` comes from the caller's configuration.
pub fn describe_model(path: &Path, n_blocks: u32) -> anyhow::Result<ModelDescription> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening model {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading model {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(ModelDescription {
        id: ModelId(hasher.finalize().into()),
        n_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_the_sha256_of_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, b"abc").expect("write");
        let d = describe_model(&p, 30).expect("describes");
        assert_eq!(
            d.id.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.n_blocks, 30);
        assert!(describe_model(&dir.path().join("missing"), 30).is_err());
    }
}
