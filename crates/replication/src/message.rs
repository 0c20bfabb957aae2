//! The messages two nodes exchange about one resource, and their wire encoding.
//!
//! Every message is a frame: a 12-byte header, then the payload.
//!
//! ```text
//! 0   u32 BE  magic 0x544E444D ("TNDM")
//! 4   u8      kind (see `Kind`)
//! 5   u8[3]   zero
//! 8   u32 BE  payload length in bytes
//! 12  ...     payload (big-endian fields, layout per kind; docs/FORMAT.md)
//! ```
//!
//! The engine works with [`Message`] values; [`encode`] and [`decode`] are the only
//! way bytes become messages, and decoding never trusts a length or a value it has
//! not checked.

use bytes::Bytes;
use thiserror::Error;

use crate::digest::VerifyAlg;
use crate::uuids::HISTORY_LEN;
use crate::{DiskState, NodeId, Role, BLOCK_SIZE};

pub const MAGIC: u32 = 0x544E_444D;
pub const HEADER_LEN: usize = 12;
/// The largest payload accepted: a 1 MiB write plus its header fields, or the
/// bitmap of a 64 TiB device.
pub const MAX_PAYLOAD: usize = 2 << 20;
/// Payload bytes before the block data of `Data` (seq, epoch, block).
const DATA_FIELDS: usize = 24;
/// Payload bytes before the block data of `ResyncData` (block).
const RESYNC_DATA_FIELDS: usize = 8;
/// Payload bytes before the block data of `DataReply` (req, status).
const DATA_REPLY_FIELDS: usize = 9;
/// The most blocks one `DataRequest` asks for: 1 MiB.
pub const DATA_REQUEST_MAX_BLOCKS: u32 = 256;

