//! The activity log (AL): a ring of 4 KiB transaction blocks in front of the
//! superblock, recording which 4 MiB extents of the device may have writes in
//! flight. After a crash of a Primary, every extent it names is marked out of sync
//! in the bitmap ("apply-al"), so resync covers whatever the crash left half-written.
//!
//! Each transaction block, all fields big-endian:
//!
//! ```text
//! offset size field
//!      0    4 magic                   0x69cb65a2
//!      4    4 tr_number               increases by one per transaction written
//!      8    4 crc32c                  CRC32C of the whole block with this field zero
//!                                     (initial value 0, no final inversion)
//!     12    2 transaction_type        0 = update, 0xffff = initialized (empty)
//!     14    2 n_updates               used entries of the two update arrays
//!     16    2 context_size            number of AL slots ("al-extents")
//!     18    2 context_start_slot_nr   first slot that `context` describes
//!     20   16 reserved
//!     36  128 update_slot_nr[64]      slot changed by this transaction
//!    164  256 update_extent_nr[64]    extent now in that slot
//!    420 3676 context[919]            extents in slots start.., ~0 = empty
//! ```
//!
//! Transaction `t` lives in block `(t % n) % stripes * stripe_size_4k + (t % n) /
//! stripes` of the AL, `n = stripes * stripe_size_4k`. Replay walks the valid
//! update transactions from the oldest to the newest `tr_number`, applying each
//! one's context and then its updates to a slot table; the extents left in the table
//! are the hot ones. An extent covers 4 MiB, i.e. 1024 bitmap bits per peer, which
//! is 128 bytes of each peer's bitmap (`128 * max_peers` interleaved bytes).

use thiserror::Error;

use crate::layout::BLOCK_SIZE;

/// Activity-log block magic.
pub const AL_MAGIC: u32 = 0x69cb_65a2;
pub const AL_UPDATES_PER_TRANSACTION: usize = 64;
pub const AL_CONTEXT_PER_TRANSACTION: usize = 919;
/// Transaction types.
pub const AL_TR_UPDATE: u16 = 0;
pub const AL_TR_INITIALIZED: u16 = 0xffff;
/// The largest slot number drbdmeta accepts ("al-extents" maximum).
pub const AL_EXTENTS_MAX: usize = 65534;
/// Bitmap bytes one AL extent (4 MiB) covers for one peer.
pub const BM_BYTES_PER_AL_EXTENT: u64 = 128;
/// An empty context entry or update slot.
pub const EMPTY: u32 = u32::MAX;

const BLOCK: usize = BLOCK_SIZE as usize;
const UPDATE_SLOTS_AT: usize = 36;
const UPDATE_EXTENTS_AT: usize = UPDATE_SLOTS_AT + 2 * AL_UPDATES_PER_TRANSACTION;
const CONTEXT_AT: usize = UPDATE_EXTENTS_AT + 4 * AL_UPDATES_PER_TRANSACTION;

/// One decoded activity-log transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlTransaction {
    pub tr_number: u32,
    pub transaction_type: u16,
    pub n_updates: u16,
    pub context_size: u16,
    pub context_start_slot_nr: u16,
    pub update_slot_nr: [u16; AL_UPDATES_PER_TRANSACTION],
    pub update_extent_nr: [u32; AL_UPDATES_PER_TRANSACTION],
    pub context: Vec<u32>,
}

/// Why a block is not a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AlBlockError {
    #[error("AL block: {len} bytes given, 4096 needed")]
    TooShort { len: usize },
    #[error("AL block field magic: 0x{found:08x} is not 0x{AL_MAGIC:08x}")]
    Magic { found: u32 },
    #[error("AL block field crc32c: stored 0x{stored:08x}, computed 0x{computed:08x}")]
    Crc { stored: u32, computed: u32 },
}

/// Why the activity log cannot be replayed (drbdmeta's -ENODATA and -EINVAL).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("No usable activity log found. Do you need to create-md?")]
    NoUsableLog,
    #[error("No valid AL update transaction found.")]
    NoValidUpdate,
    #[error("activity log area of {len} bytes is smaller than {blocks} blocks")]
    TooShort { len: usize, blocks: u32 },
}

/// CRC32C as DRBD computes it for AL blocks: initial value 0, no final inversion.
pub fn crc32c_raw(data: &[u8]) -> u32 {
    // crc32c_append(c, d) is !update(!c, d); with c = !0 that is !update(0, d).
    !crc32c::crc32c_append(u32::MAX, data)
}

