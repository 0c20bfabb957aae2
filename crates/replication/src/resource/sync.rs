//! The handshake (the sync decision from both sides' generations and
//! bitmaps) and resync, from source to target, within the rate limit.

use super::*;

impl Resource {
    pub(super) fn maybe_decide(&mut self, p: usize) {
        let peer = &self.peers[p];
        let (Some(hello), Some(theirs)) = (peer.hello.clone(), peer.their_bitmap.clone()) else {
            return;
        };
        let id = peer.id;
        let me = HandshakeUuids {
            node_id: self.config.node_id,
            current: self.current,
            bitmap: peer.bitmap_uuid,
            history: self.history,
            crashed_primary: self.crashed_primary,
            discard_my_data: peer.discard_my_data,
        };
        let them = HandshakeUuids {
            node_id: hello.node_id,
            current: hello.current,
            bitmap: hello.bitmap,
            history: hello.history,
            crashed_primary: hello.crashed_primary,
            discard_my_data: hello.discard_my_data,
        };
        let decision = uuids::decide(&me, &them);
        self.out.push(Action::Note(Note::Handshake {
            peer: id,
            mine: me,
            theirs: them,
            decision,
        }));
        let diskless = self.disk == DiskState::Diskless || hello.disk == DiskState::Diskless;
        if decision == SyncDecision::SplitBrain && !diskless {
            return self.drop_connection(p, Note::SplitBrain { peer: id }, true);
        }
        if hello.role == Role::Primary
            && self.role == Role::Primary
            && !self.config.allow_two_primaries
        {
            let note = Note::Refused {
                peer: id,
                reason: "both nodes are Primary".into(),
            };
            return self.drop_connection(p, note, true);
        }
        if diskless {
            // Nothing to compare or copy: connected, without a disk on one side.
            let same_data = hello.current & !1 == self.current & !1;
            let peer = &mut self.peers[p];
            peer.role = Some(hello.role);
            peer.disk = Some(hello.disk);
            peer.discard_my_data = false;
            peer.repl = ReplState::Established;
            peer.same_data = same_data;
            // A Primary without this peer's disk, or a diskless Primary whose
            // data this disk holds and which writes to it: the data move on
            // without the other disk. (A disk of another generation is not
            // the diskless Primary's data: it neither reads nor writes it.)
            if self.role == Role::Primary || (hello.role == Role::Primary && same_data) {
                self.new_generation(false);
                self.persist();
            }
            return self.drain_blocked();
        }
        let peer = &mut self.peers[p];
        peer.role = Some(hello.role);
        peer.disk = Some(hello.disk);
        peer.discard_my_data = false;
        peer.same_data = true;
        if hello.current & !1 == self.current & !1
            && matches!(
                (self.disk, hello.disk),
                (DiskState::Inconsistent, DiskState::UpToDate)
                    | (DiskState::UpToDate, DiskState::Inconsistent)
            )
        {
            // Same generation, one disk a sync target that did not finish
            // (the connection or a node went down midway, a Primary that
            // crashed included): the resync goes on from the UpToDate disk,
            // over every block either side still marks.
            peer.bitmap.merge(&theirs);
            if self.disk == DiskState::UpToDate {
                self.start_source(p);
            } else {
                self.start_target(p, false);
            }
            return self.drain_blocked();
        }
        match decision {
            SyncDecision::NoSync
                if hello.disk == DiskState::UpToDate
                    && self.disk == DiskState::UpToDate
                    && !(hello.role == Role::Primary && self.role == Role::Primary)
                    && (!peer.bitmap.is_clear() || !theirs.is_clear()) =>
            {
                // Same generation, yet blocks known to differ (an online verify
                // found them): resync them, from the Primary, else from the lower
                // node id. Both sides merge the same two bitmaps and agree.
                peer.bitmap.merge(&theirs);
                let source = self.role == Role::Primary
                    || (hello.role != Role::Primary && self.config.node_id < id);
                if source {
                    self.start_source(p);
                } else {
                    self.start_target(p, false);
                }
            }
            SyncDecision::NoSync => {
                peer.repl = ReplState::Established;
                // Same generation: a bitmap UUID kept for this peer is stale (the
                // confirmation of the last resync was lost with the connection).
                if hello.current & !1 == self.current & !1 && peer.bitmap_uuid != 0 {
                    let stale = peer.bitmap_uuid;
                    peer.bitmap_uuid = 0;
                    push_history(&mut self.history, stale);
                    self.persist();
                }
            }
            SyncDecision::SourceBitmap | SyncDecision::SourceFull => {
                if self.disk != DiskState::UpToDate {
                    let note = Note::Refused {
                        peer: id,
                        reason: "this node should be sync source but has no UpToDate data".into(),
                    };
                    return self.drop_connection(p, note, true);
                }
                if decision == SyncDecision::SourceFull {
                    peer.bitmap.set_all();
                }
                peer.bitmap.merge(&theirs);
                self.start_source(p);
            }
            SyncDecision::TargetBitmap | SyncDecision::TargetFull
                if hello.disk != DiskState::UpToDate =>
            {
                let note = Note::Refused {
                    peer: id,
                    reason: "the peer should be sync source but has no UpToDate data".into(),
                };
                return self.drop_connection(p, note, true);
            }
            SyncDecision::TargetBitmap | SyncDecision::TargetFull => {
                // A Primary whose disk is still a sync target (it attached
                // it, then lost the connection) has no data of its own to keep.
                if self.role == Role::Primary && self.disk != DiskState::Inconsistent {
                    let note = Note::Refused {
                        peer: id,
                        reason: "this Primary would have to become sync target".into(),
                    };
                    return self.drop_connection(p, note, true);
                }
                self.peers[p].bitmap.merge(&theirs);
                self.start_target(p, decision == SyncDecision::TargetFull);
            }
            SyncDecision::SplitBrain => {
                return self.drop_connection(p, Note::SplitBrain { peer: id }, true);
            }
            SyncDecision::Unrelated | SyncDecision::BothDiscard => {
                return self.drop_connection(p, Note::UnrelatedData { peer: id }, true);
            }
        }
        if self.disk == DiskState::Outdated
            && self.peers[p].repl == ReplState::Established
            && hello.disk == DiskState::UpToDate
            && hello.current & !1 == self.current & !1
        {
            // In sync with an UpToDate peer of the same generation: the data
            // here are as new as any.
            self.disk = DiskState::UpToDate;
            self.persist();
            self.broadcast_state();
        }
        self.drain_blocked();
    }