/// DRBD's replication protocols: when a write counts as done on a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Done when sent.
    A,
    /// Done when the peer has received it.
    B,
    /// Done when the peer has written it.
    C,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node_id: NodeId,
    pub blocks: u64,
    pub role: Role,
    pub disk: DiskState,
    pub protocol: Protocol,
    pub allow_two_primaries: bool,
    pub crashed_primary: bool,
    pub discard_my_data: bool,
    /// The sender's `pause-sync` with the receiver holds: no resync starts
    /// running between them (also said later with SyncPause).
    pub sync_paused: bool,
    pub current: u64,
    /// The bitmap UUID the sender keeps for the receiver.
    pub bitmap: u64,
    pub history: [u64; HISTORY_LEN],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message on a connection: who I am and what my data is.
    Hello(Hello),
    /// Second message: my out-of-sync bitmap for you, as 64-bit words.
    Bitmap {
        words: Vec<u64>,
    },
    /// My role or disk changed.
    State {
        role: Role,
        disk: DiskState,
    },
    /// May I become Primary? (answered by `PromoteReply`)
    PromoteRequest {
        tid: u64,
    },
    PromoteReply {
        tid: u64,
        granted: bool,
    },
    /// An application write on a Primary, replicated.
    Data {
        seq: u64,
        epoch: u64,
        block: u64,
        /// Shared, not copied, between the local disk write and every peer.
        data: Bytes,
    },
    /// Protocol B: the write arrived.
    RecvAck {
        seq: u64,
    },
    /// Protocol C: the write is on the peer's disk.
    WriteAck {
        seq: u64,
    },
    /// Every write of epochs up to `epoch` has been sent; flush them.
    Barrier {
        epoch: u64,
    },
    /// Every write of epochs up to `epoch` is on stable storage.
    BarrierAck {
        epoch: u64,
    },
    /// The sender becomes sync source (after `primary --force` while connected).
    SyncStart {
        full: bool,
    },
    /// A run of blocks copied by resync.
    ResyncData {
        block: u64,
        data: Bytes,
    },
    /// The run of `count` blocks from `block` is on the target's disk.
    ResyncAck {
        block: u64,
        count: u32,
    },
    /// Resync finished; the target takes the source's current UUID.
    SyncDone {
        current: u64,
    },
    /// Online verify (DRBD's OV_REQUEST): the digests of a run of blocks from
    /// `block` on the verify source, `alg.digest_len()` bytes each, at most
    /// [`VERIFY_RUN_BLOCKS`].
    OvRequest {
        block: u64,
        alg: VerifyAlg,
        digests: Vec<u8>,
    },
    /// The target compared the run: bit `i` of `differ` set when block
    /// `block + i` differs here.
    OvReply {
        block: u64,
        count: u32,
        differ: u64,
    },
    /// The source's verdict on the run (what the target did not see overtaken
    /// by a write on either side): bit `i` set when block `block + i` is out of
    /// sync. Both sides mark those blocks in their bitmap.
    OvResult {
        block: u64,
        count: u32,
        out_of_sync: u64,
    },
    /// Online verify ended; `found` blocks were out of sync.
    VerifyDone {
        found: u64,
    },
    /// `drbdadm invalidate` on the sender: its disk is to be overwritten
    /// with the receiver's, every block (the receiver answers with SyncStart).
    SyncRequest,
    /// `drbdadm new-current-uuid --clear-bitmap` on the sender: both disks
    /// were just created, so they hold the same (nothing); the receiver
    /// takes `current` and is UpToDate, with nothing to sync.
    SkipSync {
        current: u64,
    },
    /// `drbdadm pause-sync` (true) or `resume-sync` (false) on the sender: no
    /// resync between the two runs while either side has paused it. (A new
    /// connection learns a pause from the Hello.)
    SyncPause {
        paused: bool,
    },
    /// A Primary without a disk of its own reads `count` blocks from `block`
    /// on the receiver's UpToDate disk (DRBD's P_DATA_REQUEST); at most
    /// [`DATA_REQUEST_MAX_BLOCKS`]. `req` names the request in the reply.
    DataRequest {
        req: u64,
        block: u64,
        count: u32,
    },
    /// The answer to a `DataRequest`: the blocks, or `None` when the sender
    /// could not read them (its disk failed, or is not UpToDate).
    DataReply {
        req: u64,
        data: Option<Bytes>,
    },
    /// A Primary about to detach its disk: will the receiver keep its
    /// UpToDate one (not detach) while the sender serves I/O from it?
    KeepDiskRequest {
        tid: u64,
    },
    /// The answer: `granted` when the receiver's disk is UpToDate and stays
    /// (its own detach is refused until it hears the sender's new state).
    KeepDiskReply {
        tid: u64,
        granted: bool,
    },
    /// The sender's disk failed to write `count` blocks from `block` (DRBD's
    /// P_OUT_OF_SYNC): the receiver, which has them, marks them out of sync
    /// with the sender, whose own record of them may not have reached its
    /// failing disk.
    OutOfSync {
        block: u64,
        count: u32,
    },
    /// A Primary that attached a disk while connected: it becomes the
    /// receiver's sync target, and these words are its bitmap for the
    /// receiver (the blocks its disk lacks), to merge with the receiver's.
    TargetBitmap {
        words: Vec<u64>,
    },
}

/// The longest run one verify request covers: a bit per block of a `u64`.
pub const VERIFY_RUN_BLOCKS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Hello = 1,
    Bitmap = 2,
    State = 3,
    PromoteRequest = 4,
    PromoteReply = 5,
    Data = 6,
    RecvAck = 7,
    WriteAck = 8,
    Barrier = 9,
    BarrierAck = 10,
    SyncStart = 11,
    ResyncData = 12,
    ResyncAck = 13,
    SyncDone = 14,
    OvRequest = 15,
    OvReply = 16,
    OvResult = 17,
    VerifyDone = 18,
    SyncRequest = 19,
    SkipSync = 20,
    SyncPause = 21,
    DataRequest = 22,
    DataReply = 23,
    KeepDiskRequest = 24,
    KeepDiskReply = 25,
    OutOfSync = 26,
    TargetBitmap = 27,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        use Kind::*;
        Some(match v {
            1 => Hello,
            2 => Bitmap,
            3 => State,
            4 => PromoteRequest,
            5 => PromoteReply,
            6 => Data,
            7 => RecvAck,
            8 => WriteAck,
            9 => Barrier,
            10 => BarrierAck,
            11 => SyncStart,
            12 => ResyncData,
            13 => ResyncAck,
            14 => SyncDone,
            15 => OvRequest,
            16 => OvReply,
            17 => OvResult,
            18 => VerifyDone,
            19 => SyncRequest,
            20 => SkipSync,
            21 => SyncPause,
            22 => DataRequest,
            23 => DataReply,
            24 => KeepDiskRequest,
            25 => KeepDiskReply,
            26 => OutOfSync,
            27 => TargetBitmap,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not an error yet: this many more bytes are needed.
    #[error("incomplete frame: {0} more bytes needed")]
    Incomplete(usize),
    #[error("bad magic 0x{0:08x} (not a tandem peer?)")]
    BadMagic(u32),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("{kind}: field {field}: {problem}")]
    BadField {
        kind: &'static str,
        field: &'static str,
        problem: String,
    },
}

