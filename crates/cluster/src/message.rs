//! The wire format between o2cb nodes: network frames ([`NetMessage`]) and the lock
//! manager's messages they carry ([`DlmMessage`]).
//!
//! Every frame is a 12-byte header (magic, kind, payload length; big-endian) and a
//! payload; a [`NetMessage::Data`] frame's payload is one encoded [`DlmMessage`]
//! after its sequence numbers. Both ends are tandem, so this is our own protocol, not
//! the kernel's o2net format. Layout byte by byte: `docs/FORMAT.md`, section
//! "o2cb network and DLM messages". Decoding never panics; an error names the message
//! and the field.

use thiserror::Error;

use crate::dlm::{LockName, Mode, LVB_LEN};

/// "O2TM": every frame starts with it.
pub const MAGIC: u32 = 0x4F32_544D;
/// Header bytes before the payload.
pub const HEADER_LEN: usize = 12;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The handshake's protocol version.
pub const PROTOCOL_VERSION: u8 = 1;
/// Longest lock domain name (o2dlm: 64).
pub const MAX_DOMAIN_LEN: usize = 64;

/// A frame between two nodes' membership layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMessage {
    /// The first frame each side sends on a new connection.
    Hello(Hello),
    /// Sent when nothing else was sent for the keepalive delay; carries the
    /// cumulative acknowledgement.
    Keepalive { ack: u64 },
    /// One upper-layer message, numbered for the reliable channel.
    Data {
        seq: u64,
        ack: u64,
        payload: Vec<u8>,
    },
}

/// The handshake: who the sender is and the timeouts it runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub node: u8,
    pub cluster: String,
    pub idle_timeout_ms: u32,
    pub keepalive_delay_ms: u32,
    pub reconnect_delay_ms: u32,
    /// The sender's incarnation (chosen at start, different at every start).
    pub generation: u64,
    /// The receiver's incarnation that `acked` refers to (0: none).
    pub acked_generation: u64,
    /// The last Data sequence number the sender received from that incarnation.
    pub acked: u64,
}

/// A lock manager message, carried in a [`NetMessage::Data`] payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlmMessage {
    /// A master asks a node for its locks on the resources it masters in `view`.
    SyncRequest {
        domain: String,
        view: u64,
        nonce: u64,
    },
    /// The answer: every lock the sender holds or wants on those resources, and
    /// what it knows of dead nodes and their recovery.
    SyncReply {
        domain: String,
        view: u64,
        nonce: u64,
        dead: Vec<(u8, u64)>,
        recovered: Vec<(u8, u64)>,
        locks: Vec<LockState>,
    },
    /// Holder → master: grant me `mode` (request number `seq`).
    Request {
        domain: String,
        view: u64,
        name: LockName,
        mode: Mode,
        seq: u64,
        flags: u8,
    },
    /// Master → holder: request `seq` is granted at `mode`, with the resource's LVB.
    Grant {
        domain: String,
        view: u64,
        name: LockName,
        seq: u64,
        mode: Mode,
        lvb_version: u64,
        lvb: [u8; LVB_LEN],
    },
    /// Master → holder: someone waits for `mode`; come down to a compatible mode.
    Bast {
        domain: String,
        view: u64,
        name: LockName,
        mode: Mode,
    },
    /// Holder → master: my granted mode is now `mode` (None: unlocked), and the
    /// LVB (newer than the master's if I wrote it under EX).
    Downconvert {
        domain: String,
        view: u64,
        name: LockName,
        mode: Option<Mode>,
        lvb_version: u64,
        lvb: [u8; LVB_LEN],
    },
    /// The layer above finished recovering this dead incarnation: its locks go.
    RecoveryDone {
        domain: String,
        node: u8,
        generation: u64,
    },
}

impl DlmMessage {
    /// The lock domain the message belongs to.
    pub fn domain(&self) -> &str {
        match self {
            DlmMessage::SyncRequest { domain, .. }
            | DlmMessage::SyncReply { domain, .. }
            | DlmMessage::Request { domain, .. }
            | DlmMessage::Grant { domain, .. }
            | DlmMessage::Bast { domain, .. }
            | DlmMessage::Downconvert { domain, .. }
            | DlmMessage::RecoveryDone { domain, .. } => domain,
        }
    }
}