    /// Every block of the peer's disk is to be overwritten with ours: tells
    /// it (SyncStart) and starts the resync.
    pub(super) fn start_full_sync_as_source(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        peer.bitmap.set_all();
        let id = peer.id;
        self.out.push(Action::Send {
            peer: id,
            message: Message::SyncStart { full: true },
        });
        self.start_source(p);
    }

    /// `invalidate`: asks the first peer that can be the source of a full
    /// resync of this node (connected, in sync, UpToDate) to start one.
    pub(super) fn invalidate(&mut self) -> Result<(), AdminError> {
        if self.role == Role::Primary {
            return Err(AdminError::PrimarySyncTarget);
        }
        if self.disk == DiskState::Diskless {
            return Err(AdminError::NoUpToDateData);
        }
        let source = self.peers.iter().find(|peer| {
            peer.repl == ReplState::Established && peer.disk == Some(DiskState::UpToDate)
        });
        let Some(peer) = source else {
            return Err(AdminError::NeedConnection);
        };
        let id = peer.id;
        self.out.push(Action::Send {
            peer: id,
            message: Message::SyncRequest,
        });
        Ok(())
    }

    /// `outdate`: see [`Admin::Outdate`]. A disk already no better stays
    /// as it is.
    pub(super) fn outdate(&mut self) -> Result<(), AdminError> {
        if self.role == Role::Primary {
            return Err(AdminError::PrimaryOutdate);
        }
        if self.peers.iter().any(|p| p.conn == ConnState::Connected) {
            return Err(AdminError::ConnectedOutdate);
        }
        match self.disk {
            DiskState::Diskless => Err(AdminError::NoUpToDateData),
            DiskState::Inconsistent | DiskState::Outdated => Ok(()),
            DiskState::UpToDate => {
                self.disk = DiskState::Outdated;
                self.persist();
                Ok(())
            }
        }
    }

    /// `new-current-uuid`: see [`Admin::NewCurrentUuid`].
    pub(super) fn new_current_uuid(&mut self, clear_bitmap: bool) -> Result<(), AdminError> {
        if !clear_bitmap {
            if self.disk != DiskState::UpToDate {
                return Err(AdminError::NoUpToDateData);
            }
            self.new_generation(true);
            self.persist();
            return Ok(());
        }
        let just_created = |peer: &Peer| {
            peer.repl == ReplState::Established && peer.disk == Some(DiskState::Inconsistent)
        };
        if self.disk != DiskState::Inconsistent || self.current != JUST_CREATED {
            return Err(AdminError::NotJustCreated);
        }
        if !self.peers.iter().all(just_created) {
            return Err(AdminError::NeedConnection);
        }
        self.current = self.new_uuid();
        self.disk = DiskState::UpToDate;
        let current = self.current;
        for p in 0..self.peers.len() {
            self.peers[p].bitmap.clear_all();
            let id = self.peers[p].id;
            self.out.push(Action::Send {
                peer: id,
                message: Message::SkipSync { current },
            });
        }
        self.persist();
        self.broadcast_state();
        Ok(())
    }

