//! The engine's meta-data ([`replication::Meta`]) kept in DRBD's v09 internal
//! layout at the end of the backing disk, so the real `drbdmeta dump-md` reads
//! what the daemon writes.
//!
//! Mapping: current and first two history UUIDs ↔ the superblock's; disk state ↔
//! the `CONSISTENT`/`WAS_UP_TO_DATE` flags; "was Primary" ↔ `PRIMARY_IND`; each
//! peer's bitmap UUID and bitmap ↔ its peer slot and its index in the interleaved
//! bitmap; the activity log ↔ AL update transactions (replayed after a crash,
//! ignored after a clean `down`, which sets `AL_CLEAN`).

use std::io;
use std::sync::Arc;

use blockdev::{BlockDevice, FileDevice};
use drbd_meta::activity_log::{self, update_transactions};
use drbd_meta::layout::Layout;
use drbd_meta::ops::{self, MetaDevice};
use drbd_meta::superblock::{mdf, mdf_peer, Superblock};
use replication::uuids::HISTORY_LEN;
use replication::{Bitmap, DiskState, Meta, NodeId, PeerMeta};

/// The engine's AL extent: 4 MiB, as DRBD's.
pub const AL_EXTENT_BLOCKS: u64 = 1024;

struct Adapter<'a>(&'a FileDevice);

impl MetaDevice for Adapter<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_at(buf, offset, false)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

pub struct MetaStore {
    device: Arc<FileDevice>,
    layout: Layout,
    superblock: Superblock,
    /// (peer node id, its bitmap index)
    bitmap_index: Vec<(NodeId, u32)>,
    node_id: NodeId,
    blocks: u64,
    next_transaction: u32,
}

/// What opening found.
pub struct Opened {
    pub store: MetaStore,
    pub meta: Meta,
    /// Data blocks (4 KiB) in front of the meta-data.
    pub blocks: u64,
    pub al_extents: usize,
    /// Why the activity log could not be replayed, if it could not (every
    /// block is then out of sync with every peer).
    pub damaged_activity_log: Option<String>,
}

