//! Generation UUIDs and the sync-direction decision.
//!
//! Every node keeps a *current* UUID naming the generation of data on its disk, a
//! *bitmap* UUID per peer (the generation the peer last had in common with us; its
//! bitmap counts the blocks written since), and two *history* UUIDs (older
//! generations). A Primary starts a new generation whenever it writes without a
//! peer: the old current UUID becomes that peer's bitmap UUID. When two nodes meet,
//! comparing these UUIDs tells which side has newer data, whether the bitmap is
//! enough to resync or a full sync is needed, whether both sides wrote
//! independently (split brain) or the disks have nothing in common.
//!
//! UUIDs are random 64-bit numbers with bit 0 clear; [`JUST_CREATED`] marks a disk
//! that never held data.

use crate::NodeId;

/// How many older generations each side remembers (DRBD keeps 32 in its
/// meta-data; a resync interrupted again and again pushes one per attempt).
pub const HISTORY_LEN: usize = 8;

/// Pushes `uuid` onto the front of a history, forgetting the oldest.
pub fn push_history(history: &mut [u64; HISTORY_LEN], uuid: u64) {
    history.rotate_right(1);
    history[0] = uuid;
}

/// The current UUID of freshly created meta-data.
pub const JUST_CREATED: u64 = 4;

/// What one side tells the other about its generations when they connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeUuids {
    pub node_id: NodeId,
    pub current: u64,
    /// The bitmap UUID this side keeps for the other side.
    pub bitmap: u64,
    pub history: [u64; HISTORY_LEN],
    /// This side was Primary when it went down without a clean `secondary`.
    pub crashed_primary: bool,
    /// The administrator asked this side to give up its data (`--discard-my-data`).
    pub discard_my_data: bool,
}

/// What the two sides do about their data, seen from "me".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncDecision {
    /// Same generation: nothing to copy.
    NoSync,
    /// I have the newer data; the bitmaps say which blocks to send.
    SourceBitmap,
    /// The peer has the newer data; the bitmaps say which blocks to fetch.
    TargetBitmap,
    /// I have newer data but the bitmap cannot tell what changed: send everything.
    SourceFull,
    /// The peer has newer data; everything must be copied.
    TargetFull,
    /// Both sides wrote on their own since they last agreed.
    SplitBrain,
    /// The disks share no history.
    Unrelated,
    /// Both asked to discard their data: nobody has the data to keep.
    BothDiscard,
}

impl SyncDecision {
    /// The same decision seen from the peer.
    pub fn mirrored(self) -> SyncDecision {
        match self {
            SyncDecision::SourceBitmap => SyncDecision::TargetBitmap,
            SyncDecision::TargetBitmap => SyncDecision::SourceBitmap,
            SyncDecision::SourceFull => SyncDecision::TargetFull,
            SyncDecision::TargetFull => SyncDecision::SourceFull,
            other => other,
        }
    }
}

