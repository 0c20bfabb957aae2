//! The distributed lock manager: one sans-IO state machine per node and lock domain.
//!
//! A *lock domain* is named by the volume's UUID (32 upper-case hex digits, as
//! OCFS2 names it, see [`domain_name`]); its *lock resources* are named as OCFS2
//! names them ([`ocfs2_lock_name`]). Each node holds at most one lock per resource,
//! in mode NL, PR or EX ([`Mode::compatible`] is the matrix). The user calls
//! [`Dlm::lock`] (a new lock or an up-conversion), [`Dlm::downconvert`] and
//! [`Dlm::unlock`]; it is told [`Output::Granted`] (the AST, with the lock value
//! block) and [`Output::Blocking`] (the BAST: another node waits for a mode the
//! user's lock is incompatible with; the user finishes its work and downconverts).
//!
//! **Mastery.** Every resource is mastered by one node of the current view: the
//! member with the highest hash of (name, node number) (rendezvous hashing), so no
//! lookup message is needed and a node's death moves only the resources it
//! mastered. The master keeps the granted modes and a FIFO queue of waiting
//! requests; it grants the head when it is compatible with every other holder and
//! sends one BAST per incompatible holder otherwise.
//!
//! **Views and rebuilds.** The view is the set of live members (node, generation)
//! that membership reported; it is identified by a digest carried in every lock
//! message, and messages of another view are ignored. On every view change a node
//! forgets what it mastered and rebuilds it: it asks every member for its locks on
//! the resources it now masters ([`DlmMessage::SyncRequest`] with a fresh nonce),
//! and grants nothing until every member answered in the same view. A node's own
//! locks (granted modes, waiting requests, the latest LVB it saw or wrote) are the
//! truth the rebuild starts from; the LVB with the highest version wins.
//!
//! **Recovery.** A dead incarnation's locks disappear with the rebuild, but until the
//! layer above has recovered it (replayed its journal) and said so with
//! [`Dlm::recovery_done`], no request is granted anywhere in the domain except
//! those made with [`RECOVERY`] (which the recovering layer uses for, e.g., the
//! dead node's journal lock). So nobody can be granted a lock the dead node held
//! before its journal is replayed. The lowest-numbered member is told to recover
//! ([`Output::Recover`]); if it dies, the next one is. Deaths and recoveries are
//! shared with every member during rebuilds and by a [`DlmMessage::RecoveryDone`]
//! broadcast.
//!
//! Messages travel over membership's reliable channel (in order, once, per peer
//! incarnation), so a broken and restored connection loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::message::DlmMessage;
use crate::message::LockState;

/// Bytes in a lock value block (o2dlm's DLM_LVB_LEN).
pub const LVB_LEN: usize = 64;
/// Longest lock resource name (o2dlm's DLM_LOCKID_NAME_MAX).
pub const MAX_LOCK_NAME: usize = 32;
/// Request flag: granted even while a dead node's recovery is pending (for the
/// recovering layer itself).
pub const RECOVERY: u8 = 1;

/// A lock mode. NL is held but gives no access (it keeps the LVB and the
/// resource cached); PR is shared read; EX is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Nl,
    Pr,
    Ex,
}

impl Mode {
    /// Whether locks in `self` and `other` may be held at once by two nodes.
    pub fn compatible(self, other: Mode) -> bool {
        matches!(
            (self, other),
            (Mode::Nl, _) | (_, Mode::Nl) | (Mode::Pr, Mode::Pr)
        )
    }

    /// The wire code (o2dlm's LKM_NLMODE, LKM_PRMODE, LKM_EXMODE).
    pub fn code(self) -> u8 {
        match self {
            Mode::Nl => 0,
            Mode::Pr => 3,
            Mode::Ex => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Mode> {
        match code {
            0 => Some(Mode::Nl),
            3 => Some(Mode::Pr),
            5 => Some(Mode::Ex),
            _ => None,
        }
    }

    /// The highest mode a holder may keep while someone waits for `wanted`.
    pub fn highest_compatible(wanted: Mode) -> Mode {
        match wanted {
            Mode::Nl => Mode::Ex,
            Mode::Pr => Mode::Pr,
            Mode::Ex => Mode::Nl,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Nl => "NL",
            Mode::Pr => "PR",
            Mode::Ex => "EX",
        })
    }
}

/// A lock resource name: 1 to 32 bytes (OCFS2's are 31 printable characters, its
/// dentry locks binary).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockName(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockNameError {
    #[error("a lock name cannot be empty")]
    Empty,
    #[error("a lock name is at most {MAX_LOCK_NAME} bytes, not {0}")]
    TooLong(usize),
}