impl MetaStore {
    /// Reads the meta-data of `device` for node `node_id` with `peers`.
    pub fn open(
        device: Arc<FileDevice>,
        node_id: NodeId,
        peers: &[NodeId],
    ) -> Result<Opened, String> {
        let mut adapter = Adapter(&device);
        let opened = match ops::open(&mut adapter) {
            Ok(Ok(opened)) => opened,
            Ok(Err(invalid)) => {
                return Err(format!(
                    "no valid meta-data ({invalid}); run `drbdadm create-md` first"
                ))
            }
            Err(e) => return Err(format!("reading meta-data: {e}")),
        };
        let layout = opened.layout;
        let mut sb = opened.superblock;
        // The superblock has one slot per node id; DRBD's parser takes one
        // id more than that (its peer count), which no disk can hold.
        if let Some(id) = std::iter::once(&node_id)
            .chain(peers)
            .find(|id| usize::from(**id) >= sb.peers.len())
        {
            return Err(format!(
                "node-id {id}: the meta-data holds node ids 0 to {} only",
                sb.peers.len() - 1
            ));
        }
        if peers.len() > layout.max_peers as usize {
            return Err(format!(
                "the meta-data has room for {} peers, the configuration names {}",
                layout.max_peers,
                peers.len()
            ));
        }
        let blocks = layout.max_usable_sectors / 8;
        // Each peer keeps its bitmap index; new peers take free ones.
        let mut used: Vec<u32> = Vec::new();
        let mut bitmap_index = Vec::new();
        for &peer in peers {
            let slot = &sb.peers[usize::from(peer)];
            if slot.bitmap_index >= 0 && (slot.bitmap_index as u32) < layout.max_peers {
                used.push(slot.bitmap_index as u32);
                bitmap_index.push((peer, slot.bitmap_index as u32));
            }
        }
        for &peer in peers {
            if bitmap_index.iter().all(|(p, _)| *p != peer) {
                let free = (0..layout.max_peers)
                    .find(|i| !used.contains(i))
                    .ok_or("no free bitmap slot in the meta-data")?;
                used.push(free);
                bitmap_index.push((peer, free));
            }
        }
        let mut raw = vec![0u8; layout.bm_bytes as usize];
        device
            .read_at(&mut raw, layout.bm_offset)
            .map_err(|e| format!("reading the bitmap: {e}"))?;
        let stored = drbd_meta::bitmap::Bitmap::new(raw, layout.max_peers);
        let mut peers_meta: Vec<PeerMeta> = bitmap_index
            .iter()
            .map(|&(peer, index)| {
                let slot = &sb.peers[usize::from(peer)];
                let mut bitmap = Bitmap::new(blocks);
                for block in 0..blocks {
                    if stored.get(index, block) {
                        bitmap.set_range(block, 1);
                    }
                }
                PeerMeta {
                    node_id: peer,
                    bitmap_uuid: if slot.bitmap_index >= 0 {
                        slot.bitmap_uuid
                    } else {
                        0
                    },
                    bitmap,
                }
            })
            .collect();
        let disk = if sb.flags & mdf::CONSISTENT == 0 {
            DiskState::Inconsistent
        } else if sb.flags & mdf::WAS_UP_TO_DATE != 0 {
            DiskState::UpToDate
        } else {
            DiskState::Outdated
        };
        let mut activity_log = Vec::new();
        let mut damaged_activity_log = None;
        if sb.flags & mdf::AL_CLEAN == 0 {
            let mut area = vec![0u8; layout.al_bytes() as usize];
            device
                .read_at(&mut area, layout.al_offset)
                .map_err(|e| format!("reading the activity log: {e}"))?;
            match activity_log::replay(&area, layout.al_stripes, layout.al_stripe_size_4k) {
                Ok(replay) => {
                    activity_log = replay.hot_extents.iter().map(|e| u64::from(*e)).collect();
                    activity_log.dedup();
                }
                Err(e) => {
                    // Which extents were being written at the crash is lost:
                    // any block may differ from the peers', so all are resynced.
                    for peer in &mut peers_meta {
                        peer.bitmap.set_all();
                    }
                    damaged_activity_log = Some(format!(
                        "the activity log cannot be replayed ({e}): every block is marked out of sync"
                    ));
                }
            }
        }
        let meta = Meta {
            current: sb.current_uuid,
            history: {
                let mut history = [0; HISTORY_LEN];
                history.copy_from_slice(&sb.history_uuids[..HISTORY_LEN]);
                history
            },
            disk,
            primary: sb.flags & mdf::PRIMARY_IND != 0,
            peers: peers_meta,
            activity_log,
        };
        sb.node_id = i32::from(node_id);
        let al_extents =
            (sb.al_nr_extents as usize).clamp(7, activity_log::AL_CONTEXT_PER_TRANSACTION);
        Ok(Opened {
            store: MetaStore {
                device,
                layout,
                superblock: sb,
                bitmap_index,
                node_id,
                blocks,
                next_transaction: 1,
            },
            meta,
            blocks,
            al_extents,
            damaged_activity_log,
        })
    }

