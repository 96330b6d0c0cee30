//! The standard TON wallet v4r2 (ton-blockchain/wallet-contract; its compiled code is
//! fetched at setup, see [`crate::local_chain::load_wallet_code`]): its state init and
//! address, signed external transfers (subwallet id, `valid_until`, seqno, up to four
//! internal messages), and the key file it is controlled by (32-byte seed, mode 0600).
//!
//! Layouts, as the contract reads them:
//! - data: `seqno:u32 subwallet_id:u32 public_key:bits256 plugins:(HashmapE 256 ..)`;
//! - external body: `signature:bits512` then the signed part `subwallet_id:u32
//!   valid_until:u32 seqno:u32 op:u8(0)` followed by `mode:u8` + a reference to each
//!   outgoing message; the signature is ed25519 over the signed part's cell hash.
//!
//! The contract refuses (before accepting, so no fee is charged and nothing is recorded)
//! a wrong subwallet id (exit 34), a seqno other than its stored one (33, replays), an
//! expired `valid_until` (36), and a bad signature (35).

use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use thiserror::Error;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::dict::Dict;
use tycho_types::models::{
    CurrencyCollection, ExtInMsgInfo, IntAddr, IntMsgInfo, Message, MsgInfo, StateInit, StdAddr,
};
use tycho_types::num::Tokens;

/// The subwallet id wallets use by default on the basechain (698983191 + workchain).
pub const DEFAULT_SUBWALLET_ID: u32 = 698_983_191;

/// Send mode: pay forward fees from the wallet's balance, ignore action errors.
pub const MODE_PAY_FEES_SEPARATELY_IGNORE_ERRORS: u8 = 3;

/// The most internal messages one v4 transfer may carry.
pub const MAX_TRANSFERS: usize = 4;

/// A wallet or key-file failure.
#[derive(Debug, Error)]
pub enum WalletError {
    /// A cell could not be built.
    #[error("cell error: {0}")]
    Cell(#[from] tycho_types::error::Error),
    /// More messages than the contract takes in one transfer.
    #[error("{0} messages in one transfer; wallet v4 takes at most {MAX_TRANSFERS}")]
    TooManyMessages(usize),
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file holds something other than a 32-byte seed.
    #[error("key file {path}: expected a 32-byte ed25519 seed, found {len} bytes")]
    KeyFileLength {
        /// The path.
        path: String,
        /// Its length.
        len: usize,
    },
    /// The key file is readable by others.
    #[error("key file {path}: mode {mode:o}, must not be readable by group or others (0600)")]
    KeyFileMode {
        /// The path.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
}

type Res<T> = Result<T, WalletError>;

/// One internal message a transfer sends.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Destination.
    pub dst: StdAddr,
    /// Value in nanotons.
    pub value: u128,
    /// Bounce back if the destination fails (or does not exist).
    pub bounce: bool,
    /// Body (empty cell if `None`).
    pub body: Option<Cell>,
    /// State init, to deploy the destination.
    pub init: Option<StateInit>,
    /// Send mode (see [`MODE_PAY_FEES_SEPARATELY_IGNORE_ERRORS`]).
    pub mode: u8,
}

impl Transfer {
    /// A plain transfer of `value` with mode 3.
    pub fn new(dst: StdAddr, value: u128, bounce: bool) -> Self {
        Self {
            dst,
            value,
            bounce,
            body: None,
            init: None,
            mode: MODE_PAY_FEES_SEPARATELY_IGNORE_ERRORS,
        }
    }

    /// With a body.
    pub fn with_body(mut self, body: Cell) -> Self {
        self.body = Some(body);
        self
    }

    /// With a state init.
    pub fn with_init(mut self, init: StateInit) -> Self {
        self.init = Some(init);
        self
    }

    fn message_cell(&self, src: &StdAddr) -> Res<Cell> {
        let body = self.body.clone().unwrap_or_default();
        let info = MsgInfo::Int(IntMsgInfo {
            ihr_disabled: true,
            bounce: self.bounce,
            bounced: false,
            src: IntAddr::Std(src.clone()),
            dst: IntAddr::Std(self.dst.clone()),
            value: CurrencyCollection::new(self.value),
            ..Default::default()
        });
        Ok(CellBuilder::build_from(Message {
            info,
            init: self.init.clone(),
            body: body.as_slice_allow_exotic(),
            layout: None,
        })?)
    }
}

/// A wallet v4r2 controlled by one ed25519 key.
#[derive(Clone)]
pub struct WalletV4 {
    code: Cell,
    key: SigningKey,
    workchain: i8,
    subwallet_id: u32,
}

impl std::fmt::Debug for WalletV4 {
    // The signing key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletV4")
            .field("public_key", &hex::encode(self.public_key()))
            .field("workchain", &self.workchain)
            .field("subwallet_id", &self.subwallet_id)
            .finish()
    }
}

impl WalletV4 {
    /// A basechain wallet with the default subwallet id.
    pub fn new(code: Cell, key: SigningKey) -> Self {
        Self {
            code,
            key,
            workchain: 0,
            subwallet_id: DEFAULT_SUBWALLET_ID,
        }
    }

    /// The same key under another subwallet id (another address).
    pub fn with_subwallet_id(mut self, subwallet_id: u32) -> Self {
        self.subwallet_id = subwallet_id;
        self
    }

    /// The subwallet id.
    pub fn subwallet_id(&self) -> u32 {
        self.subwallet_id
    }