/// Appends the frame for `message` to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&[kind_of(message) as u8, 0, 0, 0]);
    out.extend_from_slice(&[0; 4]);
    let mut w = Writer(out);
    match message {
        Message::Hello(h) => {
            w.u8(h.node_id);
            w.u8(role_code(h.role));
            w.u8(disk_code(h.disk));
            w.u8(match h.protocol {
                Protocol::A => 1,
                Protocol::B => 2,
                Protocol::C => 3,
            });
            w.u8(u8::from(h.allow_two_primaries)
                | u8::from(h.crashed_primary) << 1
                | u8::from(h.discard_my_data) << 2
                | u8::from(h.sync_paused) << 3);
            w.0.extend_from_slice(&[0; 3]);
            w.u64(h.blocks);
            w.u64(h.current);
            w.u64(h.bitmap);
            for uuid in h.history {
                w.u64(uuid);
            }
        }
        Message::Bitmap { words } | Message::TargetBitmap { words } => {
            for word in words {
                w.u64(*word);
            }
        }
        Message::State { role, disk } => {
            w.u8(role_code(*role));
            w.u8(disk_code(*disk));
        }
        Message::PromoteRequest { tid } | Message::KeepDiskRequest { tid } => w.u64(*tid),
        Message::PromoteReply { tid, granted } | Message::KeepDiskReply { tid, granted } => {
            w.u64(*tid);
            w.u8(u8::from(*granted));
        }
        Message::Data {
            seq,
            epoch,
            block,
            data,
        } => {
            w.u64(*seq);
            w.u64(*epoch);
            w.u64(*block);
            w.0.extend_from_slice(data);
        }
        Message::RecvAck { seq } | Message::WriteAck { seq } => w.u64(*seq),
        Message::Barrier { epoch } | Message::BarrierAck { epoch } => w.u64(*epoch),
        Message::SyncStart { full } => w.u8(u8::from(*full)),
        Message::ResyncData { block, data } => {
            w.u64(*block);
            w.0.extend_from_slice(data);
        }
        Message::ResyncAck { block, count } | Message::OutOfSync { block, count } => {
            w.u64(*block);
            w.0.extend_from_slice(&count.to_be_bytes());
        }
        Message::SyncDone { current } => w.u64(*current),
        Message::OvRequest {
            block,
            alg,
            digests,
        } => {
            w.u64(*block);
            w.u8(alg.code());
            w.0.extend_from_slice(digests);
        }
        Message::OvReply {
            block,
            count,
            differ: mask,
        }
        | Message::OvResult {
            block,
            count,
            out_of_sync: mask,
        } => {
            w.u64(*block);
            w.0.extend_from_slice(&count.to_be_bytes());
            w.u64(*mask);
        }
        Message::VerifyDone { found } => w.u64(*found),
        Message::SyncRequest => {}
        Message::SkipSync { current } => w.u64(*current),
        Message::SyncPause { paused } => w.0.push(u8::from(*paused)),
        Message::DataRequest { req, block, count } => {
            w.u64(*req);
            w.u64(*block);
            w.0.extend_from_slice(&count.to_be_bytes());
        }
        Message::DataReply { req, data } => {
            w.u64(*req);
            match data {
                Some(data) => {
                    w.u8(0);
                    w.0.extend_from_slice(data);
                }
                None => w.u8(1),
            }
        }
    }
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
}