/// Decides what happens to the data when `me` meets `peer`. Both sides compute it
/// independently; `decide(b, a)` is always `decide(a, b).mirrored()`.
pub fn decide(me: &HandshakeUuids, peer: &HandshakeUuids) -> SyncDecision {
    use SyncDecision::*;
    match (me.discard_my_data, peer.discard_my_data) {
        (true, true) => return BothDiscard,
        (true, false) => return TargetFull,
        (false, true) => return SourceFull,
        (false, false) => {}
    }
    let (mine, theirs) = (me.current & !1, peer.current & !1);
    match (mine == JUST_CREATED, theirs == JUST_CREATED) {
        (true, true) => return NoSync,
        (true, false) => return TargetFull,
        (false, true) => return SourceFull,
        (false, false) => {}
    }
    if mine == theirs {
        // Same generation. A Primary that crashed may have written blocks (those
        // its activity log names) that never reached the peer: it resyncs them
        // to the peer. If both crashed as Primary, the lower node id goes first.
        return match (me.crashed_primary, peer.crashed_primary) {
            (true, false) => SourceBitmap,
            (false, true) => TargetBitmap,
            (true, true) if me.node_id < peer.node_id => SourceBitmap,
            (true, true) => TargetBitmap,
            (false, false) => NoSync,
        };
    }
    let my_bitmap = me.bitmap & !1;
    let their_bitmap = peer.bitmap & !1;
    let peer_is_my_ancestor = my_bitmap != 0 && my_bitmap == theirs;
    let i_am_peers_ancestor = their_bitmap != 0 && their_bitmap == mine;
    match (peer_is_my_ancestor, i_am_peers_ancestor) {
        (true, false) => return SourceBitmap,
        (false, true) => return TargetBitmap,
        // Each claims the other as its ancestor: nothing to trust.
        (true, true) => return SplitBrain,
        (false, false) => {}
    }
    if my_bitmap != 0 && my_bitmap == their_bitmap {
        return SplitBrain;
    }
    let in_history =
        |h: &[u64; HISTORY_LEN], uuid: u64| uuid != 0 && h.iter().any(|x| x & !1 == uuid);
    let mine_old = in_history(&peer.history, mine);
    let theirs_old = in_history(&me.history, theirs);
    match (theirs_old, mine_old) {
        (true, false) => return SourceFull,
        (false, true) => return TargetFull,
        (true, true) => return SplitBrain,
        (false, false) => {}
    }
    // Any other shared ancestor means both sides moved on from it.
    let mine_all: Vec<u64> = std::iter::once(my_bitmap)
        .chain(me.history.iter().map(|u| u & !1))
        .collect();
    let theirs_all: Vec<u64> = std::iter::once(their_bitmap)
        .chain(peer.history.iter().map(|u| u & !1))
        .collect();
    if mine_all.iter().any(|u| *u != 0 && theirs_all.contains(u)) {
        return SplitBrain;
    }
    Unrelated
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: NodeId, current: u64, bitmap: u64, history: [u64; 2]) -> HandshakeUuids {
        let mut h = [0; HISTORY_LEN];
        h[..2].copy_from_slice(&history);
        let history = h;
        HandshakeUuids {
            node_id: id,
            current,
            bitmap,
            history,
            crashed_primary: false,
            discard_my_data: false,
        }
    }

    #[test]
    fn the_classic_cases() {
        use SyncDecision::*;
        let fresh = node(1, JUST_CREATED, 0, [0, 0]);
        let forced = node(0, 0x100, 0, [0, 0]);
        assert_eq!(decide(&node(0, JUST_CREATED, 0, [0, 0]), &fresh), NoSync);
        assert_eq!(decide(&forced, &fresh), SourceFull);
        // The Primary went on alone: its bitmap UUID is the peer's current one.
        let ahead = node(0, 0x200, 0x100, [0, 0]);
        let behind = node(1, 0x100, 0, [0, 0]);
        assert_eq!(decide(&ahead, &behind), SourceBitmap);
        assert_eq!(decide(&behind, &ahead), TargetBitmap);
        // Both went on alone from 0x100.
        let other = node(1, 0x300, 0x100, [0, 0]);
        assert_eq!(decide(&ahead, &other), SplitBrain);
        assert_eq!(decide(&ahead, &node(1, 0x500, 0, [0x700, 0])), Unrelated);
        // The peer's generation is in my history: I know more, but not what.
        assert_eq!(decide(&node(0, 0x400, 0, [0x100, 0]), &behind), SourceFull);
        let mut crashed = node(0, 0x100, 0, [0, 0]);
        crashed.crashed_primary = true;
        assert_eq!(decide(&crashed, &behind), SourceBitmap);
        let mut victim = behind;
        victim.discard_my_data = true;
        assert_eq!(decide(&victim, &other), TargetFull);
    }

    proptest! {
        #[test]
        fn both_sides_agree(
            a in (0u64..6, 0u64..6, 0u64..6, 0u64..6, any::<bool>(), any::<bool>()),
            b in (0u64..6, 0u64..6, 0u64..6, 0u64..6, any::<bool>(), any::<bool>()),
        ) {
            // Small UUID values make coincidences (shared ancestors) common.
            let make = |id, (c, bm, h0, h1, crashed, discard): (u64, u64, u64, u64, bool, bool)| HandshakeUuids {
                node_id: id,
                current: c * 2 + 4,
                bitmap: bm * 2,
                history: {
                    let mut h = [0; HISTORY_LEN];
                    h[0] = h0 * 2;
                    h[1] = h1 * 2;
                    h
                },
                crashed_primary: crashed,
                discard_my_data: discard,
            };
            let (x, y) = (make(0, a), make(1, b));
            prop_assert_eq!(decide(&y, &x), decide(&x, &y).mirrored());
        }
    }
}