    /// The ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The signing key (to sign channel states with the same identity).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The initial data cell: seqno 0, subwallet id, public key, no plugins.
    pub fn initial_data(&self) -> Res<Cell> {
        let mut b = CellBuilder::new();
        b.store_u32(0)?;
        b.store_u32(self.subwallet_id)?;
        b.store_u256(&HashBytes(self.public_key()))?;
        b.store_bit_zero()?;
        Ok(b.build()?)
    }

    /// The state init the wallet deploys with.
    pub fn state_init(&self) -> Res<StateInit> {
        Ok(StateInit {
            split_depth: None,
            special: None,
            code: Some(self.code.clone()),
            data: Some(self.initial_data()?),
            libraries: Dict::new(),
        })
    }

    /// The wallet's address (hash of its state init).
    pub fn address(&self) -> Res<StdAddr> {
        let init = CellBuilder::build_from(self.state_init()?)?;
        Ok(StdAddr::new(self.workchain, *init.repr_hash()))
    }

    /// The signed body of a transfer: `seqno` must be the wallet's current one,
    /// `valid_until` a unix time after the chain's now.
    pub fn transfer_body(&self, seqno: u32, valid_until: u32, transfers: &[Transfer]) -> Res<Cell> {
        if transfers.len() > MAX_TRANSFERS {
            return Err(WalletError::TooManyMessages(transfers.len()));
        }
        let me = self.address()?;
        let mut signed = CellBuilder::new();
        signed.store_u32(self.subwallet_id)?;
        signed.store_u32(valid_until)?;
        signed.store_u32(seqno)?;
        signed.store_u8(0)?; // op: simple send
        for t in transfers {
            signed.store_u8(t.mode)?;
            signed.store_reference(t.message_cell(&me)?)?;
        }
        let signed = signed.build()?;
        let signature = self.key.sign(signed.repr_hash().as_slice()).to_bytes();
        let mut body = CellBuilder::new();
        body.store_raw(&signature, 512)?;
        body.store_slice(signed.as_slice_allow_exotic())?;
        Ok(body.build()?)
    }

    /// The whole inbound external message of a transfer (what `sendBoc` takes),
    /// carrying the state init when `deploy` (the wallet's first transfer, seqno 0).
    pub fn external_message(
        &self,
        seqno: u32,
        valid_until: u32,
        transfers: &[Transfer],
        deploy: bool,
    ) -> Res<Cell> {
        let body = self.transfer_body(seqno, valid_until, transfers)?;
        let info = MsgInfo::ExtIn(ExtInMsgInfo {
            src: None,
            dst: IntAddr::Std(self.address()?),
            import_fee: Tokens::ZERO,
        });
        let init = if deploy {
            Some(self.state_init()?)
        } else {
            None
        };
        Ok(CellBuilder::build_from(Message {
            info,
            init,
            body: body.as_slice_allow_exotic(),
            layout: None,
        })?)
    }

    /// [`WalletV4::external_message`] as BoC bytes.
    pub fn external_boc(
        &self,
        seqno: u32,
        valid_until: u32,
        transfers: &[Transfer],
        deploy: bool,
    ) -> Res<Vec<u8>> {
        Ok(Boc::encode(self.external_message(
            seqno,
            valid_until,
            transfers,
            deploy,
        )?))
    }
}

/// Reads an ed25519 seed (32 raw bytes) from `path`, refusing a file that group or
/// others may read.
pub fn read_key_file(path: &Path) -> Res<SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.display().to_string();
    let io = |source| WalletError::KeyFile {
        path: name.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(WalletError::KeyFileMode { path: name, mode });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| WalletError::KeyFileLength {
            path: name.clone(),
            len: bytes.len(),
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key`'s seed to a new file at `path` with mode 0600 (refuses to overwrite).
pub fn write_key_file(path: &Path, key: &SigningKey) -> Res<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| WalletError::KeyFile {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(&key.to_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// The key at `path`, created (random, mode 0600) if the file does not exist.
pub fn load_or_create_key(path: &Path) -> Res<SigningKey> {
    if path.exists() {
        return read_key_file(path);
    }
    let mut seed = [0u8; 32];
    getrandom_seed(&mut seed).map_err(|source| WalletError::KeyFile {
        path: path.display().to_string(),
        source,
    })?;
    let key = SigningKey::from_bytes(&seed);
    write_key_file(path, &key)?;
    Ok(key)
}

fn getrandom_seed(seed: &mut [u8; 32]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_0600_and_refused_when_open_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cocoon-wallet-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("wallet.key");
        let key = load_or_create_key(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create_key(&path).expect("reload").to_bytes(),
            key.to_bytes()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            read_key_file(&path),
            Err(WalletError::KeyFileMode { .. })
        ));
        std::fs::write(dir.join("short.key"), [1u8; 5]).expect("write");
        std::fs::set_permissions(
            dir.join("short.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        assert!(matches!(
            read_key_file(&dir.join("short.key")),
            Err(WalletError::KeyFileLength { len: 5, .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = SigningKey::from_bytes(&[0x42; 32]);
        let w = WalletV4::new(Cell::default(), key.clone());
        let shown = format!("{w:?}");
        assert!(!shown.contains(&hex::encode(key.to_bytes())));
        assert!(shown.contains(&hex::encode(key.verifying_key().to_bytes())));
    }
}