/// Encodes `message` as [`encode`] does, except that the block data of `Data`
/// and `ResyncData` is not copied into `out` but handed back: the frame is
/// `out`'s new bytes followed by the returned ones, for a vectored write. At
/// 1 MiB per write the copy is not free.
pub fn encode_split(message: Message, out: &mut Vec<u8>) -> Option<Bytes> {
    let start = out.len();
    let (head, bulk) = match message {
        Message::Data {
            seq,
            epoch,
            block,
            data,
        } => (
            Message::Data {
                seq,
                epoch,
                block,
                data: Bytes::new(),
            },
            data,
        ),
        Message::ResyncData { block, data } => (
            Message::ResyncData {
                block,
                data: Bytes::new(),
            },
            data,
        ),
        Message::DataReply {
            req,
            data: Some(data),
        } => (
            Message::DataReply {
                req,
                data: Some(Bytes::new()),
            },
            data,
        ),
        other => {
            encode(&other, out);
            return None;
        }
    };
    encode(&head, out);
    let len = (out.len() - start - HEADER_LEN + bulk.len()) as u32;
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
    Some(bulk)
}

/// Decodes one frame from the start of `bytes`: the message and how many bytes
/// it used, or why not.
pub fn decode(bytes: &[u8]) -> Result<(Message, usize), DecodeError> {
    decode_with(bytes, Bytes::copy_from_slice)
}

/// [`decode`], with the caller choosing how a frame's block data is copied out
/// (the node copies it aligned for its disk's direct I/O).
pub fn decode_with(
    bytes: &[u8],
    copy_blocks: fn(&[u8]) -> Bytes,
) -> Result<(Message, usize), DecodeError> {
    let (kind, len) = header(bytes)?;
    if bytes.len() < HEADER_LEN + len {
        return Err(DecodeError::Incomplete(HEADER_LEN + len - bytes.len()));
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    let message = decode_payload(kind, payload, Blocks::Copy(copy_blocks))?;
    Ok((message, HEADER_LEN + len))
}

/// For a frame whose block data ends it (`Data`, `ResyncData`) and that
/// carries some: where in the frame the block data starts, and the frame's
/// length, from the fields before it in `bytes` (the start of the frame; the
/// header is enough). The receiver can then read the block data straight into
/// memory aligned for the disk, and decode the rest with [`decode_apart`].
pub fn bulk_split(bytes: &[u8]) -> Option<(usize, usize)> {
    let (kind, len) = header(bytes).ok()?;
    let fixed = match kind {
        Kind::Data => DATA_FIELDS,
        Kind::ResyncData => RESYNC_DATA_FIELDS,
        Kind::DataReply => DATA_REPLY_FIELDS,
        _ => return None,
    };
    (len > fixed).then_some((HEADER_LEN + fixed, HEADER_LEN + len))
}

/// Decodes a frame read in two parts, as [`bulk_split`] splits it: `head`,
/// the frame up to its block data, and `blocks`, the block data itself.
pub fn decode_apart(head: &[u8], blocks: Bytes) -> Result<Message, DecodeError> {
    let (kind, _) = header(head)?;
    match bulk_split(head) {
        Some((split, total)) if head.len() == split && split + blocks.len() == total => {}
        _ => {
            return Err(DecodeError::BadField {
                kind: kind_name(kind),
                field: "length",
                problem: format!(
                    "{} + {} bytes is not a frame split at its block data",
                    head.len(),
                    blocks.len()
                ),
            })
        }
    }
    decode_payload(kind, &head[HEADER_LEN..], Blocks::Given(Some(blocks)))
}

/// The kind and payload length of the frame `bytes` starts with.
fn header(bytes: &[u8]) -> Result<(Kind, usize), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete(HEADER_LEN - bytes.len()));
    }
    let magic = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let kind = Kind::from_u8(bytes[4]).ok_or(DecodeError::UnknownKind(bytes[4]))?;
    let len = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(len));
    }
    Ok((kind, len))
}

