//! The node's key files in its data directory: created at first start with mode 0600,
//! read back afterwards. Encoding lives in `cocoon_protocol::identity`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use cocoon_protocol::identity::{KeyKind, NodeIdentity, decode_key_file, encode_key_file};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::config::files;

/// Writes `contents` to a new file readable only by its owner. Fails if it exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // The umask cannot widen 0600, but a pre-set ACL could: set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

fn load_or_create_secret(
    dir: &Path,
    name: &str,
    kind: KeyKind,
) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let mode = std::fs::metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?
                .permissions()
                .mode();
            anyhow::ensure!(
                mode & 0o077 == 0,
                "key file {} is readable by others (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            );
            decode_key_file(kind, &bytes)
                .with_context(|| format!("reading key file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(&mut secret[..]);
            write_private_file(&path, &encode_key_file(kind, &secret))?;
            tracing::info!(path = %path.display(), "created a new key file");
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The node identity stored in `data_dir`, created there on first use.
pub fn load_or_create_identity(data_dir: &Path) -> anyhow::Result<NodeIdentity> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let ed = load_or_create_secret(data_dir, files::NODE_KEY, KeyKind::Ed25519)?;
    let x = load_or_create_secret(data_dir, files::NOISE_KEY, KeyKind::X25519)?;
    Ok(NodeIdentity::from_secrets(&ed, &x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_0600_and_read_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_identity(dir.path()).expect("creates");
        for name in [files::NODE_KEY, files::NOISE_KEY] {
            let mode = std::fs::metadata(dir.path().join(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let b = load_or_create_identity(dir.path()).expect("reads");
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.noise_public_key(), b.noise_public_key());
        std::fs::set_permissions(
            dir.path().join(files::NODE_KEY),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(load_or_create_identity(dir.path()).is_err());
    }
}
