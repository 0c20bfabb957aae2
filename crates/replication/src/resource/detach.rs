//! Letting the disk go and taking it back: `drbdadm detach` (of a
//! Secondary, or of a Primary that goes on with a peer's disk), a disk
//! failure under `on-io-error detach`, `attach`, and the diskless
//! Primary's I/O (reads from a peer, and the peer serving them).

use super::*;

impl Resource {
    pub(super) fn detach(&mut self, id: u64) {
        let result = if self.disk == DiskState::Diskless && self.detaching.is_none() {
            Ok(())
        } else if self.detaching.is_some()
            || self.keep_disk_ask.is_some()
            || self.primary_detach.is_some()
        {
            Err(AdminError::Busy)
        } else if self.role == Role::Primary && self.detach_peer().is_none() {
            // Without a disk it serves the application from a peer's.
            Err(AdminError::PrimaryDetach)
        } else if self.peers.iter().any(|p| {
            // A Primary without UpToDate data of its own (diskless, or its
            // disk this node's sync target) reads and writes this disk.
            p.lends_disk
                || (p.handshake_done()
                    && p.role == Some(Role::Primary)
                    && (p.disk == Some(DiskState::Diskless) || p.repl == ReplState::SyncSource))
        }) {
            Err(AdminError::DisklessPrimaryUses)
        } else if self
            .peers
            .iter()
            .any(|p| p.conn == ConnState::Connected && p.repl == ReplState::Off)
        {
            // The Hello under way names this disk: the peer must not count on it
            // before it hears of the detach.
            Err(AdminError::Handshaking)
        } else if self.role == Role::Primary {
            // The peer whose disk it will use promises to keep it first, or
            // both could detach at once and leave the data nowhere.
            let p = self.detach_peer().expect("checked");
            let tid = self.next_tid;
            self.next_tid += 1;
            self.keep_disk_ask = Some(KeepDiskAsk { id, tid, peer: p });
            let peer = self.peers[p].id;
            return self.out.push(Action::Send {
                peer,
                message: Message::KeepDiskRequest { tid },
            });
        } else {
            return self.start_detach(id);
        };
        self.out.push(Action::AdminDone { id, result });
    }

    /// `drbdadm detach`, once it may go ahead.
    pub(super) fn start_detach(&mut self, id: u64) {
        self.let_disk_go(DetachCause::Admin(id));
        self.maybe_finish_detach();
    }

    /// Gives up the disk: Diskless at once, the disk released (in
    /// `maybe_finish_detach`) once the actions in flight on it are done.
    pub(super) fn let_disk_go(&mut self, cause: DetachCause) {
        for p in 0..self.peers.len() {
            self.stop_disk_work(p);
        }
        self.detached_disk = self.disk;
        self.detached_generation = Some((self.current, self.history));
        self.disk = DiskState::Diskless;
        self.detaching = Some(cause);
        // Peers' reads not yet started find no disk here.
        self.pump_serve_reads();
        self.broadcast_state();
    }

    /// A peer a Primary's detach can hand its I/O to.
    pub(super) fn detach_peer(&self) -> Option<usize> {
        (0..self.peers.len()).find(|&p| self.can_take_over(p))
    }

    /// Peer `p` is connected, UpToDate and has no block known to differ.
    fn can_take_over(&self, p: usize) -> bool {
        let peer = &self.peers[p];
        peer.handshake_done()
            && peer.repl == ReplState::Established
            && peer.disk == Some(DiskState::UpToDate)
            && peer.bitmap.is_clear()
    }

    /// A Primary's detach, its writes held: lets the disk go once nothing is
    /// in flight here and the peer confirmed every write as stable; gives up
    /// if the peer can no longer take over.
    pub(super) fn maybe_finish_primary_detach(&mut self) {
        let Some((id, p)) = self.primary_detach else {
            return;
        };
        if self.role != Role::Primary || !self.can_take_over(p) {
            self.primary_detach = None;
            self.broadcast_state();
            self.out.push(Action::AdminDone {
                id,
                result: Err(AdminError::PrimaryDetach),
            });
            return self.drain_blocked();
        }
        let peer = &self.peers[p];
        if !self.ops.is_empty() || !self.deferred_writes.is_empty() || !peer.transfer_log.is_empty()
        {
            return;
        }
        self.primary_detach = None;
        self.start_detach(id);
        self.drain_blocked();
    }