/// The message of a `kind` frame with this payload (its block data, if the
/// kind has any, from `blocks`).
fn decode_payload(kind: Kind, payload: &[u8], blocks: Blocks) -> Result<Message, DecodeError> {
    let mut r = Reader {
        bytes: payload,
        kind: kind_name(kind),
        blocks,
    };
    let message = match kind {
        Kind::Hello => {
            let node_id = r.u8("node_id")?;
            let role = r.role()?;
            let disk = r.disk()?;
            let protocol = match r.u8("protocol")? {
                1 => Protocol::A,
                2 => Protocol::B,
                3 => Protocol::C,
                other => return Err(r.bad("protocol", format!("{other} is not 1, 2 or 3"))),
            };
            let flags = r.u8("flags")?;
            if flags & !0b1111 != 0 {
                return Err(r.bad("flags", format!("unknown bits 0x{flags:02x}")));
            }
            r.take("padding", 3)?;
            let hello = Hello {
                node_id,
                role,
                disk,
                protocol,
                allow_two_primaries: flags & 1 != 0,
                crashed_primary: flags & 2 != 0,
                discard_my_data: flags & 4 != 0,
                sync_paused: flags & 8 != 0,
                blocks: r.u64("blocks")?,
                current: r.u64("current")?,
                bitmap: r.u64("bitmap")?,
                history: {
                    let mut history = [0; HISTORY_LEN];
                    for uuid in history.iter_mut() {
                        *uuid = r.u64("history")?;
                    }
                    history
                },
            };
            Message::Hello(hello)
        }
        Kind::Bitmap | Kind::TargetBitmap => {
            if !r.bytes.len().is_multiple_of(8) {
                return Err(r.bad(
                    "words",
                    format!("{} bytes is not whole words", r.bytes.len()),
                ));
            }
            let mut words = Vec::with_capacity(r.bytes.len() / 8);
            while !r.bytes.is_empty() {
                words.push(r.u64("words")?);
            }
            if kind == Kind::Bitmap {
                Message::Bitmap { words }
            } else {
                Message::TargetBitmap { words }
            }
        }
        Kind::State => Message::State {
            role: r.role()?,
            disk: r.disk()?,
        },
        Kind::PromoteRequest => Message::PromoteRequest { tid: r.u64("tid")? },
        Kind::PromoteReply => Message::PromoteReply {
            tid: r.u64("tid")?,
            granted: r.bool("granted")?,
        },
        Kind::KeepDiskRequest => Message::KeepDiskRequest { tid: r.u64("tid")? },
        Kind::OutOfSync => Message::OutOfSync {
            block: r.u64("block")?,
            count: r.u32("count")?,
        },
        Kind::KeepDiskReply => Message::KeepDiskReply {
            tid: r.u64("tid")?,
            granted: r.bool("granted")?,
        },
        Kind::Data => {
            let seq = r.u64("seq")?;
            let epoch = r.u64("epoch")?;
            let block = r.u64("block")?;
            let data = r.blocks("data")?;
            Message::Data {
                seq,
                epoch,
                block,
                data,
            }
        }
        Kind::RecvAck => Message::RecvAck { seq: r.u64("seq")? },
        Kind::WriteAck => Message::WriteAck { seq: r.u64("seq")? },
        Kind::Barrier => Message::Barrier {
            epoch: r.u64("epoch")?,
        },
        Kind::BarrierAck => Message::BarrierAck {
            epoch: r.u64("epoch")?,
        },
        Kind::SyncStart => Message::SyncStart {
            full: r.bool("full")?,
        },
        Kind::ResyncData => {
            let block = r.u64("block")?;
            let data = r.blocks("data")?;
            Message::ResyncData { block, data }
        }
        Kind::ResyncAck => Message::ResyncAck {
            block: r.u64("block")?,
            count: r.u32("count")?,
        },
        Kind::SyncDone => Message::SyncDone {
            current: r.u64("current")?,
        },
        Kind::OvRequest => {
            let block = r.u64("block")?;
            let code = r.u8("alg")?;
            let alg = VerifyAlg::from_code(code)
                .ok_or_else(|| r.bad("alg", format!("unknown algorithm {code}")))?;
            let n = r.bytes.len();
            if n == 0
                || !n.is_multiple_of(alg.digest_len())
                || (n / alg.digest_len()) as u64 > VERIFY_RUN_BLOCKS
            {
                return Err(r.bad(
                    "digests",
                    format!(
                        "{n} bytes is not 1 to {VERIFY_RUN_BLOCKS} {} digests",
                        alg.name()
                    ),
                ));
            }
            let digests = r.take("digests", n)?.to_vec();
            Message::OvRequest {
                block,
                alg,
                digests,
            }
        }
        Kind::OvReply | Kind::OvResult => {
            let block = r.u64("block")?;
            let count = r.u32("count")?;
            if count == 0 || u64::from(count) > VERIFY_RUN_BLOCKS {
                return Err(r.bad("count", format!("{count} is not 1 to {VERIFY_RUN_BLOCKS}")));
            }
            let mask = r.u64("mask")?;
            if count < 64 && mask >> count != 0 {
                return Err(r.bad("mask", format!("bits beyond the run of {count}")));
            }
            if kind == Kind::OvReply {
                Message::OvReply {
                    block,
                    count,
                    differ: mask,
                }
            } else {
                Message::OvResult {
                    block,
                    count,
                    out_of_sync: mask,
                }
            }
        }
        Kind::VerifyDone => Message::VerifyDone {
            found: r.u64("found")?,
        },
        Kind::SyncRequest => Message::SyncRequest,
        Kind::SkipSync => Message::SkipSync {
            current: r.u64("current")?,
        },
        Kind::SyncPause => Message::SyncPause {
            paused: r.bool("paused")?,
        },
        Kind::DataRequest => {
            let req = r.u64("req")?;
            let block = r.u64("block")?;
            let count = r.u32("count")?;
            if count == 0 || count > DATA_REQUEST_MAX_BLOCKS {
                return Err(r.bad(
                    "count",
                    format!("{count} is not 1 to {DATA_REQUEST_MAX_BLOCKS}"),
                ));
            }
            Message::DataRequest { req, block, count }
        }
        Kind::DataReply => {
            let req = r.u64("req")?;
            let data = match r.u8("status")? {
                0 => Some(r.blocks("data")?),
                1 if matches!(r.blocks, Blocks::Given(Some(_))) => {
                    return Err(r.bad("status", "1 (no data) before block data".into()))
                }
                1 => None,
                other => return Err(r.bad("status", format!("{other} is not 0 or 1"))),
            };
            Message::DataReply { req, data }
        }
    };
    if !r.bytes.is_empty() {
        return Err(r.bad("payload", format!("{} bytes left over", r.bytes.len())));
    }
    Ok(message)
}