impl LockName {
    pub fn new(bytes: &[u8]) -> Result<LockName, LockNameError> {
        match bytes.len() {
            0 => Err(LockNameError::Empty),
            n if n > MAX_LOCK_NAME => Err(LockNameError::TooLong(n)),
            _ => Ok(LockName(bytes.to_vec())),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// OCFS2's lock types and the character that starts their names (ocfs2_lockid.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockType {
    Meta,
    Data,
    Super,
    Rename,
    ReadWrite,
    Dentry,
    Open,
    Flock,
    QuotaInfo,
    NfsSync,
    OrphanScan,
    Refcount,
    TrimFs,
}

impl LockType {
    pub fn char(self) -> char {
        match self {
            LockType::Meta => 'M',
            LockType::Data => 'D',
            LockType::Super => 'S',
            LockType::Rename => 'R',
            LockType::ReadWrite => 'W',
            LockType::Dentry => 'N',
            LockType::Open => 'O',
            LockType::Flock => 'F',
            LockType::QuotaInfo => 'Q',
            LockType::NfsSync => 'Y',
            LockType::OrphanScan => 'P',
            LockType::Refcount => 'T',
            LockType::TrimFs => 'I',
        }
    }
}

/// The name OCFS2 gives a lock on block `blkno` (inode generation `generation`):
/// the type character, six '0' pad characters, the block number as 16 lower-case
/// hex digits and the generation as 8 (31 characters). Dentry locks use a binary
/// layout of their own and are not made here.
pub fn ocfs2_lock_name(kind: LockType, blkno: u64, generation: u32) -> LockName {
    let text = format!("{}000000{blkno:016x}{generation:08x}", kind.char());
    LockName(text.into_bytes())
}

/// The lock domain of a volume: its UUID as 32 upper-case hex digits.
pub fn domain_name(uuid: &[u8; 16]) -> String {
    uuid.iter().map(|b| format!("{b:02X}")).collect()
}

/// Something the user or the host must know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to `to` (incarnation `generation`) over membership's channel.
    Send {
        to: u8,
        generation: u64,
        message: DlmMessage,
    },
    /// The AST: the lock is granted at `mode`; `lvb` is the resource's value block.
    Granted {
        name: LockName,
        mode: Mode,
        lvb: [u8; LVB_LEN],
        lvb_version: u64,
    },
    /// The BAST: another node waits for `wanted`; downconvert to at most
    /// `Mode::highest_compatible(wanted)` when done.
    Blocking { name: LockName, wanted: Mode },
    /// Recover this dead incarnation (replay its journal, ...), then call
    /// [`Dlm::recovery_done`].
    Recover { node: u8, generation: u64 },
}

/// A call the lock manager refuses; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    #[error("{0}: a request is already waiting on this lock")]
    Busy(LockName),
    #[error("{0}: not held")]
    NotHeld(LockName),
    #[error("{name}: cannot downconvert from {from} to {to}")]
    NotLower {
        name: LockName,
        from: Mode,
        to: Mode,
    },
}

#[derive(Debug, Clone)]
struct LocalLock {
    granted: Option<Mode>,
    pending: Option<(Mode, u64, u8)>,
    lvb: [u8; LVB_LEN],
    lvb_version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    node: u8,
    mode: Mode,
    seq: u64,
    flags: u8,
}

#[derive(Debug, Clone)]
struct Resource {
    holders: BTreeMap<u8, Mode>,
    queue: Vec<Waiter>,
    lvb: [u8; LVB_LEN],
    lvb_version: u64,
    /// The strictest mode each holder was already asked (by BAST) to make room for.
    basted: BTreeMap<u8, Mode>,
}

impl Resource {
    fn new() -> Resource {
        Resource {
            holders: BTreeMap::new(),
            queue: Vec::new(),
            lvb: [0; LVB_LEN],
            lvb_version: 0,
            basted: BTreeMap::new(),
        }
    }