    /// `invalidate-remote`: a full resync of peer `p` from this node.
    pub(super) fn invalidate_remote(&mut self, p: usize) -> Result<(), AdminError> {
        let peer = &self.peers[p];
        if peer.repl != ReplState::Established || self.disk != DiskState::UpToDate {
            return Err(AdminError::NeedConnection);
        }
        if peer.role == Some(Role::Primary) {
            return Err(AdminError::PrimarySyncTarget);
        }
        self.start_full_sync_as_source(p);
        Ok(())
    }

    /// Starts resyncing the peer's out-of-sync blocks to it (bitmap already set).
    pub(super) fn start_source(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        // The target is Inconsistent until it says it is UpToDate again.
        peer.disk = Some(DiskState::Inconsistent);
        peer.repl = ReplState::SyncSource;
        peer.resync_cursor = 0;
        peer.resync_copied = 0;
        let (id, blocks) = (peer.id, peer.bitmap.count());
        self.out.push(Action::Note(Note::SyncStarted {
            peer: id,
            source: true,
            blocks,
        }));
        self.persist();
        self.pump_resync(p);
    }

    pub(super) fn start_target(&mut self, p: usize, full: bool) {
        if full {
            self.peers[p].bitmap.set_all();
        }
        self.become_target(p);
        let peer = &self.peers[p];
        let (id, blocks) = (peer.id, peer.bitmap.count());
        self.out.push(Action::Note(Note::SyncStarted {
            peer: id,
            source: false,
            blocks,
        }));
        self.persist();
    }

    /// This disk becomes peer `p`'s sync target (Inconsistent), its resync
    /// state fresh.
    pub(super) fn become_target(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        peer.repl = ReplState::SyncTarget;
        peer.resync_copied = 0;
        peer.target_written.clear();
        peer.sync_done = None;
        peer.verify = Verify::default();
        self.disk = DiskState::Inconsistent;
    }

    /// Blocks in one resync or verify run: at most `most`, and under a rate
    /// limit at most one tick's worth, so the reads spread over the ticks.
    pub(super) fn resync_run_blocks(&self, most: u64) -> u64 {
        match self.config.resync_budget_per_tick {
            None => most,
            Some(bytes) => (bytes / BLOCK_SIZE as u64).clamp(1, most),
        }
    }

    /// Keeps up to `resync_window` resync reads in flight, within the rate
    /// limit's budget; finishes the resync when the bitmap is clear.
    pub(super) fn pump_resync(&mut self, p: usize) {
        if self.peers[p].repl != ReplState::SyncSource || !self.peers[p].handshake_done() {
            return;
        }
        let mut wrapped = false;
        let paused = self.peers[p].paused_here || self.peers[p].paused_by_peer;
        while !paused
            && self.peers[p].resync_runs < self.config.resync_window
            && self.peers[p].resync_budget > 0
        {
            let run_blocks = self.resync_run_blocks(RESYNC_RUN_BLOCKS);
            let peer = &self.peers[p];
            let busy = |block: u64| {
                peer.resync_reading.contains(&block)
                    || peer.resync_sent.contains(&block)
                    || self.writes_in_flight.contains_key(&block)
                    || self
                        .deferred_writes
                        .iter()
                        .any(|(_, b, d)| *b <= block && block < b + (d.len() / BLOCK_SIZE) as u64)
            };
            let mut candidate = peer.bitmap.next_set(peer.resync_cursor);
            while let Some(block) = candidate {
                if !busy(block) {
                    break;
                }
                candidate = peer.bitmap.next_set(block + 1);
            }
            match candidate {
                Some(block) => {
                    // A run of contiguous out-of-sync blocks, read and sent at once.
                    let mut count = 1;
                    while count < run_blocks
                        && peer.bitmap.get(block + count)
                        && !busy(block + count)
                    {
                        count += 1;
                    }
                    let gen = peer.gen;
                    let peer = &mut self.peers[p];
                    peer.resync_cursor = block + count;
                    peer.resync_reading.extend(block..block + count);
                    peer.resync_runs += 1;
                    peer.resync_budget -= (count * BLOCK_SIZE as u64) as i64;
                    let token = self.token(Op::ResyncRead {
                        peer: p,
                        gen,
                        block,
                        count,
                    });
                    self.out.push(Action::DiskRead {
                        token,
                        block,
                        count,
                    });
                }
                None if !wrapped => {
                    wrapped = true;
                    self.peers[p].resync_cursor = 0;
                }
                None => break,
            }
        }
        let peer = &self.peers[p];
        if peer.bitmap.is_clear()
            && peer.resync_reading.is_empty()
            && peer.resync_sent.is_empty()
            && !peer.sync_done_sent
        {
            self.finish_source(p);
        }
    }

