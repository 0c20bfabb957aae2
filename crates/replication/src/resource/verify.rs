//! Online verify (`drbdadm verify`): VerifyS digests runs of blocks,
//! VerifyT compares them with its own.

use super::*;

impl Resource {
    pub(super) fn start_verify(&mut self, p: usize, alg: VerifyAlg) -> Result<(), AdminError> {
        let peer = &self.peers[p];
        if peer.repl != ReplState::Established
            || peer.disk != Some(DiskState::UpToDate)
            || self.disk != DiskState::UpToDate
        {
            return Err(AdminError::NeedConnection);
        }
        self.begin_verify(p, alg, true);
        self.pump_verify(p);
        Ok(())
    }

    /// A local write in flight or queued on the block: verify must not read it.
    pub(super) fn block_busy(&self, block: u64) -> bool {
        self.writes_in_flight.contains_key(&block)
            || self
                .deferred_writes
                .iter()
                .any(|(_, b, d)| *b <= block && block < b + (d.len() / BLOCK_SIZE) as u64)
    }

    /// Starts an online verify with peer `p`, as its source (VerifyS) or
    /// target (VerifyT).
    pub(super) fn begin_verify(&mut self, p: usize, alg: VerifyAlg, source: bool) {
        let peer = &mut self.peers[p];
        peer.repl = if source {
            ReplState::VerifyS
        } else {
            ReplState::VerifyT
        };
        peer.verify = Verify {
            alg: Some(alg),
            ..Verify::default()
        };
        let id = peer.id;
        self.out
            .push(Action::Note(Note::VerifyStarted { peer: id, source }));
    }

    /// Source: keeps up to `resync_window` runs under comparison; ends the verify
    /// when every block has been compared.
    pub(super) fn pump_verify(&mut self, p: usize) {
        if self.peers[p].repl != ReplState::VerifyS {
            return;
        }
        let blocks = self.config.blocks;
        while self.peers[p].verify.runs < self.config.resync_window
            && self.peers[p].resync_budget > 0
        {
            let run_blocks = self.resync_run_blocks(VERIFY_RUN_BLOCKS);
            let first = self.peers[p].verify.cursor;
            if first >= blocks || self.block_busy(first) {
                break;
            }
            let mut count = 1;
            while count < run_blocks && first + count < blocks && !self.block_busy(first + count) {
                count += 1;
            }
            let gen = self.peers[p].gen;
            let verify = &mut self.peers[p].verify;
            verify.cursor = first + count;
            verify.runs += 1;
            verify.busy.extend(first..first + count);
            self.peers[p].resync_budget -= (count * BLOCK_SIZE as u64) as i64;
            let token = self.token(Op::VerifyRead {
                peer: p,
                gen,
                block: first,
                count,
            });
            self.out.push(Action::DiskRead {
                token,
                block: first,
                count,
            });
        }
        let verify = &self.peers[p].verify;
        if verify.cursor >= blocks && verify.runs == 0 {
            let found = verify.found;
            let peer = &mut self.peers[p];
            peer.repl = ReplState::Established;
            peer.verify = Verify::default();
            let id = peer.id;
            self.out.push(Action::Send {
                peer: id,
                message: Message::VerifyDone { found },
            });
            self.out
                .push(Action::Note(Note::VerifyFinished { peer: id, found }));
            self.persist();
        }
    }