    fn merge_lvb(&mut self, version: u64, lvb: &[u8; LVB_LEN]) {
        if version > self.lvb_version {
            self.lvb_version = version;
            self.lvb = *lvb;
        }
    }
}

#[derive(Debug, Clone)]
struct Rebuild {
    nonce: u64,
    awaiting: BTreeSet<u8>,
}

/// A view of resources for listings: who holds what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub name: LockName,
    pub holders: BTreeMap<u8, Mode>,
    pub waiting: Vec<(u8, Mode)>,
}

/// One node's lock manager for one domain.
#[derive(Debug, Clone)]
pub struct Dlm {
    domain: String,
    local: u8,
    generation: u64,
    members: BTreeMap<u8, u64>,
    view: u64,
    locks: BTreeMap<LockName, LocalLock>,
    next_seq: u64,
    masters: BTreeMap<LockName, Resource>,
    rebuild: Option<Rebuild>,
    nonces: u64,
    /// The latest sync request from each master, answered when our view matches.
    sync_requests: BTreeMap<u8, (u64, u64)>,
    dead: BTreeSet<(u8, u64)>,
    recovered: BTreeSet<(u8, u64)>,
    recovering: BTreeSet<(u8, u64)>,
    /// The nodes heartbeating on disk, once membership knows (None: not yet).
    heartbeating: Option<BTreeSet<u8>>,
    out: Vec<Output>,
}