fn kind_of(message: &Message) -> Kind {
    match message {
        Message::Hello(_) => Kind::Hello,
        Message::Bitmap { .. } => Kind::Bitmap,
        Message::State { .. } => Kind::State,
        Message::PromoteRequest { .. } => Kind::PromoteRequest,
        Message::PromoteReply { .. } => Kind::PromoteReply,
        Message::Data { .. } => Kind::Data,
        Message::RecvAck { .. } => Kind::RecvAck,
        Message::WriteAck { .. } => Kind::WriteAck,
        Message::Barrier { .. } => Kind::Barrier,
        Message::BarrierAck { .. } => Kind::BarrierAck,
        Message::SyncStart { .. } => Kind::SyncStart,
        Message::ResyncData { .. } => Kind::ResyncData,
        Message::ResyncAck { .. } => Kind::ResyncAck,
        Message::SyncDone { .. } => Kind::SyncDone,
        Message::OvRequest { .. } => Kind::OvRequest,
        Message::OvReply { .. } => Kind::OvReply,
        Message::OvResult { .. } => Kind::OvResult,
        Message::VerifyDone { .. } => Kind::VerifyDone,
        Message::SyncRequest => Kind::SyncRequest,
        Message::SkipSync { .. } => Kind::SkipSync,
        Message::SyncPause { .. } => Kind::SyncPause,
        Message::DataRequest { .. } => Kind::DataRequest,
        Message::DataReply { .. } => Kind::DataReply,
        Message::KeepDiskRequest { .. } => Kind::KeepDiskRequest,
        Message::KeepDiskReply { .. } => Kind::KeepDiskReply,
        Message::OutOfSync { .. } => Kind::OutOfSync,
        Message::TargetBitmap { .. } => Kind::TargetBitmap,
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Hello => "Hello",
        Kind::Bitmap => "Bitmap",
        Kind::State => "State",
        Kind::PromoteRequest => "PromoteRequest",
        Kind::PromoteReply => "PromoteReply",
        Kind::Data => "Data",
        Kind::RecvAck => "RecvAck",
        Kind::WriteAck => "WriteAck",
        Kind::Barrier => "Barrier",
        Kind::BarrierAck => "BarrierAck",
        Kind::SyncStart => "SyncStart",
        Kind::ResyncData => "ResyncData",
        Kind::ResyncAck => "ResyncAck",
        Kind::SyncDone => "SyncDone",
        Kind::OvRequest => "OvRequest",
        Kind::OvReply => "OvReply",
        Kind::OvResult => "OvResult",
        Kind::VerifyDone => "VerifyDone",
        Kind::SyncRequest => "SyncRequest",
        Kind::SkipSync => "SkipSync",
        Kind::SyncPause => "SyncPause",
        Kind::DataRequest => "DataRequest",
        Kind::DataReply => "DataReply",
        Kind::KeepDiskRequest => "KeepDiskRequest",
        Kind::KeepDiskReply => "KeepDiskReply",
        Kind::OutOfSync => "OutOfSync",
        Kind::TargetBitmap => "TargetBitmap",
    }
}