/// One node's lock on one resource, as reported to a new master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    pub name: LockName,
    pub granted: Option<Mode>,
    /// (mode, request number, flags)
    pub pending: Option<(Mode, u64, u8)>,
    pub lvb_version: u64,
    pub lvb: [u8; LVB_LEN],
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not an error yet: this many more bytes are needed.
    #[error("incomplete frame: {0} more bytes needed")]
    Incomplete(usize),
    #[error("bad magic 0x{0:08x} (not an o2cb peer?)")]
    BadMagic(u32),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("{message}: field {field}: {problem}")]
    BadField {
        message: &'static str,
        field: &'static str,
        problem: String,
    },
}

const KIND_HELLO: u8 = 1;
const KIND_KEEPALIVE: u8 = 2;
const KIND_DATA: u8 = 3;

const DLM_SYNC_REQUEST: u8 = 1;
const DLM_SYNC_REPLY: u8 = 2;
const DLM_REQUEST: u8 = 3;
const DLM_GRANT: u8 = 4;
const DLM_BAST: u8 = 5;
const DLM_DOWNCONVERT: u8 = 6;
const DLM_RECOVERY_DONE: u8 = 7;

/// No lock at all (distinct from NL, which is a held lock of no access).
const MODE_NONE: u8 = 0xFF;

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// A u8 length, then the bytes (callers keep them ≤ 255).
    fn short(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(255);
        self.u8(len as u8);
        self.0.extend_from_slice(&bytes[..len]);
    }
    fn mode(&mut self, mode: Option<Mode>) {
        self.u8(mode.map_or(MODE_NONE, Mode::code));
    }
}

/// Appends the frame for `message` to `out`.
pub fn encode_net(message: &NetMessage, out: &mut Vec<u8>) {
    let start = out.len();
    let kind = match message {
        NetMessage::Hello(_) => KIND_HELLO,
        NetMessage::Keepalive { .. } => KIND_KEEPALIVE,
        NetMessage::Data { .. } => KIND_DATA,
    };
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
    let mut w = Writer(out);
    match message {
        NetMessage::Hello(h) => {
            w.u8(h.version);
            w.u8(h.node);
            w.u32(h.idle_timeout_ms);
            w.u32(h.keepalive_delay_ms);
            w.u32(h.reconnect_delay_ms);
            w.u64(h.generation);
            w.u64(h.acked_generation);
            w.u64(h.acked);
            w.short(h.cluster.as_bytes());
        }
        NetMessage::Keepalive { ack } => w.u64(*ack),
        NetMessage::Data { seq, ack, payload } => {
            w.u64(*seq);
            w.u64(*ack);
            w.0.extend_from_slice(payload);
        }
    }
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
}