    /// A peer's answer to this Primary's `KeepDiskRequest`.
    pub(super) fn keep_disk_reply(&mut self, p: usize, tid: u64, granted: bool) {
        let Some(ask) = self.keep_disk_ask.take_if(|a| a.tid == tid && a.peer == p) else {
            return;
        };
        if granted && self.role == Role::Primary && self.can_take_over(p) {
            self.primary_detach = Some((ask.id, p));
            self.close_epochs();
            return;
        }
        if granted {
            // Our state, unchanged, releases the peer's promise.
            self.broadcast_state();
        }
        self.out.push(Action::AdminDone {
            id: ask.id,
            result: Err(AdminError::PrimaryDetach),
        });
    }

    /// Ends resync and verify with peer `p` (this node or the peer lost its disk).
    pub(super) fn stop_disk_work(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        match peer.repl {
            ReplState::VerifyS | ReplState::VerifyT => {
                let id = peer.id;
                self.out
                    .push(Action::Note(Note::VerifyAborted { peer: id }));
            }
            ReplState::SyncSource | ReplState::SyncTarget => {}
            _ => return,
        }
        let peer = &mut self.peers[p];
        peer.repl = ReplState::Established;
        peer.verify = Verify::default();
        peer.clear_resync();
    }

    /// The detach completes once no local disk action is in flight.
    pub(super) fn maybe_finish_detach(&mut self) {
        let Some(cause) = self.detaching else { return };
        if !self.ops.is_empty() || !self.deferred_writes.is_empty() {
            return;
        }
        self.detaching = None;
        let mut meta = self.meta();
        // Left clean: what a Primary writes from now on goes to peers only.
        meta.primary = self.crashed_primary;
        if let Some((current, history)) = self.detached_generation.take() {
            meta.current = current;
            meta.history = history;
        }
        self.left_disk_at = Some(meta.current);
        self.out.push(Action::DetachDisk(meta));
        if let DetachCause::Admin(id) = cause {
            self.out.push(Action::AdminDone { id, result: Ok(()) });
        }
    }

    /// A peer detached its disk: what it may have dropped is out of sync with it,
    /// and a Primary goes on in a new generation without it.
    pub(super) fn peer_lost_disk(&mut self, p: usize) {
        self.stop_disk_work(p);
        let peer = &mut self.peers[p];
        for &(_, block, count) in &peer.transfer_log {
            peer.bitmap.set_range(block, count);
        }
        // Acks it sends from now on are for writes it did not keep: a request
        // of a diskless Primary no longer counts on it.
        for request in self.requests.values_mut() {
            if request.needs_peer {
                request.waiting.retain(|w| w.peer() != p);
            }
            request.confirmed_by &= !(1 << p);
        }
        let ids: Vec<u64> = self.requests.keys().copied().collect();
        for id in ids {
            self.try_complete(id);
        }
        // A Primary going on without the peer's disk, or a Secondary that
        // keeps the only copy of what a diskless Primary writes: a new
        // generation, the old one the peer's bitmap UUID.
        if self.role == Role::Primary || self.peers[p].role == Some(Role::Primary) {
            self.new_generation(false);
        }
        self.persist();
    }

    /// Why `attach` would be refused now, if it would.
    pub fn attach_refused(&self) -> Option<AdminError> {
        if self.disk != DiskState::Diskless || self.detaching.is_some() {
            return Some(AdminError::Attached);
        }
        let source = self
            .data_peer()
            .filter(|&p| self.peers[p].repl == ReplState::Established);
        // With more peers, one that went away mid-resync could come back
        // UpToDate but lacking writes the others confirmed: not handled.
        if self.role == Role::Primary && (source.is_none() || self.peers.len() != 1) {
            return Some(AdminError::PrimaryAttach);
        }
        None
    }