impl AlTransaction {
    /// An "initialized" (empty) transaction, as create-md writes in every block.
    pub fn initialized() -> AlTransaction {
        AlTransaction {
            tr_number: 0,
            transaction_type: AL_TR_INITIALIZED,
            n_updates: 0,
            context_size: 0,
            context_start_slot_nr: 0,
            update_slot_nr: [0; AL_UPDATES_PER_TRANSACTION],
            update_extent_nr: [0; AL_UPDATES_PER_TRANSACTION],
            context: vec![0; AL_CONTEXT_PER_TRANSACTION],
        }
    }

    /// Encodes into a 4 KiB block with its checksum. `context` beyond 919 entries
    /// is ignored; missing entries are written as 0.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[0..4].copy_from_slice(&AL_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.tr_number.to_be_bytes());
        b[12..14].copy_from_slice(&self.transaction_type.to_be_bytes());
        b[14..16].copy_from_slice(&self.n_updates.to_be_bytes());
        b[16..18].copy_from_slice(&self.context_size.to_be_bytes());
        b[18..20].copy_from_slice(&self.context_start_slot_nr.to_be_bytes());
        for (i, s) in self.update_slot_nr.iter().enumerate() {
            let at = UPDATE_SLOTS_AT + 2 * i;
            b[at..at + 2].copy_from_slice(&s.to_be_bytes());
        }
        for (i, e) in self.update_extent_nr.iter().enumerate() {
            let at = UPDATE_EXTENTS_AT + 4 * i;
            b[at..at + 4].copy_from_slice(&e.to_be_bytes());
        }
        for (i, c) in self
            .context
            .iter()
            .take(AL_CONTEXT_PER_TRANSACTION)
            .enumerate()
        {
            let at = CONTEXT_AT + 4 * i;
            b[at..at + 4].copy_from_slice(&c.to_be_bytes());
        }
        let crc = crc32c_raw(&b);
        b[8..12].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes a block, checking magic and checksum. Never panics.
    pub fn decode(block: &[u8]) -> Result<AlTransaction, AlBlockError> {
        if block.len() < BLOCK {
            return Err(AlBlockError::TooShort { len: block.len() });
        }
        let b = &block[..BLOCK];
        let u16_at = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let magic = u32_at(0);
        if magic != AL_MAGIC {
            return Err(AlBlockError::Magic { found: magic });
        }
        let stored = u32_at(8);
        let mut copy = [0u8; BLOCK];
        copy.copy_from_slice(b);
        copy[8..12].fill(0);
        let computed = crc32c_raw(&copy);
        if stored != computed {
            return Err(AlBlockError::Crc { stored, computed });
        }
        let mut update_slot_nr = [0u16; AL_UPDATES_PER_TRANSACTION];
        let mut update_extent_nr = [0u32; AL_UPDATES_PER_TRANSACTION];
        for i in 0..AL_UPDATES_PER_TRANSACTION {
            update_slot_nr[i] = u16_at(UPDATE_SLOTS_AT + 2 * i);
            update_extent_nr[i] = u32_at(UPDATE_EXTENTS_AT + 4 * i);
        }
        Ok(AlTransaction {
            tr_number: u32_at(4),
            transaction_type: u16_at(12),
            n_updates: u16_at(14),
            context_size: u16_at(16),
            context_start_slot_nr: u16_at(18),
            update_slot_nr,
            update_extent_nr,
            context: (0..AL_CONTEXT_PER_TRANSACTION)
                .map(|i| u32_at(CONTEXT_AT + 4 * i))
                .collect(),
        })
    }
}

/// The whole activity-log area as create-md initializes it: every block an
/// "initialized" transaction.
pub fn initialized_area(blocks: u32) -> Vec<u8> {
    let block = AlTransaction::initialized().encode();
    let mut area = Vec::with_capacity(blocks as usize * BLOCK);
    for _ in 0..blocks {
        area.extend_from_slice(&block);
    }
    area
}

/// The AL block that holds transaction number `tr_number`.
pub fn block_of_transaction(tr_number: u32, stripes: u32, stripe_size_4k: u32) -> u32 {
    let n = stripes * stripe_size_4k;
    let t = tr_number % n;
    (t % stripes) * stripe_size_4k + t / stripes
}