    /// Writes `meta` (superblock, bitmap, activity log) and flushes the disk.
    /// `clean`: the resource goes down with nothing in flight; the activity log
    /// need not be replayed.
    pub fn persist(&mut self, meta: &Meta, clean: bool) -> io::Result<()> {
        let sb = &mut self.superblock;
        sb.current_uuid = meta.current;
        sb.history_uuids[..HISTORY_LEN].copy_from_slice(&meta.history);
        sb.node_id = i32::from(self.node_id);
        sb.effective_size = self.blocks * 8;
        let mut flags = sb.flags
            & !(mdf::CONSISTENT
                | mdf::WAS_UP_TO_DATE
                | mdf::PRIMARY_IND
                | mdf::AL_CLEAN
                | mdf::CRASHED_PRIMARY);
        if meta.disk != DiskState::Inconsistent {
            flags |= mdf::CONSISTENT;
        }
        if meta.disk == DiskState::UpToDate {
            flags |= mdf::WAS_UP_TO_DATE;
        }
        if meta.primary {
            flags |= mdf::PRIMARY_IND;
        }
        if clean {
            flags |= mdf::AL_CLEAN;
        }
        sb.flags = flags;
        let mut bitmap =
            drbd_meta::bitmap::Bitmap::zeroed(self.layout.bm_bytes as usize, self.layout.max_peers);
        for peer in &meta.peers {
            let Some(&(_, index)) = self.bitmap_index.iter().find(|(p, _)| *p == peer.node_id)
            else {
                continue;
            };
            let slot = &mut sb.peers[usize::from(peer.node_id)];
            slot.bitmap_uuid = peer.bitmap_uuid;
            slot.bitmap_index = index as i32;
            slot.flags |= mdf_peer::NODE_EXISTS;
            let mut block = peer.bitmap.next_set(0);
            while let Some(b) = block {
                bitmap.set(index, b, true);
                block = peer.bitmap.next_set(b + 1);
            }
        }
        self.device
            .write_at(bitmap.as_bytes(), self.layout.bm_offset, false)?;
        if !clean {
            let extents: Vec<u32> = meta.activity_log.iter().map(|e| *e as u32).collect();
            let slots = (self.superblock.al_nr_extents as usize)
                .clamp(1, activity_log::AL_CONTEXT_PER_TRANSACTION) as u16;
            let transactions = update_transactions(self.next_transaction, &extents, slots);
            for tr in &transactions {
                let block = activity_log::block_of_transaction(
                    tr.tr_number,
                    self.layout.al_stripes,
                    self.layout.al_stripe_size_4k,
                );
                self.device.write_at(
                    &tr.encode(),
                    self.layout.al_offset + u64::from(block) * 4096,
                    false,
                )?;
            }
            self.next_transaction = self
                .next_transaction
                .wrapping_add(transactions.len() as u32);
        }
        self.device
            .write_at(&self.superblock.encode(), self.layout.md_offset, false)?;
        // One flush for all: data writes completed before it become stable too
        // (what the engine's PersistMeta promises).
        self.device.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK_BYTES: u64 = 64 << 20;

    /// A sparse file with fresh meta-data for 2 peers, and its layout.
    fn disk_with_meta(dir: &tempfile::TempDir) -> (Arc<FileDevice>, Layout) {
        let device =
            FileDevice::create(dir.path().join("disk"), DISK_BYTES, &Default::default()).unwrap();
        let layout = Layout::internal_default(DISK_BYTES, 2).unwrap();
        ops::create(&mut Adapter(&device), &layout, 0x1234).unwrap();
        (Arc::new(device), layout)
    }

    #[test]
    fn a_node_id_the_meta_data_cannot_hold_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (device, _) = disk_with_meta(&dir);
        let err = MetaStore::open(device.clone(), 0, &[32]).err().unwrap();
        assert_eq!(err, "node-id 32: the meta-data holds node ids 0 to 31 only");
        let err = MetaStore::open(device.clone(), 255, &[1]).err().unwrap();
        assert!(err.starts_with("node-id 255:"), "{err}");
        assert!(MetaStore::open(device, 31, &[0]).is_ok());
    }

    #[test]
    fn an_activity_log_that_cannot_be_replayed_marks_every_block_out_of_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (device, layout) = disk_with_meta(&dir);
        // As after a crash: the log is to be replayed, but it is garbage.
        let mut adapter = Adapter(&device);
        let mut sb = ops::open(&mut adapter).unwrap().unwrap().superblock;
        sb.flags &= !mdf::AL_CLEAN;
        ops::write_superblock(&mut adapter, &layout, &sb).unwrap();
        let garbage: Vec<u8> = (0..layout.al_bytes()).map(|i| (i * 7 + 3) as u8).collect();
        device.write_at(&garbage, layout.al_offset, false).unwrap();

        let opened = MetaStore::open(device, 0, &[1]).unwrap();
        let damage = opened.damaged_activity_log.expect("the damage is reported");
        assert!(
            damage.contains("every block is marked out of sync"),
            "{damage}"
        );
        let bitmap = &opened.meta.peers[0].bitmap;
        assert_eq!(bitmap.count(), opened.blocks);
    }
}