    pub(super) fn attach(&mut self, mut meta: Meta) -> Result<(), AdminError> {
        if let Some(refused) = self.attach_refused() {
            return Err(refused);
        }
        if self.role == Role::Primary {
            return self.attach_to_primary(meta);
        }
        if std::mem::take(&mut self.last_disk_failed) {
            // The last disk failed: what it holds, and what its meta-data say
            // it holds, are not to be trusted. It starts over as a new disk
            // does, and the handshake copies all of an UpToDate peer's.
            meta.current = JUST_CREATED;
            meta.history = [0; HISTORY_LEN];
            meta.disk = DiskState::Inconsistent;
            meta.primary = false;
            meta.activity_log.clear();
            for peer in &mut meta.peers {
                peer.bitmap_uuid = 0;
                peer.bitmap.clear_all();
            }
        }
        self.current = meta.current;
        self.history = meta.history;
        self.disk = if meta.disk == DiskState::Diskless {
            DiskState::Inconsistent
        } else {
            meta.disk
        };
        self.crashed_primary = meta.primary;
        self.activity_log.clear();
        for peer in &mut self.peers {
            let stored = meta.peers.iter().find(|m| m.node_id == peer.id);
            peer.bitmap_uuid = stored.map_or(0, |m| m.bitmap_uuid);
            peer.bitmap = stored
                .map(|m| Bitmap::from_words(self.config.blocks, m.bitmap.words().to_vec()))
                .unwrap_or_else(|| Bitmap::new(self.config.blocks));
            for extent in &meta.activity_log {
                let size = self.config.al_extent_blocks;
                peer.bitmap.set_range(extent * size, size);
            }
        }
        // Compare generations and bitmaps again: a new handshake.
        for p in 0..self.peers.len() {
            if self.peers[p].conn == ConnState::Connected {
                let id = self.peers[p].id;
                self.out.push(Action::Disconnect { peer: id });
                self.lost_connection(p);
            }
        }
        self.persist();
        Ok(())
    }

    /// `attach` on a diskless Primary: the disk becomes the sync target of
    /// a connected peer with UpToDate data, while the Primary goes on serving
    /// I/O (reads of blocks the disk still lacks from that peer, writes to
    /// both, each standing once the peer has it). The disk it gave up, with
    /// the generation it was left with and not failed since, lacks only what
    /// its meta-data and the peer mark; any other disk, everything.
    fn attach_to_primary(&mut self, meta: Meta) -> Result<(), AdminError> {
        // Checked by `attach_refused`.
        let Some(p) = self.data_peer() else {
            return Err(AdminError::PrimaryAttach);
        };
        let left_at = self.left_disk_at.take();
        let failed = std::mem::take(&mut self.last_disk_failed);
        let same_disk = !failed
            && meta.disk != DiskState::Inconsistent
            && left_at.is_some_and(|g| g & !1 == meta.current & !1);
        for q in 0..self.peers.len() {
            let peer_id = self.peers[q].id;
            let stored = meta.peers.iter().find(|m| m.node_id == peer_id);
            let mut bitmap = Bitmap::new(self.config.blocks);
            match stored {
                Some(stored) if same_disk && q == p => {
                    bitmap.merge(&stored.bitmap);
                    for extent in &meta.activity_log {
                        let size = self.config.al_extent_blocks;
                        bitmap.set_range(extent * size, size);
                    }
                }
                _ => bitmap.set_all(),
            }
            self.peers[q].bitmap = bitmap;
        }
        self.activity_log.clear();
        let peer = &mut self.peers[p];
        let words = peer.bitmap.words().to_vec();
        let id = peer.id;
        self.out.push(Action::Send {
            peer: id,
            message: Message::TargetBitmap { words },
        });
        // The disk written from here on, and Inconsistent; its meta-data
        // take this Primary's generation and what the disk knows it lacks.
        self.become_target(p);
        self.peers[p].awaiting_source_bitmap = true;
        self.persist();
        // What the peer marked is known once it answers: until then every
        // read goes to it.
        self.peers[p].bitmap.set_all();
        self.broadcast_state();
        Ok(())
    }

