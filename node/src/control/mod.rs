//! The control API: HTTP on 127.0.0.1 only, every request must carry the cookie from
//! the data directory's `control.cookie` (mode 0600) as `Authorization: Bearer <cookie>`.
//! The daemon serves it ([`server`]); the CLI calls it ([`client`]).

pub mod api;
pub mod client;
pub mod server;

use std::path::Path;

use anyhow::Context;
use rand::RngCore;

use crate::config::files;
use crate::keys::write_private_file;

/// Creates a fresh random cookie in `data_dir` (mode 0600), replacing an old one.
pub fn create_cookie(data_dir: &Path) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let cookie = hex::encode(bytes);
    let path = data_dir.join(files::COOKIE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing old {}", path.display())),
    }
    write_private_file(&path, cookie.as_bytes())?;
    Ok(cookie)
}

/// Compares two secrets in time independent of where they differ.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