    pub(super) fn verify_read_done(
        &mut self,
        p: usize,
        gen: u64,
        block: u64,
        count: u64,
        data: Option<Bytes>,
    ) {
        let peer = &mut self.peers[p];
        if peer.gen != gen || peer.repl != ReplState::VerifyS {
            return;
        }
        let Some(alg) = peer.verify.alg else { return };
        match data {
            Some(data) if data.len() == count as usize * BLOCK_SIZE => {
                let digests = data
                    .chunks(BLOCK_SIZE)
                    .flat_map(|b| alg.digest(b))
                    .collect();
                let id = peer.id;
                self.out.push(Action::Send {
                    peer: id,
                    message: Message::OvRequest {
                        block,
                        alg,
                        digests,
                    },
                });
            }
            _ => {
                // The local read failed: these blocks cannot be compared.
                let verify = &mut peer.verify;
                for b in block..block + count {
                    verify.busy.remove(&b);
                    verify.dirtied.remove(&b);
                }
                verify.done += count;
                verify.runs = verify.runs.saturating_sub(1);
                self.pump_verify(p);
            }
        }
    }

    /// Source: the target's comparison of a run.
    pub(super) fn verify_reply(&mut self, p: usize, block: u64, count: u32, differ: u64) {
        let peer = &mut self.peers[p];
        if peer.repl != ReplState::VerifyS {
            return;
        }
        let verify = &mut peer.verify;
        let mut out_of_sync = 0u64;
        for i in 0..u64::from(count) {
            let b = block + i;
            verify.busy.remove(&b);
            let overtaken = verify.dirtied.remove(&b);
            if differ & (1 << i) != 0 && !overtaken {
                out_of_sync |= 1 << i;
                peer.bitmap.set_range(b, 1);
            }
        }
        verify.found += u64::from(out_of_sync.count_ones());
        verify.done += u64::from(count);
        verify.runs = verify.runs.saturating_sub(1);
        let id = peer.id;
        self.out.push(Action::Send {
            peer: id,
            message: Message::OvResult {
                block,
                count,
                out_of_sync,
            },
        });
        self.pump_verify(p);
    }

    /// Target: reads the queued runs, in order, once no write to them is in flight.
    pub(super) fn pump_verify_target(&mut self, p: usize) {
        if self.peers[p].repl != ReplState::VerifyT {
            self.peers[p].verify.queue.clear();
            return;
        }
        while let Some((block, alg, _)) = self.peers[p].verify.queue.front() {
            let (block, alg) = (*block, *alg);
            let count = {
                let (_, _, digests) = self.peers[p].verify.queue.front().expect("front");
                (digests.len() / alg.digest_len()) as u64
            };
            if (block..block + count).any(|b| self.block_busy(b)) {
                break;
            }
            let (_, _, digests) = self.peers[p].verify.queue.pop_front().expect("front");
            let gen = self.peers[p].gen;
            self.peers[p].verify.busy.extend(block..block + count);
            let token = self.token(Op::OvTargetRead {
                peer: p,
                gen,
                block,
                alg,
                digests,
            });
            self.out.push(Action::DiskRead {
                token,
                block,
                count,
            });
        }
    }

    pub(super) fn verify_target_read_done(
        &mut self,
        p: usize,
        gen: u64,
        block: u64,
        alg: VerifyAlg,
        digests: &[u8],
        data: Option<Bytes>,
    ) {
        let peer = &mut self.peers[p];
        if peer.gen != gen || peer.repl != ReplState::VerifyT {
            return;
        }
        let count = (digests.len() / alg.digest_len()) as u64;
        let mut differ = 0u64;
        for i in 0..count {
            let b = block + i;
            peer.verify.busy.remove(&b);
            let overtaken = peer.verify.dirtied.remove(&b);
            let Some(data) = data
                .as_ref()
                .filter(|d| d.len() == count as usize * BLOCK_SIZE)
            else {
                continue;
            };
            let at = i as usize;
            let mine = alg.digest(&data[at * BLOCK_SIZE..(at + 1) * BLOCK_SIZE]);
            if !overtaken && mine[..] != digests[at * alg.digest_len()..(at + 1) * alg.digest_len()]
            {
                differ |= 1 << i;
            }
        }
        peer.verify.done += count;
        let id = peer.id;
        self.out.push(Action::Send {
            peer: id,
            message: Message::OvReply {
                block,
                count: count as u32,
                differ,
            },
        });
    }
}