    /// A `TargetBitmap` from peer `p`: on a Primary that attached a disk,
    /// the source's answer (every block the disk lacks); on its peer, the
    /// Primary's ask, which this node answers and resyncs as source.
    pub(super) fn target_bitmap(&mut self, p: usize, words: Vec<u64>) {
        if self.disk == DiskState::Diskless {
            // Crossed this node's detach (or disk failure): nothing to do.
            return;
        }
        let peer = &self.peers[p];
        if peer.awaiting_source_bitmap && words.len() as u64 == self.config.blocks.div_ceil(64) {
            let mut lacks = Bitmap::from_words(self.config.blocks, words);
            // Written here since the attach, the write done: current on this
            // disk. (One still under way clears its blocks when done.)
            for &b in &peer.target_written {
                let under_way = self.writes_in_flight.contains_key(&b)
                    || self.deferred_writes.iter().any(|(_, first, data)| {
                        (*first..*first + (data.len() / BLOCK_SIZE) as u64).contains(&b)
                    });
                if !under_way {
                    lacks.clear(b);
                }
            }
            let peer = &mut self.peers[p];
            peer.awaiting_source_bitmap = false;
            peer.bitmap = lacks;
            let (id, blocks) = (peer.id, peer.bitmap.count());
            self.out.push(Action::Note(Note::SyncStarted {
                peer: id,
                source: false,
                blocks,
            }));
            return self.persist();
        }
        if peer.role != Some(Role::Primary)
            || peer.repl != ReplState::Established
            || self.disk != DiskState::UpToDate
            || words.len() as u64 != self.config.blocks.div_ceil(64)
        {
            return self.protocol_error(
                p,
                format!(
                    "a target bitmap of {} words for a resync this node cannot source",
                    words.len()
                ),
            );
        }
        let theirs = Bitmap::from_words(self.config.blocks, words);
        let peer = &mut self.peers[p];
        peer.bitmap.merge(&theirs);
        // The answer goes before any resync data.
        let (id, words) = (peer.id, peer.bitmap.words().to_vec());
        self.out.push(Action::Send {
            peer: id,
            message: Message::TargetBitmap { words },
        });
        self.start_source(p);
    }

    /// A Primary that is a sync target: whether its disk still lacks any of
    /// `count` blocks from `block` (those are read from the source).
    pub(super) fn lacks_any(&self, block: u64, count: u64) -> bool {
        self.peers.iter().any(|peer| {
            peer.repl == ReplState::SyncTarget && (block..block + count).any(|b| peer.bitmap.get(b))
        })
    }

    /// `on-io-error detach`: Diskless at once, the disk released once the
    /// actions in flight on it are done (they fail or succeed as it goes).
    pub(super) fn disk_failed(&mut self) {
        self.out.push(Action::Note(Note::DiskFailed));
        self.last_disk_failed = true;
        // A detach asked for and not yet under way is done by this one.
        let asked = match (self.keep_disk_ask.take(), self.primary_detach.take()) {
            (Some(ask), _) => Some(ask.id),
            (None, Some((id, _))) => Some(id),
            (None, None) => None,
        };
        // The copy here is on the disk being given up: what is under way
        // stands only if an UpToDate peer confirms it.
        for request in self.requests.values_mut() {
            request.needs_peer = true;
        }
        self.let_disk_go(asked.map_or(DetachCause::IoError, DetachCause::Admin));
        // A Hello under way named the disk, and a peer must not count on it:
        // a new connection's Hello says it is gone.
        for p in 0..self.peers.len() {
            let peer = &self.peers[p];
            if peer.conn == ConnState::Connected && peer.repl == ReplState::Off {
                let note = Note::Refused {
                    peer: peer.id,
                    reason: "this node's disk failed during the handshake".into(),
                };
                self.drop_connection(p, note, false);
            }
        }
        self.drain_blocked();
    }

    /// UpToDate data to serve the application: on the local disk, or, with
    /// none, on a connected peer.
    pub(super) fn has_data(&self) -> bool {
        match self.disk {
            DiskState::UpToDate => true,
            DiskState::Diskless => self.data_peer().is_some(),
            // A disk being resynced from a connected UpToDate peer: what it
            // lacks, that peer has.
            DiskState::Inconsistent => self
                .data_peer()
                .is_some_and(|p| self.peers[p].repl == ReplState::SyncTarget),
            DiskState::Outdated => false,
        }
    }