/// What replaying the activity log found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replay {
    /// Blocks that held a valid transaction (initialized or update).
    pub valid_blocks: u32,
    /// Blocks with a bad magic or checksum.
    pub corrupt_blocks: u32,
    /// Valid update transactions.
    pub updates: u32,
    /// Hot extents, ascending (one entry per slot that holds one, so an extent may
    /// appear twice).
    pub hot_extents: Vec<u32>,
}

/// Transaction numbers wrap: compare them by their signed difference.
fn older_than(tr_number: u32, than: Option<(usize, u32)>) -> bool {
    match than {
        None => true,
        Some((_, t)) => (tr_number.wrapping_sub(t) as i32) < 0,
    }
}

fn newer_than(tr_number: u32, than: Option<(usize, u32)>) -> bool {
    match than {
        None => true,
        Some((_, t)) => (tr_number.wrapping_sub(t) as i32) > 0,
    }
}

/// Replays the AL area (`stripes * stripe_size_4k` blocks), as drbdmeta does for
/// the v08.4/v09 transaction format.
pub fn replay(area: &[u8], stripes: u32, stripe_size_4k: u32) -> Result<Replay, ReplayError> {
    let n = stripes.saturating_mul(stripe_size_4k);
    if n == 0 || area.len() < n as usize * BLOCK {
        return Err(ReplayError::TooShort {
            len: area.len(),
            blocks: n,
        });
    }
    // Transactions in ring order b = 0..n (block b of the ring may be on another
    // stripe than b itself).
    let mut ring: Vec<Option<AlTransaction>> = Vec::with_capacity(n as usize);
    let mut replay = Replay::default();
    let mut oldest: Option<(usize, u32)> = None;
    let mut newest: Option<(usize, u32)> = None;
    for b in 0..n {
        let o = block_of_transaction(b, stripes, stripe_size_4k) as usize;
        let tr = AlTransaction::decode(&area[o * BLOCK..(o + 1) * BLOCK]).ok();
        if let Some(tr) = &tr {
            replay.valid_blocks += 1;
            if tr.transaction_type != AL_TR_INITIALIZED {
                replay.updates += 1;
                let this = (b as usize, tr.tr_number);
                // Wrapping comparison of transaction numbers, as a signed difference.
                if older_than(tr.tr_number, oldest) {
                    oldest = Some(this);
                }
                if newer_than(tr.tr_number, newest) {
                    newest = Some(this);
                }
            }
        }
        ring.push(tr);
    }
    replay.corrupt_blocks = n - replay.valid_blocks;
    if replay.valid_blocks == 0 {
        return Err(ReplayError::NoUsableLog);
    }
    let (Some((oldest, _)), Some((mut newest, _))) = (oldest, newest) else {
        // Nothing to apply: fine when every block is initialized, or when only the
        // first one is bad (a first transaction torn by the crash).
        if replay.valid_blocks == n || (ring[0].is_none() && replay.valid_blocks == n - 1) {
            return Ok(replay);
        }
        return Err(ReplayError::NoValidUpdate);
    };
    if newest < oldest {
        newest += n as usize;
    }
    let mut slots = vec![EMPTY; AL_EXTENTS_MAX];
    for b in oldest..=newest {
        let Some(tr) = &ring[b % n as usize] else {
            continue;
        };
        if tr.transaction_type == AL_TR_INITIALIZED {
            continue;
        }
        for (i, &extent) in tr.context.iter().enumerate() {
            let slot = usize::from(tr.context_start_slot_nr) + i;
            if extent == EMPTY && slot >= usize::from(tr.context_size) {
                continue;
            }
            if let Some(s) = slots.get_mut(slot) {
                *s = extent;
            }
        }
        for i in 0..AL_UPDATES_PER_TRANSACTION {
            let slot = tr.update_slot_nr[i];
            if i >= usize::from(tr.n_updates) && slot == u16::MAX {
                continue;
            }
            if let Some(s) = slots.get_mut(usize::from(slot)) {
                *s = tr.update_extent_nr[i];
            }
        }
    }
    let mut hot: Vec<u32> = slots.into_iter().filter(|&e| e != EMPTY).collect();
    hot.sort_unstable();
    replay.hot_extents = hot;
    Ok(replay)
}

