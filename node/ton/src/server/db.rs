//! The local chain's durable state in redb: every account's `ShardAccount` (BoC), every
//! transaction (BoC, keyed by account and logical time), and the clock, the logical time
//! and the block counter. [`ChainDb::commit`] writes one send's changes in one durable
//! transaction before the server answers, so a restart resumes exactly there.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{ShardAccount, StdAddr};

use crate::local_chain::ChainChanges;

const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
const TRANSACTIONS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("transactions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A failure of the chain's database.
#[derive(Debug, Error)]
pub enum ChainDbError {
    /// redb failed.
    #[error("chain database: {0}")]
    Db(String),
    /// A stored record does not decode.
    #[error("chain database: corrupt record: {0}")]
    Corrupt(String),
}

fn db<E: std::fmt::Display>(e: E) -> ChainDbError {
    ChainDbError::Db(e.to_string())
}

/// The clock, logical time and block counter stored with the accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainMeta {
    /// Chain time.
    pub now: u32,
    /// Logical time.
    pub lt: u64,
    /// Blocks (one per accepted send or clock move).
    pub blocks: u64,
}

fn key(addr: &StdAddr) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = addr.workchain as u8;
    k[1..].copy_from_slice(&addr.address.0);
    k
}

fn addr_of(k: &[u8]) -> Result<StdAddr, ChainDbError> {
    let arr: [u8; 32] = k
        .get(1..33)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| ChainDbError::Corrupt("account key".into()))?;
    Ok(StdAddr::new(k[0] as i8, HashBytes(arr)))
}

/// A stored transaction.
#[derive(Clone, Debug)]
pub struct StoredTransaction {
    /// Logical time.
    pub lt: u64,
    /// The transaction cell.
    pub cell: Cell,
}

/// The chain's database.
pub struct ChainDb {
    db: Database,
}

impl ChainDb {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, ChainDbError> {
        let database = Database::create(path).map_err(db)?;
        let tx = database.begin_write().map_err(db)?;
        tx.open_table(ACCOUNTS).map_err(db)?;
        tx.open_table(TRANSACTIONS).map_err(db)?;
        tx.open_table(META).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Self { db: database })
    }

    /// The stored clock, or `None` for a new chain.
    pub fn meta(&self) -> Result<Option<ChainMeta>, ChainDbError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(META).map_err(db)?;
        let get = |k: &str| -> Result<Option<u64>, ChainDbError> {
            Ok(t.get(k).map_err(db)?.map(|v| v.value()))
        };
        match (get("now")?, get("lt")?, get("blocks")?) {
            (Some(now), Some(lt), Some(blocks)) => Ok(Some(ChainMeta {
                now: u32::try_from(now).map_err(|_| ChainDbError::Corrupt("now".into()))?,
                lt,
                blocks,
            })),
            _ => Ok(None),
        }
    }

    /// Every stored account.
    pub fn accounts(&self) -> Result<Vec<(StdAddr, ShardAccount)>, ChainDbError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(ACCOUNTS).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            let cell = Boc::decode(v.value()).map_err(|e| ChainDbError::Corrupt(e.to_string()))?;
            let sa = cell
                .parse::<ShardAccount>()
                .map_err(|e| ChainDbError::Corrupt(e.to_string()))?;
            out.push((addr_of(k.value())?, sa));
        }
        Ok(out)
    }

    /// An account's transactions, newest first, with `lt <= from_lt` (if given) and
    /// `lt > to_lt`, at most `limit`.
    pub fn transactions(
        &self,
        addr: &StdAddr,
        from_lt: Option<u64>,
        to_lt: u64,
        limit: usize,
    ) -> Result<Vec<StoredTransaction>, ChainDbError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(TRANSACTIONS).map_err(db)?;
        let k = key(addr);
        let hi = from_lt.unwrap_or(u64::MAX);
        let lo = to_lt.saturating_add(1);
        let mut out = Vec::new();
        if lo > hi {
            return Ok(out);
        }
        for row in t
            .range((k.as_slice(), lo)..=(k.as_slice(), hi))
            .map_err(db)?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (key, v) = row.map_err(db)?;
            let cell = Boc::decode(v.value()).map_err(|e| ChainDbError::Corrupt(e.to_string()))?;
            out.push(StoredTransaction {
                lt: key.value().1,
                cell,
            });
        }
        Ok(out)
    }

    /// Writes one step's changes and the clock in one durable transaction.
    pub fn commit(&self, changes: &ChainChanges, meta: ChainMeta) -> Result<(), ChainDbError> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut a = tx.open_table(ACCOUNTS).map_err(db)?;
            for (addr, sa) in &changes.accounts {
                let cell = CellBuilder::build_from(sa).map_err(db)?;
                a.insert(key(addr).as_slice(), Boc::encode(cell).as_slice())
                    .map_err(db)?;
            }
            let mut t = tx.open_table(TRANSACTIONS).map_err(db)?;
            for txn in &changes.transactions {
                let k = key(&txn.account);
                t.insert((k.as_slice(), txn.lt), Boc::encode(&txn.cell).as_slice())
                    .map_err(db)?;
            }
            let mut m = tx.open_table(META).map_err(db)?;
            m.insert("now", u64::from(meta.now)).map_err(db)?;
            m.insert("lt", meta.lt).map_err(db)?;
            m.insert("blocks", meta.blocks).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(())
    }
}