    /// A connected peer with UpToDate data, for a diskless Primary's reads.
    pub(super) fn data_peer(&self) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.handshake_done() && p.disk == Some(DiskState::UpToDate) && p.same_data)
    }

    /// A diskless Primary's read, from a peer's UpToDate disk, in parts of at
    /// most [`DATA_REQUEST_MAX_BLOCKS`].
    pub(super) fn remote_read(&mut self, id: u64, block: u64, count: u64) {
        let Some(p) = self.data_peer() else {
            return self.complete(id, Err(IoError::NoUpToDateData));
        };
        let most = u64::from(DATA_REQUEST_MAX_BLOCKS);
        let parts = count.div_ceil(most) as usize;
        self.remote_reads.insert(
            id,
            RemoteRead {
                parts: vec![None; parts],
                missing: parts,
            },
        );
        for index in 0..parts {
            let first = block + index as u64 * most;
            let n = most.min(block + count - first);
            let req = self.next_req;
            self.next_req += 1;
            self.remote_parts.insert(
                req,
                RemotePart {
                    id,
                    index,
                    peer: p,
                    count: n,
                },
            );
            let peer = self.peers[p].id;
            self.out.push(Action::Send {
                peer,
                message: Message::DataRequest {
                    req,
                    block: first,
                    count: n as u32,
                },
            });
        }
    }

    /// A peer answered part of a remote read.
    pub(super) fn data_reply(&mut self, p: usize, req: u64, data: Option<Bytes>) {
        let part = match self.remote_parts.remove(&req) {
            Some(part) if part.peer == p => part,
            other => {
                if let Some(part) = other {
                    self.remote_parts.insert(req, part);
                }
                return self.protocol_error(p, format!("a reply to data request {req}, not asked"));
            }
        };
        let expected = part.count as usize * BLOCK_SIZE;
        let data = match data {
            Some(data) if data.len() == expected => data,
            Some(data) => {
                self.fail_remote_read(part.id, IoError::Disk);
                return self.protocol_error(
                    p,
                    format!("{} bytes for a data request of {expected}", data.len()),
                );
            }
            None => return self.fail_remote_read(part.id, IoError::Disk),
        };
        let Some(read) = self.remote_reads.get_mut(&part.id) else {
            return;
        };
        read.parts[part.index] = Some(data);
        read.missing -= 1;
        if read.missing > 0 {
            return;
        }
        let read = self.remote_reads.remove(&part.id).expect("present");
        let mut parts: Vec<Bytes> = read.parts.into_iter().flatten().collect();
        let data = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Bytes::from(parts.concat())
        };
        self.complete(part.id, Ok(Some(data)));
    }

    /// Ends a remote read with `error`; replies to its other parts are
    /// then not expected.
    pub(super) fn fail_remote_read(&mut self, id: u64, error: IoError) {
        if self.remote_reads.remove(&id).is_some() {
            self.remote_parts.retain(|_, part| part.id != id);
            self.complete(id, Err(error));
        }
    }

    /// Reads peers asked for, in order, each once no write to its blocks is
    /// in flight here.
    pub(super) fn pump_serve_reads(&mut self) {
        while let Some(read) = self.serve_queue.front() {
            let (p, gen, req, block, count) =
                (read.peer, read.gen, read.req, read.block, read.count);
            let peer = &self.peers[p];
            if peer.gen != gen || !peer.handshake_done() {
                self.serve_queue.pop_front();
                continue;
            }
            if self.disk != DiskState::UpToDate {
                self.serve_queue.pop_front();
                let id = peer.id;
                self.out.push(Action::Send {
                    peer: id,
                    message: Message::DataReply { req, data: None },
                });
                continue;
            }
            if (block..block + count).any(|b| self.block_busy(b)) {
                return;
            }
            self.serve_queue.pop_front();
            let token = self.token(Op::ServeRead { peer: p, gen, req });
            self.out.push(Action::DiskRead {
                token,
                block,
                count,
            });
        }
    }
}