/// Builds the update transactions that record `extents` as hot, one per 64
/// extents, numbered from `first_tr_number`, each with a full context window of
/// the slot table (slots `0..al_extents`). For tests and tools that need a log to
/// replay; the replication engine writes its own as the extents change.
pub fn update_transactions(
    first_tr_number: u32,
    extents: &[u32],
    al_extents: u16,
) -> Vec<AlTransaction> {
    let mut slots = vec![EMPTY; usize::from(al_extents)];
    let mut out = Vec::new();
    for (n, chunk) in extents.chunks(AL_UPDATES_PER_TRANSACTION).enumerate() {
        let mut tr = AlTransaction::initialized();
        tr.transaction_type = AL_TR_UPDATE;
        tr.tr_number = first_tr_number.wrapping_add(n as u32);
        tr.context_size = al_extents;
        tr.update_slot_nr = [u16::MAX; AL_UPDATES_PER_TRANSACTION];
        tr.update_extent_nr = [EMPTY; AL_UPDATES_PER_TRANSACTION];
        let base = n * AL_UPDATES_PER_TRANSACTION;
        for (i, &extent) in chunk.iter().enumerate() {
            let slot = (base + i) % usize::from(al_extents.max(1));
            if let Some(s) = slots.get_mut(slot) {
                *s = extent;
            }
            tr.update_slot_nr[i] = slot as u16;
            tr.update_extent_nr[i] = extent;
        }
        tr.n_updates = chunk.len() as u16;
        tr.context = (0..AL_CONTEXT_PER_TRANSACTION)
            .map(|i| slots.get(i).copied().unwrap_or(EMPTY))
            .collect();
        out.push(tr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The initialized block drbdmeta 9.22 writes: magic, type 0xffff and the
    /// checksum 0x709cc651 (read with `xxd` after a real create-md).
    #[test]
    fn initialized_block_matches_drbdmeta() {
        let b = AlTransaction::initialized().encode();
        assert_eq!(
            &b[0..16],
            &[0x69, 0xcb, 0x65, 0xa2, 0, 0, 0, 0, 0x70, 0x9c, 0xc6, 0x51, 0xff, 0xff, 0, 0]
        );
        assert!(b[16..].iter().all(|&x| x == 0));
    }

    #[test]
    fn fresh_log_replays_clean() {
        let area = initialized_area(8);
        let r = replay(&area, 1, 8).unwrap();
        assert_eq!((r.valid_blocks, r.updates, r.hot_extents.len()), (8, 0, 0));
        assert_eq!(
            replay(&vec![0u8; 8 * 4096], 1, 8),
            Err(ReplayError::NoUsableLog)
        );
    }

    #[test]
    fn replays_updates_across_the_ring() {
        let mut area = initialized_area(8);
        // 10 transactions into a ring of 8: the first two are overwritten.
        let extents: Vec<u32> = (0..640).map(|i| i * 3).collect();
        for tr in update_transactions(100, &extents, 1000) {
            let blk = block_of_transaction(tr.tr_number, 1, 8) as usize;
            area[blk * 4096..(blk + 1) * 4096].copy_from_slice(&tr.encode());
        }
        let r = replay(&area, 1, 8).unwrap();
        assert_eq!(r.updates, 8);
        // The newest transaction's context carries every slot written so far.
        assert_eq!(r.hot_extents, extents);
    }

    #[test]
    fn striped_placement() {
        // 2 stripes of 4 blocks: transactions alternate between the stripes.
        let blocks: Vec<u32> = (0..8).map(|t| block_of_transaction(t, 2, 4)).collect();
        assert_eq!(blocks, [0, 4, 1, 5, 2, 6, 3, 7]);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4200)) {
            let _ = AlTransaction::decode(&bytes);
        }

        #[test]
        fn replay_never_panics(blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 4096), 1..5)) {
            let mut area = Vec::new();
            for mut b in blocks {
                // Make some blocks valid transactions with random content.
                if b[0] & 1 == 1 {
                    b[0..4].copy_from_slice(&AL_MAGIC.to_be_bytes());
                    b[8..12].fill(0);
                    let crc = crc32c_raw(&b);
                    b[8..12].copy_from_slice(&crc.to_be_bytes());
                }
                area.extend_from_slice(&b);
            }
            let n = (area.len() / 4096) as u32;
            let _ = replay(&area, 1, n);
        }

        #[test]
        fn transaction_round_trip(tr_number in any::<u32>(), extents in proptest::collection::vec(any::<u32>(), 1..64)) {
            let tr = update_transactions(tr_number, &extents, 919).remove(0);
            prop_assert_eq!(AlTransaction::decode(&tr.encode()).unwrap(), tr);
        }
    }
}
