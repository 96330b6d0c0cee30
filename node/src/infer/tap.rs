//! A recorder of the raw bytes of inference streams (hidden `--dev-tap FILE`): exactly
//! what any party between client and worker — a relay, an ISP — could capture if it
//! also broke libp2p's own per-hop encryption. Tests search it for plaintext.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Tap {
    file: Arc<Mutex<std::fs::File>>,
}

impl Tap {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn record(&self, bytes: &[u8]) {
        if let Ok(mut f) = self.file.lock()
            && let Err(e) = f.write_all(bytes)
        {
            tracing::warn!(error = %e, "stream tap write failed");
        }
    }
}