/// Decodes one frame from the start of `bytes`: the message and how many bytes it
/// used, or why not.
pub fn decode_net(bytes: &[u8]) -> Result<(NetMessage, usize), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete(HEADER_LEN - bytes.len()));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let kind = bytes[4];
    let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(len));
    }
    if bytes.len() < HEADER_LEN + len {
        return Err(DecodeError::Incomplete(HEADER_LEN + len - bytes.len()));
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    let message = match kind {
        KIND_HELLO => {
            let mut r = Reader::new(payload, "Hello");
            let version = r.u8("version")?;
            let node = r.u8("node")?;
            let idle_timeout_ms = r.u32("idle_timeout_ms")?;
            let keepalive_delay_ms = r.u32("keepalive_delay_ms")?;
            let reconnect_delay_ms = r.u32("reconnect_delay_ms")?;
            let generation = r.u64("generation")?;
            let acked_generation = r.u64("acked_generation")?;
            let acked = r.u64("acked")?;
            let cluster = r.text("cluster", 16)?;
            r.end()?;
            NetMessage::Hello(Hello {
                version,
                node,
                cluster,
                idle_timeout_ms,
                keepalive_delay_ms,
                reconnect_delay_ms,
                generation,
                acked_generation,
                acked,
            })
        }
        KIND_KEEPALIVE => {
            let mut r = Reader::new(payload, "Keepalive");
            let ack = r.u64("ack")?;
            r.end()?;
            NetMessage::Keepalive { ack }
        }
        KIND_DATA => {
            let mut r = Reader::new(payload, "Data");
            let seq = r.u64("seq")?;
            let ack = r.u64("ack")?;
            NetMessage::Data {
                seq,
                ack,
                payload: r.rest().to_vec(),
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok((message, HEADER_LEN + len))
}

/// The bytes of one DLM message (the payload of a Data frame).
pub fn encode_dlm(message: &DlmMessage) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    match message {
        DlmMessage::SyncRequest {
            domain,
            view,
            nonce,
        } => {
            w.u8(DLM_SYNC_REQUEST);
            w.short(domain.as_bytes());
            w.u64(*view);
            w.u64(*nonce);
        }
        DlmMessage::SyncReply {
            domain,
            view,
            nonce,
            dead,
            recovered,
            locks,
        } => {
            w.u8(DLM_SYNC_REPLY);
            w.short(domain.as_bytes());
            w.u64(*view);
            w.u64(*nonce);
            for list in [dead, recovered] {
                w.u32(list.len() as u32);
                for (node, generation) in list {
                    w.u8(*node);
                    w.u64(*generation);
                }
            }
            w.u32(locks.len() as u32);
            for lock in locks {
                w.short(lock.name.as_bytes());
                w.mode(lock.granted);
                match lock.pending {
                    Some((mode, seq, flags)) => {
                        w.mode(Some(mode));
                        w.u64(seq);
                        w.u8(flags);
                    }
                    None => {
                        w.mode(None);
                        w.u64(0);
                        w.u8(0);
                    }
                }
                w.u64(lock.lvb_version);
                w.0.extend_from_slice(&lock.lvb);
            }
        }
        DlmMessage::Request {
            domain,
            view,
            name,
            mode,
            seq,
            flags,
        } => {
            w.u8(DLM_REQUEST);
            w.short(domain.as_bytes());
            w.u64(*view);
            w.short(name.as_bytes());
            w.mode(Some(*mode));
            w.u64(*seq);
            w.u8(*flags);
        }
        DlmMessage::Grant {
            domain,
            view,
            name,
            seq,
            mode,
            lvb_version,
            lvb,
        } => {
            w.u8(DLM_GRANT);
            w.short(domain.as_bytes());
            w.u64(*view);
            w.short(name.as_bytes());
            w.u64(*seq);
            w.mode(Some(*mode));
            w.u64(*lvb_version);
            w.0.extend_from_slice(lvb);
        }
        DlmMessage::Bast {
            domain,
            view,
            name,
            mode,
        } => {
            w.u8(DLM_BAST);
            w.short(domain.as_bytes());
            w.u64(*view);
            w.short(name.as_bytes());
            w.mode(Some(*mode));
        }
        DlmMessage::Downconvert {
            domain,
            view,
            name,
            mode,
            lvb_version,
            lvb,
        } => {
            w.u8(DLM_DOWNCONVERT);
            w.short(domain.as_bytes());
            w.u64(*view);
            w.short(name.as_bytes());
            w.mode(*mode);
            w.u64(*lvb_version);
            w.0.extend_from_slice(lvb);
        }
        DlmMessage::RecoveryDone {
            domain,
            node,
            generation,
        } => {
            w.u8(DLM_RECOVERY_DONE);
            w.short(domain.as_bytes());
            w.u8(*node);
            w.u64(*generation);
        }
    }
    out
}

/// Decodes the bytes of one DLM message; every byte must be used.
pub fn decode_dlm(bytes: &[u8]) -> Result<DlmMessage, DecodeError> {
    let Some((&kind, _)) = bytes.split_first() else {
        return Err(DecodeError::BadField {
            message: "DlmMessage",
            field: "kind",
            problem: "empty payload".into(),
        });
    };
    let name = match kind {
        DLM_SYNC_REQUEST => "SyncRequest",
        DLM_SYNC_REPLY => "SyncReply",
        DLM_REQUEST => "Request",
        DLM_GRANT => "Grant",
        DLM_BAST => "Bast",
        DLM_DOWNCONVERT => "Downconvert",
        DLM_RECOVERY_DONE => "RecoveryDone",
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let mut r = Reader::new(&bytes[1..], name);
    let domain = r.text("domain", MAX_DOMAIN_LEN)?;
    let message = match kind {
        DLM_SYNC_REQUEST => DlmMessage::SyncRequest {
            domain,
            view: r.u64("view")?,
            nonce: r.u64("nonce")?,
        },
        DLM_SYNC_REPLY => {
            let view = r.u64("view")?;
            let nonce = r.u64("nonce")?;
            let mut lists = [Vec::new(), Vec::new()];
            for (list, field) in lists.iter_mut().zip(["dead", "recovered"]) {
                let count = r.count(field, 9)?;
                for _ in 0..count {
                    list.push((r.u8(field)?, r.u64(field)?));
                }
            }
            let [dead, recovered] = lists;
            let count = r.count("locks", 1 + 1 + 1 + 8 + 1 + 8 + LVB_LEN)?;
            let mut locks = Vec::with_capacity(count);
            for _ in 0..count {
                let name = r.name("locks.name")?;
                let granted = r.mode("locks.granted")?;
                let pending_mode = r.mode("locks.pending_mode")?;
                let seq = r.u64("locks.pending_seq")?;
                let flags = r.u8("locks.pending_flags")?;
                let lvb_version = r.u64("locks.lvb_version")?;
                let lvb = r.lvb("locks.lvb")?;
                locks.push(LockState {
                    name,
                    granted,
                    pending: pending_mode.map(|m| (m, seq, flags)),
                    lvb_version,
                    lvb,
                });
            }
            DlmMessage::SyncReply {
                domain,
                view,
                nonce,
                dead,
                recovered,
                locks,
            }
        }
        DLM_REQUEST => DlmMessage::Request {
            domain,
            view: r.u64("view")?,
            name: r.name("name")?,
            mode: r.some_mode("mode")?,
            seq: r.u64("seq")?,
            flags: r.u8("flags")?,
        },
        DLM_GRANT => DlmMessage::Grant {
            domain,
            view: r.u64("view")?,
            name: r.name("name")?,
            seq: r.u64("seq")?,
            mode: r.some_mode("mode")?,
            lvb_version: r.u64("lvb_version")?,
            lvb: r.lvb("lvb")?,
        },
        DLM_BAST => DlmMessage::Bast {
            domain,
            view: r.u64("view")?,
            name: r.name("name")?,
            mode: r.some_mode("mode")?,
        },
        DLM_DOWNCONVERT => DlmMessage::Downconvert {
            domain,
            view: r.u64("view")?,
            name: r.name("name")?,
            mode: r.mode("mode")?,
            lvb_version: r.u64("lvb_version")?,
            lvb: r.lvb("lvb")?,
        },
        _ => DlmMessage::RecoveryDone {
            domain,
            node: r.u8("node")?,
            generation: r.u64("generation")?,
        },
    };
    r.end()?;
    Ok(message)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], message: &'static str) -> Self {
        Reader {
            bytes,
            at: 0,
            message,
        }
    }
    fn error(&self, field: &'static str, problem: impl Into<String>) -> DecodeError {
        DecodeError::BadField {
            message: self.message,
            field,
            problem: problem.into(),
        }
    }
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() - self.at < n {
            return Err(self.error(
                field,
                format!("needs {n} bytes at offset {}, payload ends", self.at),
            ));
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(field, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(field, 8)?);
        Ok(u64::from_be_bytes(a))
    }
    /// A u32 count of items at least `min_item` bytes each, checked against what is
    /// left so a forged count cannot make us allocate.
    fn count(&mut self, field: &'static str, min_item: usize) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        let left = self.bytes.len() - self.at;
        if count.saturating_mul(min_item) > left {
            return Err(self.error(field, format!("count {count} exceeds the payload")));
        }
        Ok(count)
    }
    fn text(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.u8(field)? as usize;
        if len > max {
            return Err(self.error(field, format!("length {len} exceeds {max}")));
        }
        let bytes = self.take(field, len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error(field, "not UTF-8"))
    }
    fn name(&mut self, field: &'static str) -> Result<LockName, DecodeError> {
        let len = self.u8(field)? as usize;
        let bytes = self.take(field, len)?;
        LockName::new(bytes).map_err(|e| self.error(field, e.to_string()))
    }
    fn mode(&mut self, field: &'static str) -> Result<Option<Mode>, DecodeError> {
        match self.u8(field)? {
            MODE_NONE => Ok(None),
            code => Mode::from_code(code)
                .map(Some)
                .ok_or_else(|| self.error(field, format!("unknown lock mode {code}"))),
        }
    }
    fn some_mode(&mut self, field: &'static str) -> Result<Mode, DecodeError> {
        self.mode(field)?
            .ok_or_else(|| self.error(field, "a mode is required here"))
    }
    fn lvb(&mut self, field: &'static str) -> Result<[u8; LVB_LEN], DecodeError> {
        let mut lvb = [0u8; LVB_LEN];
        lvb.copy_from_slice(self.take(field, LVB_LEN)?);
        Ok(lvb)
    }
    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.at != self.bytes.len() {
            return Err(self.error(
                "end",
                format!("{} bytes left over", self.bytes.len() - self.at),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LockName {
        LockName::new(s.as_bytes()).unwrap()
    }

    fn samples() -> Vec<DlmMessage> {
        let d = "0123456789ABCDEF0123456789ABCDEF".to_string();
        let mut lvb = [0u8; LVB_LEN];
        lvb[0] = 7;
        lvb[63] = 9;
        vec![
            DlmMessage::SyncRequest {
                domain: d.clone(),
                view: 1,
                nonce: 2,
            },
            DlmMessage::SyncReply {
                domain: d.clone(),
                view: 3,
                nonce: 4,
                dead: vec![(1, 5)],
                recovered: vec![(2, 6), (3, 7)],
                locks: vec![LockState {
                    name: name("M000000000000000000020a00000001"),
                    granted: Some(Mode::Pr),
                    pending: Some((Mode::Ex, 9, 1)),
                    lvb_version: 3,
                    lvb,
                }],
            },
            DlmMessage::Request {
                domain: d.clone(),
                view: 1,
                name: name("S000000000000000000000200000000"),
                mode: Mode::Ex,
                seq: 3,
                flags: 0,
            },
            DlmMessage::Grant {
                domain: d.clone(),
                view: 1,
                name: name("a"),
                seq: 3,
                mode: Mode::Nl,
                lvb_version: 0,
                lvb,
            },
            DlmMessage::Bast {
                domain: d.clone(),
                view: 1,
                name: name("b"),
                mode: Mode::Pr,
            },
            DlmMessage::Downconvert {
                domain: d.clone(),
                view: 1,
                name: name("c"),
                mode: None,
                lvb_version: 1,
                lvb,
            },
            DlmMessage::RecoveryDone {
                domain: d,
                node: 1,
                generation: 77,
            },
        ]
    }

    #[test]
    fn dlm_round_trip() {
        for m in samples() {
            let bytes = encode_dlm(&m);
            assert_eq!(decode_dlm(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn net_round_trip_and_partial_frames() {
        let frames = vec![
            NetMessage::Hello(Hello {
                version: PROTOCOL_VERSION,
                node: 3,
                cluster: "tclust".into(),
                idle_timeout_ms: 15000,
                keepalive_delay_ms: 2000,
                reconnect_delay_ms: 2000,
                generation: 0xdead,
                acked_generation: 0xbeef,
                acked: 12,
            }),
            NetMessage::Keepalive { ack: 5 },
            NetMessage::Data {
                seq: 1,
                ack: 2,
                payload: encode_dlm(&samples()[0]),
            },
        ];
        let mut stream = Vec::new();
        for f in &frames {
            encode_net(f, &mut stream);
        }
        let mut at = 0;
        for f in &frames {
            for cut in 0..HEADER_LEN.min(stream.len() - at) {
                assert!(matches!(
                    decode_net(&stream[at..at + cut]),
                    Err(DecodeError::Incomplete(_))
                ));
            }
            let (m, used) = decode_net(&stream[at..]).unwrap();
            assert_eq!(&m, f);
            at += used;
        }
        assert_eq!(at, stream.len());
    }

    #[test]
    fn errors_name_the_field() {
        let bytes = encode_dlm(&samples()[2]);
        let e = decode_dlm(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.to_string().starts_with("Request: field seq"), "{e}");
        let mut bad = bytes.clone();
        let mode_at = bad.len() - 10;
        bad[mode_at] = 4;
        let e = decode_dlm(&bad).unwrap_err();
        assert!(e.to_string().contains("field mode"), "{e}");
        let mut long = bytes;
        long.push(0);
        assert!(decode_dlm(&long)
            .unwrap_err()
            .to_string()
            .contains("left over"));
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode_dlm(&bytes);
            let _ = decode_net(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(which in 0usize..7, at in 0usize..400, value in proptest::num::u8::ANY, cut in 0usize..400) {
            let mut bytes = encode_dlm(&samples()[which]);
            let at = at % bytes.len();
            bytes[at] = value;
            bytes.truncate(cut.max(1));
            let _ = decode_dlm(&bytes);
            let mut frame = Vec::new();
            encode_net(&NetMessage::Data { seq: 1, ack: 1, payload: bytes }, &mut frame);
            let at2 = at % frame.len();
            frame[at2] ^= value;
            let _ = decode_net(&frame);
        }
    }
}