fn role_code(role: Role) -> u8 {
    match role {
        Role::Secondary => 1,
        Role::Primary => 2,
    }
}

fn disk_code(disk: DiskState) -> u8 {
    match disk {
        DiskState::Diskless => 0,
        DiskState::Inconsistent => 4,
        DiskState::Outdated => 5,
        DiskState::UpToDate => 8,
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    kind: &'static str,
    blocks: Blocks,
}

/// Where a frame's block data comes from.
enum Blocks {
    /// The rest of the payload, copied out by this function.
    Copy(fn(&[u8]) -> Bytes),
    /// Read apart from the payload (taken once).
    Given(Option<Bytes>),
}

impl Reader<'_> {
    fn bad(&self, field: &'static str, problem: String) -> DecodeError {
        DecodeError::BadField {
            kind: self.kind,
            field,
            problem,
        }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(self.bad(
                field,
                format!("truncated: {} of {n} bytes", self.bytes.len()),
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(field, 4)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(field, 8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.bad(field, format!("{other} is not 0 or 1"))),
        }
    }

    fn role(&mut self) -> Result<Role, DecodeError> {
        match self.u8("role")? {
            1 => Ok(Role::Secondary),
            2 => Ok(Role::Primary),
            other => Err(self.bad("role", format!("unknown role {other}"))),
        }
    }

    fn disk(&mut self) -> Result<DiskState, DecodeError> {
        match self.u8("disk")? {
            0 => Ok(DiskState::Diskless),
            4 => Ok(DiskState::Inconsistent),
            5 => Ok(DiskState::Outdated),
            8 => Ok(DiskState::UpToDate),
            other => Err(self.bad("disk", format!("unknown disk state {other}"))),
        }
    }

    /// The rest of the payload, which must be whole blocks (at least one).
    /// The block data that ends the payload.
    fn blocks(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let n = match &self.blocks {
            Blocks::Copy(_) => self.bytes.len(),
            Blocks::Given(given) => given.as_ref().map_or(0, Bytes::len),
        };
        if n == 0 || !n.is_multiple_of(BLOCK_SIZE) {
            return Err(self.bad(
                field,
                format!("{n} bytes is not a whole number of 4 KiB blocks"),
            ));
        }
        match &mut self.blocks {
            Blocks::Copy(copy_blocks) => {
                let copy_blocks = *copy_blocks;
                Ok(copy_blocks(self.take(field, n)?))
            }
            Blocks::Given(given) => Ok(given.take().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                node_id: 1,
                blocks: 262_144,
                role: Role::Primary,
                disk: DiskState::UpToDate,
                protocol: Protocol::C,
                allow_two_primaries: true,
                crashed_primary: false,
                discard_my_data: true,
                sync_paused: true,
                current: 0xdead_beef_0000_0010,
                bitmap: 4,
                history: [6, 8, 0, 0, 0, 0, 0, 10],
            }),
            Message::Bitmap {
                words: vec![1, u64::MAX, 0],
            },
            Message::State {
                role: Role::Secondary,
                disk: DiskState::Inconsistent,
            },
            Message::PromoteRequest { tid: 9 },
            Message::PromoteReply {
                tid: 9,
                granted: true,
            },
            Message::Data {
                seq: 1,
                epoch: 2,
                block: 3,
                data: vec![7; 2 * BLOCK_SIZE].into(),
            },
            Message::RecvAck { seq: 5 },
            Message::WriteAck { seq: 5 },
            Message::Barrier { epoch: 3 },
            Message::BarrierAck { epoch: 3 },
            Message::SyncStart { full: true },
            Message::ResyncData {
                block: 77,
                data: vec![1; BLOCK_SIZE].into(),
            },
            Message::ResyncAck {
                block: 77,
                count: 3,
            },
            Message::SyncDone { current: 42 },
            Message::OvRequest {
                block: 64,
                alg: VerifyAlg::Sha1,
                digests: vec![3; 40],
            },
            Message::OvReply {
                block: 64,
                count: 2,
                differ: 2,
            },
            Message::OvResult {
                block: 64,
                count: 64,
                out_of_sync: u64::MAX,
            },
            Message::VerifyDone { found: 1 },
            Message::SyncRequest,
            Message::SkipSync { current: 0x1234 },
            Message::SyncPause { paused: true },
            Message::DataRequest {
                req: 12,
                block: 300,
                count: 256,
            },
            Message::DataReply {
                req: 12,
                data: Some(vec![9; 3 * BLOCK_SIZE].into()),
            },
            Message::DataReply {
                req: 13,
                data: None,
            },
            Message::KeepDiskRequest { tid: 4 },
            Message::KeepDiskReply {
                tid: 4,
                granted: false,
            },
            Message::OutOfSync {
                block: 1024,
                count: 256,
            },
            Message::TargetBitmap {
                words: vec![0, u64::MAX, 5],
            },
        ]
    }

    #[test]
    fn round_trip_every_kind_back_to_back() {
        let mut bytes = Vec::new();
        for m in samples() {
            encode(&m, &mut bytes);
        }
        let mut at = 0;
        for m in samples() {
            let (decoded, used) = decode(&bytes[at..]).unwrap();
            assert_eq!(decoded, m);
            at += used;
        }
        assert_eq!(at, bytes.len());
    }

    #[test]
    fn split_encoding_is_the_same_frame() {
        for m in samples() {
            let mut whole = vec![7];
            encode(&m, &mut whole);
            let mut split = vec![7];
            if let Some(bulk) = encode_split(m, &mut split) {
                split.extend_from_slice(&bulk);
            }
            assert_eq!(whole, split);
        }
    }

    /// Every frame with block data, read in two parts where `bulk_split`
    /// says (where `encode_split` splits it), decodes to the same message.
    #[test]
    fn frames_read_apart_decode_the_same() {
        let mut apart = 0;
        for m in samples() {
            let mut head = Vec::new();
            let bulk = encode_split(m.clone(), &mut head);
            let split = bulk_split(&head[..HEADER_LEN]);
            let Some(bulk) = bulk else {
                assert_eq!(split, None, "{m:?}");
                continue;
            };
            assert_eq!(split, Some((head.len(), head.len() + bulk.len())));
            assert_eq!(decode_apart(&head, bulk.clone()).unwrap(), m);
            // The wrong split is refused, not misread.
            assert!(decode_apart(&head[..head.len() - 1], bulk.clone()).is_err());
            assert!(decode_apart(&head, bulk.slice(BLOCK_SIZE..)).is_err());
            apart += 1;
        }
        assert_eq!(
            apart, 3,
            "the samples have one Data, one ResyncData and one DataReply with data"
        );
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut bytes = Vec::new();
        encode(&Message::SyncDone { current: 1 }, &mut bytes);
        for cut in 0..bytes.len() {
            assert!(matches!(
                decode(&bytes[..cut]),
                Err(DecodeError::Incomplete(_))
            ));
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut bytes = Vec::new();
        encode(
            &Message::PromoteReply {
                tid: 1,
                granted: true,
            },
            &mut bytes,
        );
        let last = bytes.len() - 1;
        bytes[last] = 7;
        let err = decode(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PromoteReply: field granted: 7 is not 0 or 1"
        );
        assert!(matches!(
            decode(b"GET / HTTP/1.1\r\n\r\n"),
            Err(DecodeError::BadMagic(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_heads_read_apart_never_panic(
            index in any::<proptest::sample::Index>(),
            at in 0usize..64,
            byte in any::<u8>(),
            cut in 0usize..64,
            blocks in 0usize..3,
        ) {
            let mut head = Vec::new();
            let samples = samples();
            let _ = encode_split(index.get(&samples).clone(), &mut head);
            let at = at % head.len();
            head[at] = byte;
            head.truncate(cut.max(1).min(head.len()));
            let _ = bulk_split(&head);
            let _ = decode_apart(&head, Bytes::from(vec![0u8; blocks * BLOCK_SIZE]));
        }

        #[test]
        fn mutated_frames_never_panic(
            index in any::<proptest::sample::Index>(),
            at in 0usize..10_000,
            byte in any::<u8>(),
        ) {
            let mut bytes = Vec::new();
            encode(index.get(&samples()), &mut bytes);
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok((_, used)) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
