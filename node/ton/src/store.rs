//! Channel states in `redb`, one record per channel (encoded with `bincode` 2),
//! committed durably (redb's default immediate durability: fsync before `commit`
//! returns) *before* the work they stand for is done:
//!
//! - the client commits a state it signed before it sends it;
//! - the worker commits a payment it accepted, and the tokens it authorised, before it
//!   serves them.
//!
//! So after `kill -9` at any point a restarted side resumes from a record at least as
//! new as anything it acted on: the client's next seqno is above every state it ever
//! sent (nothing paid twice, no older state re-signed), and the worker never serves
//! again what it already served. [`ChannelStore::commit`] refuses records that would go
//! back (a lower seqno or `sent`, fewer tokens), naming the rule.
//!
//! Beside each state record, a [`ChannelInfo`] says what the channel is (its address,
//! the peer, the initial storage with both keys, the deposit, the other side's signed
//! state when we hold one): written once when the channel is opened, before anything
//! is sent on chain, and updated when the channel's known state on chain changes.

use std::path::Path;

use bincode::{Decode, Encode};
use cocoon_protocol::channel::{
    ChannelId, NanoTon, SemiChannelBody, SeqNo, Side, SignedSemiChannel, Usage,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;

const CHANNELS: TableDefinition<u128, &[u8]> = TableDefinition::new("channels");
const INFOS: TableDefinition<u128, &[u8]> = TableDefinition::new("channel_infos");

/// What a channel is: fixed at opening, except `close_started`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ChannelInfo {
    /// The channel id.
    pub channel_id: u128,
    /// The contract's workchain.
    pub workchain: i8,
    /// The contract's account id (its state init's hash).
    pub account: [u8; 32],
    /// The other party (a libp2p peer id).
    pub peer: String,
    /// The contract's initial storage (keys, id, closing and payment configs), as a BoC.
    pub storage_boc: Vec<u8>,
    /// Side A's deposit.
    pub deposit_a: u128,
    /// Side B's deposit.
    pub deposit_b: u128,
    /// The other side's signed own state, when it gave us one (a payer needs the payee's
    /// to start an uncooperative close), as a BoC; empty if none.
    pub counterparty_boc: Vec<u8>,
    /// Whether we asked to close it (cooperatively or not).
    pub close_requested: bool,
}

/// Our role in a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Role {
    /// We pay (the client).
    Payer,
    /// We are paid (the worker).
    Payee,
}

/// What is kept of one channel.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ChannelRecord {
    /// The channel id.
    pub channel_id: u128,
    /// Our role.
    pub role: Role,
    /// Whether we are side A.
    pub we_are_a: bool,
    /// Payer: the seqno of the last state signed. Payee: of the best state accepted.
    pub seqno: u64,
    /// Cumulative `sent` of that state.
    pub sent: u128,
    /// That signed state, as a BoC (empty if none yet).
    pub state_boc: Vec<u8>,
    /// Prompt tokens served (payer: received; payee: authorised).
    pub prompt_tokens: u64,
    /// Completion tokens served.
    pub completion_tokens: u64,
}

impl ChannelRecord {
    /// A record for the state `state` with `served` tokens.
    pub fn new(
        role: Role,
        side: Side,
        state: &SignedSemiChannel,
        served: Usage,
    ) -> Result<Self, StoreError> {
        let body = &state.state.body;
        Ok(Self {
            channel_id: state.state.channel_id.0,
            role,
            we_are_a: side.is_a(),
            seqno: body.seqno.0,
            sent: body.sent.0,
            state_boc: state
                .to_boc()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            prompt_tokens: served.prompt_tokens,
            completion_tokens: served.completion_tokens,
        })
    }

    /// The body to resume a `Payer` or `Payee` from.
    pub fn body(&self) -> SemiChannelBody {
        SemiChannelBody::new(SeqNo(self.seqno), NanoTon(self.sent))
    }

    /// The stored signed state.
    pub fn state(&self) -> Result<Option<SignedSemiChannel>, StoreError> {
        if self.state_boc.is_empty() {
            return Ok(None);
        }
        SignedSemiChannel::from_boc(&self.state_boc)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Tokens served.
    pub fn served(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
        }
    }
}