    /// Everything is copied: tell the target. The resync ends (and the
    /// generations move on) only when the target confirms, in `source_confirmed`;
    /// until then a lost connection leaves both sides' UUIDs as they were.
    pub(super) fn finish_source(&mut self, p: usize) {
        let current = self.current;
        let peer = &mut self.peers[p];
        peer.sync_done_sent = true;
        let id = peer.id;
        self.out.push(Action::Send {
            peer: id,
            message: Message::SyncDone { current },
        });
    }

    /// The target flushed what it received and is UpToDate.
    pub(super) fn source_confirmed(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        peer.repl = ReplState::Established;
        peer.sync_done_sent = false;
        if peer.bitmap_uuid != 0 {
            push_history(&mut self.history, peer.bitmap_uuid);
            peer.bitmap_uuid = 0;
        }
        let (id, copied) = (peer.id, peer.resync_copied);
        if self.peers.iter().all(|q| q.repl != ReplState::SyncSource) {
            self.crashed_primary = false;
        }
        self.out
            .push(Action::Note(Note::SyncFinished { peer: id, copied }));
        self.persist();
    }

    /// Target: writes a run of resync data. A Primary writes only the blocks
    /// its application has not written since the resync started: its own
    /// write (done, or under way) is newer than what the source may have read
    /// before that write reached it. The run is acked once its parts are
    /// written.
    pub(super) fn resync_write(&mut self, p: usize, block: u64, data: Bytes) {
        let count = (data.len() / BLOCK_SIZE) as u64;
        let written = &self.peers[p].target_written;
        let keep: Vec<bool> = (block..block + count)
            .map(|b| !written.contains(&b))
            .collect();
        // Contiguous runs of kept blocks: (offset in the run, length).
        let mut parts: Vec<(u64, u64)> = Vec::new();
        for (i, kept) in keep.iter().enumerate() {
            let i = i as u64;
            match parts.last_mut() {
                Some((start, len)) if *kept && *start + *len == i => *len += 1,
                _ if *kept => parts.push((i, 1)),
                _ => {}
            }
        }
        let peer = &mut self.peers[p];
        let run = peer.next_run;
        peer.next_run += 1;
        peer.resync_parts
            .insert(run, (block, count, parts.len() as u32));
        if parts.is_empty() {
            return self.resync_part_written(p, run);
        }
        let gen = peer.gen;
        for (start, len) in parts {
            let peer = &mut self.peers[p];
            peer.resync_writes += 1;
            peer.resync_copied += len;
            let token = self.token(Op::ResyncWrite {
                peer: p,
                gen,
                block: block + start,
                count: len,
                run,
            });
            let bytes = start as usize * BLOCK_SIZE..(start + len) as usize * BLOCK_SIZE;
            self.submit_write(token, block + start, data.slice(bytes));
        }
    }

    /// Target: one part of run `run` is written (or there was none to
    /// write); the last one acks the run to the source.
    pub(super) fn resync_part_written(&mut self, p: usize, run: u64) {
        let peer = &mut self.peers[p];
        let Some((block, count, left)) = peer.resync_parts.get_mut(&run) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left > 0 {
            return;
        }
        let (block, count) = (*block, *count);
        peer.resync_parts.remove(&run);
        let id = peer.id;
        self.out.push(Action::Send {
            peer: id,
            message: Message::ResyncAck {
                block,
                count: count as u32,
            },
        });
    }

    pub(super) fn maybe_finish_target(&mut self, p: usize) {
        let peer = &self.peers[p];
        if peer.conn != ConnState::Connected || peer.repl != ReplState::SyncTarget {
            return;
        }
        let Some(current) = peer.sync_done else {
            return;
        };
        if peer.resync_writes > 0 {
            return;
        }
        // Everything copied must be stable before this disk calls itself UpToDate.
        let gen = peer.gen;
        self.peers[p].sync_done = None;
        let token = self.token(Op::SyncDoneFlush {
            peer: p,
            gen,
            current,
        });
        self.out.push(Action::DiskFlush { token });
    }

    pub(super) fn finish_target(&mut self, p: usize, current: u64) {
        if self.current != current && self.current != JUST_CREATED {
            push_history(&mut self.history, self.current);
        }
        self.current = current;
        self.disk = DiskState::UpToDate;
        self.crashed_primary = false;
        let peer = &mut self.peers[p];
        peer.bitmap_uuid = 0;
        peer.bitmap.clear_all();
        peer.repl = ReplState::Established;
        let (id, copied) = (peer.id, peer.resync_copied);
        self.out
            .push(Action::Note(Note::SyncFinished { peer: id, copied }));
        self.persist();
        self.broadcast_state();
    }
}

/// A peer's resync budget when a tick has just refilled it: unlimited is a
/// budget no run exhausts.
pub(super) fn budget_at_start(per_tick: Option<u64>) -> i64 {
    per_tick.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64)
}