impl Dlm {
    /// Joins `domain` as `local` (incarnation `generation`), alone until
    /// membership reports other nodes.
    pub fn new(domain: &str, local: u8, generation: u64) -> Dlm {
        let mut dlm = Dlm {
            domain: domain.to_string(),
            local,
            generation,
            members: BTreeMap::from([(local, generation)]),
            view: 0,
            locks: BTreeMap::new(),
            next_seq: 1,
            masters: BTreeMap::new(),
            rebuild: None,
            nonces: 0,
            sync_requests: BTreeMap::new(),
            dead: BTreeSet::new(),
            recovered: BTreeSet::new(),
            recovering: BTreeSet::new(),
            heartbeating: None,
            out: Vec::new(),
        };
        dlm.view_changed();
        dlm.out.clear();
        dlm
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Our own incarnation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The members of the current view, with their generations.
    pub fn members(&self) -> &BTreeMap<u8, u64> {
        &self.members
    }

    /// Whether this node grants: it finished rebuilding its resources for the
    /// current view, and every node heartbeating on disk is in that view (a node
    /// that is alive but not yet joined could otherwise be mastering the same
    /// resource in a view of its own).
    pub fn ready(&self) -> bool {
        self.rebuild.is_none()
            && self
                .heartbeating
                .as_ref()
                .is_some_and(|h| h.iter().all(|n| self.members.contains_key(n)))
    }

    /// Membership's [`crate::membership::Output::Heartbeating`].
    pub fn heartbeating(&mut self, nodes: BTreeSet<u8>) -> Vec<Output> {
        self.heartbeating = Some(nodes);
        self.process_all();
        std::mem::take(&mut self.out)
    }

    /// Dead incarnations whose recovery is not finished.
    pub fn pending_recovery(&self) -> BTreeSet<(u8, u64)> {
        self.dead.difference(&self.recovered).copied().collect()
    }

    /// The granted mode of our lock on `name`.
    pub fn granted(&self, name: &LockName) -> Option<Mode> {
        self.locks.get(name).and_then(|l| l.granted)
    }

    /// The resources this node masters, for listings.
    pub fn resources(&self) -> Vec<ResourceInfo> {
        self.masters
            .iter()
            .map(|(name, r)| ResourceInfo {
                name: name.clone(),
                holders: r.holders.clone(),
                waiting: r.queue.iter().map(|w| (w.node, w.mode)).collect(),
            })
            .collect()
    }

    /// The node mastering `name` in the current view.
    pub fn master_of(&self, name: &LockName) -> u8 {
        *self
            .members
            .keys()
            .max_by_key(|&&n| (rendezvous(name, n), n))
            .expect("the local node is always a member")
    }

    /// Asks for `name` in `mode` (a new lock, or an up-conversion of ours). Answered
    /// by [`Output::Granted`]; at once if we already hold `mode` or more.
    pub fn lock(
        &mut self,
        name: &LockName,
        mode: Mode,
        flags: u8,
    ) -> Result<Vec<Output>, LockError> {
        let lock = self.locks.entry(name.clone()).or_insert_with(|| LocalLock {
            granted: None,
            pending: None,
            lvb: [0; LVB_LEN],
            lvb_version: 0,
        });
        if lock.pending.is_some() {
            return Err(LockError::Busy(name.clone()));
        }
        if lock.granted.is_some_and(|g| g >= mode) {
            let granted = lock.granted.expect("checked");
            return Ok(vec![Output::Granted {
                name: name.clone(),
                mode: granted,
                lvb: lock.lvb,
                lvb_version: lock.lvb_version,
            }]);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        lock.pending = Some((mode, seq, flags));
        let message = DlmMessage::Request {
            domain: self.domain.clone(),
            view: self.view,
            name: name.clone(),
            mode,
            seq,
            flags,
        };
        self.send_to_master(name, message);
        Ok(std::mem::take(&mut self.out))
    }

    /// Lowers our granted mode on `name` to `mode`. From EX, `lvb` (if given)
    /// becomes the resource's new value block.
    pub fn downconvert(
        &mut self,
        name: &LockName,
        mode: Mode,
        lvb: Option<[u8; LVB_LEN]>,
    ) -> Result<Vec<Output>, LockError> {
        let granted = self.granted(name).ok_or(LockError::NotHeld(name.clone()))?;
        if mode >= granted {
            return Err(LockError::NotLower {
                name: name.clone(),
                from: granted,
                to: mode,
            });
        }
        self.release(name, Some(mode), lvb);
        Ok(std::mem::take(&mut self.out))
    }

    /// Drops our lock on `name` (no request may be waiting on it).
    pub fn unlock(
        &mut self,
        name: &LockName,
        lvb: Option<[u8; LVB_LEN]>,
    ) -> Result<Vec<Output>, LockError> {
        let lock = self
            .locks
            .get(name)
            .ok_or(LockError::NotHeld(name.clone()))?;
        if lock.granted.is_none() {
            return Err(LockError::NotHeld(name.clone()));
        }
        if lock.pending.is_some() {
            return Err(LockError::Busy(name.clone()));
        }
        self.release(name, None, lvb);
        Ok(std::mem::take(&mut self.out))
    }

    fn release(&mut self, name: &LockName, mode: Option<Mode>, lvb: Option<[u8; LVB_LEN]>) {
        let lock = self.locks.get_mut(name).expect("checked by the caller");
        if lock.granted == Some(Mode::Ex) {
            if let Some(lvb) = lvb {
                lock.lvb = lvb;
                lock.lvb_version += 1;
            }
        }
        lock.granted = mode;
        let message = DlmMessage::Downconvert {
            domain: self.domain.clone(),
            view: self.view,
            name: name.clone(),
            mode,
            lvb_version: lock.lvb_version,
            lvb: lock.lvb,
        };
        self.send_to_master(name, message);
    }

    /// Membership says `node` (incarnation `generation`) joined.
    pub fn node_up(&mut self, node: u8, generation: u64) -> Vec<Output> {
        if node != self.local && self.members.get(&node) != Some(&generation) {
            if let Some(old) = self.members.insert(node, generation) {
                self.dead.insert((node, old));
            }
            self.view_changed();
        }
        std::mem::take(&mut self.out)
    }

    /// Membership says `node` (incarnation `generation`) is dead.
    pub fn node_down(&mut self, node: u8, generation: u64) -> Vec<Output> {
        self.dead.insert((node, generation));
        if node != self.local && self.members.get(&node) == Some(&generation) {
            self.members.remove(&node);
            self.view_changed();
        } else if self.rebuild.is_none() {
            self.start_recoveries();
        }
        std::mem::take(&mut self.out)
    }

    /// The layer above finished recovering the dead incarnation: its locks may go.
    pub fn recovery_done(&mut self, node: u8, generation: u64) -> Vec<Output> {
        let message = DlmMessage::RecoveryDone {
            domain: self.domain.clone(),
            node,
            generation,
        };
        for (&to, &g) in &self.members {
            if to != self.local {
                self.out.push(Output::Send {
                    to,
                    generation: g,
                    message: message.clone(),
                });
            }
        }
        self.mark_recovered(node, generation);
        std::mem::take(&mut self.out)
    }

    /// A message from `from` (incarnation `generation`).
    pub fn receive(&mut self, from: u8, generation: u64, message: DlmMessage) -> Vec<Output> {
        if self.members.get(&from) == Some(&generation) {
            self.dispatch(from, message);
        }
        std::mem::take(&mut self.out)
    }

    fn dispatch(&mut self, from: u8, message: DlmMessage) {
        if message.domain() != self.domain {
            return;
        }
        match message {
            DlmMessage::SyncRequest { view, nonce, .. } => {
                self.sync_requests.insert(from, (view, nonce));
                if view == self.view {
                    self.answer_sync(from, nonce);
                }
            }
            DlmMessage::SyncReply {
                view,
                nonce,
                dead,
                recovered,
                locks,
                ..
            } => self.on_sync_reply(from, view, nonce, dead, recovered, locks),
            DlmMessage::RecoveryDone {
                node, generation, ..
            } => self.mark_recovered(node, generation),
            DlmMessage::Request {
                view,
                name,
                mode,
                seq,
                flags,
                ..
            } if view == self.view => self.master_request(from, name, mode, seq, flags),
            DlmMessage::Downconvert {
                view,
                name,
                mode,
                lvb_version,
                lvb,
                ..
            } if view == self.view => self.master_downconvert(from, name, mode, lvb_version, lvb),
            DlmMessage::Grant {
                view,
                name,
                seq,
                mode,
                lvb_version,
                lvb,
                ..
            } if view == self.view => self.on_grant(name, seq, mode, lvb_version, lvb),
            DlmMessage::Bast {
                view, name, mode, ..
            } if view == self.view => self.on_bast(name, mode),
            _ => {}
        }
    }

    /// Sends `message` to `to`, or handles it here when `to` is us.
    fn send(&mut self, to: u8, message: DlmMessage) {
        if to == self.local {
            self.dispatch(to, message);
        } else if let Some(&generation) = self.members.get(&to) {
            self.out.push(Output::Send {
                to,
                generation,
                message,
            });
        }
    }

    fn send_to_master(&mut self, name: &LockName, message: DlmMessage) {
        let master = self.master_of(name);
        self.send(master, message);
    }

    fn view_changed(&mut self) {
        self.view = view_digest(&self.members);
        self.masters.clear();
        self.nonces += 1;
        self.rebuild = Some(Rebuild {
            nonce: self.nonces,
            awaiting: self.members.keys().copied().collect(),
        });
        let request = DlmMessage::SyncRequest {
            domain: self.domain.clone(),
            view: self.view,
            nonce: self.nonces,
        };
        let members: Vec<u8> = self.members.keys().copied().collect();
        // Answer the masters that asked for this view before we reached it.
        let stored: Vec<(u8, u64)> = self
            .sync_requests
            .iter()
            .filter(|(m, (v, _))| *v == self.view && self.members.contains_key(m))
            .map(|(&m, &(_, n))| (m, n))
            .collect();
        for (master, nonce) in stored {
            self.answer_sync(master, nonce);
        }
        for member in members {
            self.send(member, request.clone());
        }
    }

    fn answer_sync(&mut self, master: u8, nonce: u64) {
        let mut locks = Vec::new();
        for (name, lock) in &self.locks {
            if self.master_of(name) == master
                && (lock.granted.is_some() || lock.pending.is_some() || lock.lvb_version > 0)
            {
                locks.push(LockState {
                    name: name.clone(),
                    granted: lock.granted,
                    pending: lock.pending,
                    lvb_version: lock.lvb_version,
                    lvb: lock.lvb,
                });
            }
        }
        let reply = DlmMessage::SyncReply {
            domain: self.domain.clone(),
            view: self.view,
            nonce,
            dead: self.dead.iter().copied().collect(),
            recovered: self.recovered.iter().copied().collect(),
            locks,
        };
        self.send(master, reply);
    }

    fn on_sync_reply(
        &mut self,
        from: u8,
        view: u64,
        nonce: u64,
        dead: Vec<(u8, u64)>,
        recovered: Vec<(u8, u64)>,
        locks: Vec<LockState>,
    ) {
        if view != self.view {
            return;
        }
        let Some(rebuild) = &mut self.rebuild else {
            return;
        };
        if rebuild.nonce != nonce || !rebuild.awaiting.remove(&from) {
            return;
        }
        self.dead.extend(dead);
        self.recovered.extend(recovered);
        // The reply replaces whatever `from`'s messages of this view said before.
        for resource in self.masters.values_mut() {
            resource.holders.remove(&from);
            resource.basted.remove(&from);
            resource.queue.retain(|w| w.node != from);
        }
        for lock in locks {
            let resource = self.masters.entry(lock.name).or_insert_with(Resource::new);
            if let Some(mode) = lock.granted {
                resource.holders.insert(from, mode);
            }
            if let Some((mode, seq, flags)) = lock.pending {
                resource.queue.push(Waiter {
                    node: from,
                    mode,
                    seq,
                    flags,
                });
            }
            resource.merge_lvb(lock.lvb_version, &lock.lvb);
        }
        if self.rebuild.as_ref().is_some_and(|r| r.awaiting.is_empty()) {
            self.rebuild = None;
            self.start_recoveries();
            self.process_all();
        }
    }

    fn mark_recovered(&mut self, node: u8, generation: u64) {
        self.dead.insert((node, generation));
        if self.recovered.insert((node, generation)) {
            self.process_all();
        }
    }

    /// The lowest member recovers every dead incarnation not yet recovered.
    fn start_recoveries(&mut self) {
        if self.members.keys().next() != Some(&self.local) {
            return;
        }
        for (node, generation) in self.pending_recovery() {
            if self.recovering.insert((node, generation)) {
                self.out.push(Output::Recover { node, generation });
            }
        }
    }

    fn master_request(&mut self, from: u8, name: LockName, mode: Mode, seq: u64, flags: u8) {
        let resource = self
            .masters
            .entry(name.clone())
            .or_insert_with(Resource::new);
        if resource
            .queue
            .iter()
            .any(|w| w.node == from && w.seq == seq)
        {
            return;
        }
        resource.queue.push(Waiter {
            node: from,
            mode,
            seq,
            flags,
        });
        self.process(&name);
    }

    fn master_downconvert(
        &mut self,
        from: u8,
        name: LockName,
        mode: Option<Mode>,
        lvb_version: u64,
        lvb: [u8; LVB_LEN],
    ) {
        let resource = self
            .masters
            .entry(name.clone())
            .or_insert_with(Resource::new);
        match mode {
            Some(mode) => resource.holders.insert(from, mode),
            None => resource.holders.remove(&from),
        };
        resource.basted.remove(&from);
        resource.merge_lvb(lvb_version, &lvb);
        self.process(&name);
    }

    fn process_all(&mut self) {
        let names: Vec<LockName> = self.masters.keys().cloned().collect();
        for name in names {
            self.process(&name);
        }
    }

    /// Grants what can be granted on `name`, in queue order, and asks the holders in
    /// the way of the first waiter that cannot be granted to come down.
    fn process(&mut self, name: &LockName) {
        if !self.ready() {
            return;
        }
        let recovery_pending = !self.pending_recovery().is_empty();
        loop {
            let Some(resource) = self.masters.get_mut(name) else {
                return;
            };
            let Some(index) = resource
                .queue
                .iter()
                .position(|w| !recovery_pending || w.flags & RECOVERY != 0)
            else {
                return;
            };
            let waiter = resource.queue[index];
            let blockers: Vec<u8> = resource
                .holders
                .iter()
                .filter(|(&n, &m)| n != waiter.node && !m.compatible(waiter.mode))
                .map(|(&n, _)| n)
                .collect();
            if blockers.is_empty() {
                resource.queue.remove(index);
                resource.holders.insert(waiter.node, waiter.mode);
                resource.basted.remove(&waiter.node);
                let grant = DlmMessage::Grant {
                    domain: self.domain.clone(),
                    view: self.view,
                    name: name.clone(),
                    seq: waiter.seq,
                    mode: waiter.mode,
                    lvb_version: resource.lvb_version,
                    lvb: resource.lvb,
                };
                self.send(waiter.node, grant);
                continue;
            }
            let mut basts = Vec::new();
            for node in blockers {
                if resource
                    .basted
                    .get(&node)
                    .is_some_and(|&m| m >= waiter.mode)
                {
                    continue;
                }
                resource.basted.insert(node, waiter.mode);
                basts.push(node);
            }
            for node in basts {
                let bast = DlmMessage::Bast {
                    domain: self.domain.clone(),
                    view: self.view,
                    name: name.clone(),
                    mode: waiter.mode,
                };
                self.send(node, bast);
            }
            return;
        }
    }

    fn on_grant(
        &mut self,
        name: LockName,
        seq: u64,
        mode: Mode,
        lvb_version: u64,
        lvb: [u8; LVB_LEN],
    ) {
        let Some(lock) = self.locks.get_mut(&name) else {
            return;
        };
        if lock.pending.map(|(_, s, _)| s) != Some(seq) {
            return;
        }
        lock.pending = None;
        lock.granted = Some(mode);
        if lvb_version >= lock.lvb_version {
            lock.lvb_version = lvb_version;
            lock.lvb = lvb;
        }
        self.out.push(Output::Granted {
            name,
            mode,
            lvb: lock.lvb,
            lvb_version: lock.lvb_version,
        });
    }

    fn on_bast(&mut self, name: LockName, wanted: Mode) {
        let Some(lock) = self.locks.get(&name) else {
            return;
        };
        if lock.granted.is_some_and(|g| !g.compatible(wanted)) {
            self.out.push(Output::Blocking { name, wanted });
        }
    }
}

/// FNV-1a over the bytes, then a 64-bit finalizer (so nearby inputs spread).
fn hash64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn rendezvous(name: &LockName, node: u8) -> u64 {
    hash64(name.as_bytes().iter().copied().chain([0xFF, node]))
}

fn view_digest(members: &BTreeMap<u8, u64>) -> u64 {
    hash64(
        members
            .iter()
            .flat_map(|(&n, &g)| std::iter::once(n).chain(g.to_be_bytes())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocfs2_names() {
        let name = ocfs2_lock_name(LockType::Meta, 0x20a, 0x1234abcd);
        assert_eq!(name.to_string(), "M000000000000000000020a1234abcd");
        assert_eq!(name.as_bytes().len(), 31);
        assert_eq!(
            ocfs2_lock_name(LockType::Super, 2, 0).to_string(),
            "S000000000000000000000200000000"
        );
        assert_eq!(domain_name(&[0xab; 16]), "ABABABABABABABABABABABABABABABAB");
    }

    #[test]
    fn compatibility_matrix() {
        use Mode::*;
        let table = [
            (Nl, Nl, true),
            (Nl, Pr, true),
            (Nl, Ex, true),
            (Pr, Pr, true),
            (Pr, Ex, false),
            (Ex, Ex, false),
        ];
        for (a, b, ok) in table {
            assert_eq!(a.compatible(b), ok, "{a} {b}");
            assert_eq!(b.compatible(a), ok, "{b} {a}");
        }
    }

    #[test]
    fn a_lone_node_grants_locally() {
        let mut dlm = Dlm::new("D", 0, 1);
        dlm.heartbeating(BTreeSet::new());
        let name = ocfs2_lock_name(LockType::Super, 2, 0);
        let out = dlm.lock(&name, Mode::Ex, 0).unwrap();
        assert!(matches!(
            out.as_slice(),
            [Output::Granted { mode: Mode::Ex, .. }]
        ));
        assert_eq!(dlm.lock(&name, Mode::Pr, 0).unwrap().len(), 1);
        dlm.unlock(&name, Some([7; LVB_LEN])).unwrap();
        let out = dlm.lock(&name, Mode::Pr, 0).unwrap();
        assert!(matches!(&out[0], Output::Granted { lvb, lvb_version: 1, .. } if lvb[0] == 7));
        assert!(matches!(
            dlm.unlock(&ocfs2_lock_name(LockType::Open, 9, 9), None),
            Err(LockError::NotHeld(_))
        ));
    }
}