/// A store failure or a refused record.
#[derive(Debug, Error)]
pub enum StoreError {
    /// redb failed.
    #[error("channel store: {0}")]
    Db(#[from] redb::Error),
    /// A record does not decode.
    #[error("channel store: corrupt record: {0}")]
    Corrupt(String),
    /// Rule `store-monotonic`: a record may not go back in seqno, `sent` or tokens.
    #[error(
        "channel store: rule `store-monotonic`: channel {channel} record would go back ({what})"
    )]
    Regress {
        /// The channel.
        channel: ChannelId,
        /// Which field.
        what: &'static str,
    },
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// The durable store of channel records.
pub struct ChannelStore {
    db: Database,
}

impl ChannelStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(CHANNELS).map_err(db_err)?;
        tx.open_table(INFOS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Writes what a channel is (durably, replacing an older description).
    pub fn put_info(&self, info: &ChannelInfo) -> Result<(), StoreError> {
        let bytes = bincode::encode_to_vec(info, bincode::config::standard())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(INFOS).map_err(db_err)?;
            table
                .insert(info.channel_id, bytes.as_slice())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }

    /// What a channel is, if we know it.
    pub fn info(&self, id: ChannelId) -> Result<Option<ChannelInfo>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(INFOS).map_err(db_err)?;
        match table.get(id.0).map_err(db_err)? {
            Some(v) => decode_as(v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every channel described, in id order.
    pub fn infos(&self) -> Result<Vec<ChannelInfo>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(INFOS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.push(decode_as(v.value())?);
        }
        Ok(out)
    }

    /// The record of a channel.
    pub fn load(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(CHANNELS).map_err(db_err)?;
        match table.get(id.0).map_err(db_err)? {
            Some(v) => decode(v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every record.
    pub fn list(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(CHANNELS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Commits `rec` durably, refusing one that goes back. Returns once it is on disk:
    /// only then may the caller send the state or serve the tokens.
    pub fn commit(&self, rec: &ChannelRecord) -> Result<(), StoreError> {
        let bytes = bincode::encode_to_vec(rec, bincode::config::standard())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(CHANNELS).map_err(db_err)?;
            if let Some(old) = table.get(rec.channel_id).map_err(db_err)? {
                check_forward(&decode(old.value())?, rec)?;
            }
            table
                .insert(rec.channel_id, bytes.as_slice())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<ChannelRecord, StoreError> {
    decode_as(bytes)
}

fn decode_as<T: Decode<()>>(bytes: &[u8]) -> Result<T, StoreError> {
    bincode::decode_from_slice(bytes, bincode::config::standard())
        .map(|(r, _)| r)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn check_forward(old: &ChannelRecord, new: &ChannelRecord) -> Result<(), StoreError> {
    let regress = |what| StoreError::Regress {
        channel: ChannelId(new.channel_id),
        what,
    };
    if new.seqno < old.seqno || (new.seqno == old.seqno && new.state_boc != old.state_boc) {
        return Err(regress("seqno"));
    }
    if new.sent < old.sent {
        return Err(regress("sent"));
    }
    if new.prompt_tokens < old.prompt_tokens || new.completion_tokens < old.completion_tokens {
        return Err(regress("tokens"));
    }
    if new.role != old.role || new.we_are_a != old.we_are_a {
        return Err(regress("role"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u128, peer: &str) -> ChannelInfo {
        ChannelInfo {
            channel_id: id,
            workchain: 0,
            account: [id as u8; 32],
            peer: peer.to_owned(),
            storage_boc: vec![1, 2, 3],
            deposit_a: 5,
            deposit_b: 0,
            counterparty_boc: Vec::new(),
            close_requested: false,
        }
    }

    #[test]
    fn channel_infos_are_kept_replaced_and_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("cocoon-store-info-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("channels.redb");
        let _ = std::fs::remove_file(&path);
        {
            let store = ChannelStore::open(&path).expect("open");
            assert!(store.infos().expect("empty").is_empty());
            store.put_info(&info(2, "b")).expect("put");
            store.put_info(&info(1, "a")).expect("put");
            let mut closing = info(2, "b");
            closing.close_requested = true;
            store.put_info(&closing).expect("replace");
        }
        let store = ChannelStore::open(&path).expect("reopen");
        let all = store.infos().expect("list");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], info(1, "a"), "in id order");
        assert!(all[1].close_requested, "the replacement was kept");
        assert_eq!(store.info(ChannelId(3)).expect("read"), None);
        assert!(
            store.list().expect("records").is_empty(),
            "infos are not state records"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
