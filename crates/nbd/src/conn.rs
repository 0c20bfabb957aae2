//! One NBD connection as a sans-IO state machine: bytes from the client go in
//! ([`Connection::receive`]), bytes for the client come out
//! ([`Connection::take_output`]); [`Connection::poll`] advances and hands the
//! shell one [`Request`] at a time to run against the export's device, whose
//! outcome comes back through [`Connection::complete`]. Negotiation is answered
//! entirely inside. Nothing here blocks, allocates without bound or panics on
//! input: a client that breaks the protocol gets a [`ProtocolError`], after
//! which the connection is closed.

use std::fmt;
use std::sync::Arc;

use crate::proto::*;

/// What the server knows about an export while negotiating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Name clients ask for (`""` is a valid name: the default export).
    pub name: String,
    /// Free text shown by `nbdinfo --list`.
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Refuse writes, trims and write-zeroes.
    pub read_only: bool,
}

impl ExportInfo {
    fn transmission_flags(&self) -> u16 {
        let mut flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_CAN_MULTI_CONN;
        if self.read_only {
            flags |= TFLAG_READ_ONLY;
        } else {
            flags |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
        }
        flags
    }
}

/// Why a connection was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The client's flags had bits we do not know, or lacked fixed newstyle.
    ClientFlags(u32),
    /// An option did not start with `IHAVEOPT`.
    OptionMagic(u64),
    /// An option announced more data than we accept.
    OptionTooLong { option: u32, len: u32 },
    /// `NBD_OPT_EXPORT_NAME` named an export we do not have (the protocol
    /// has no error reply for it: the server closes).
    UnknownExport(String),
    /// A request did not start with the request magic.
    RequestMagic(u32),
    /// A write announced a payload larger than we accept.
    PayloadTooLong(u32),
    /// The client asked to end negotiation (`NBD_OPT_ABORT`).
    Aborted,
    /// Input after the connection was closed.
    Closed,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ClientFlags(x) => write!(f, "unsupported client flags {x:#x}"),
            ProtocolError::OptionMagic(m) => write!(f, "bad option magic {m:#018x}"),
            ProtocolError::OptionTooLong { option, len } => {
                write!(
                    f,
                    "option {option} announces {len} bytes (at most {MAX_OPTION_LEN})"
                )
            }
            ProtocolError::UnknownExport(n) => write!(f, "no export named {n:?}"),
            ProtocolError::RequestMagic(m) => write!(f, "bad request magic {m:#010x}"),
            ProtocolError::PayloadTooLong(n) => {
                write!(f, "write payload of {n} bytes (at most {MAX_PAYLOAD})")
            }
            ProtocolError::Aborted => write!(f, "client aborted negotiation"),
            ProtocolError::Closed => write!(f, "connection closed"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A transmission request for the shell to run on the selected export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Echoed in the reply.
    pub cookie: u64,
    /// What to do.
    pub command: Command,
}

/// A command, checked against the export (in range, allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Read `len` bytes at `offset`; complete with the data.
    Read { offset: u64, len: u32 },
    /// Write `data` at `offset`.
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    /// Flush.
    Flush,
    /// Discard (trim).
    Trim { offset: u64, len: u32, fua: bool },
    /// Make the range read as zeros.
    WriteZeroes { offset: u64, len: u32, fua: bool },
    /// The client disconnects (`NBD_CMD_DISC`): no reply; close after.
    Disconnect,
}

/// What handling one request header led to.
enum Next {
    /// Answered inside (an error reply); look at the next one.
    Continue,
    /// The request (with its payload) is not complete yet.
    NeedInput,
    /// For the shell to run.
    Run(Request),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    Transmission { export: usize },
    Closed,
}

/// The state of one connection.
#[derive(Debug)]
pub struct Connection {
    exports: Arc<[ExportInfo]>,
    phase: Phase,
    no_zeroes: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    /// A request handed out and not yet completed.
    in_flight: Option<(u64, bool)>,
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// A decoded `NBD_OPT_INFO`/`NBD_OPT_GO` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// Export name.
    pub name: String,
    /// Information types asked for.
    pub infos: Vec<u16>,
}

/// Decodes the payload of `NBD_OPT_INFO`/`NBD_OPT_GO`: u32 name length, name,
/// u16 count, count × u16. `None` if the lengths do not add up.
pub fn decode_info_request(data: &[u8]) -> Option<InfoRequest> {
    let name_len = usize::try_from(be_u32(data.get(..4)?)).ok()?;
    let name = data.get(4..4usize.checked_add(name_len)?)?;
    let rest = &data[4 + name_len..];
    let count = usize::from(be_u16(rest.get(..2)?));
    let list = &rest[2..];
    if list.len() != count * 2 {
        return None;
    }
    Some(InfoRequest {
        name: String::from_utf8_lossy(name).into_owned(),
        infos: list.chunks_exact(2).map(be_u16).collect(),
    })
}

/// A decoded transmission request header (28 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub kind: u16,
    /// Cookie (handle).
    pub cookie: u64,
    /// Offset.
    pub offset: u64,
    /// Length.
    pub len: u32,
}

/// Size of a request header.
pub const REQUEST_HEADER_LEN: usize = 28;

/// Decodes a request header from the first 28 bytes of `b`.
pub fn decode_request_header(b: &[u8]) -> Result<Option<RequestHeader>, ProtocolError> {
    if b.len() < REQUEST_HEADER_LEN {
        return Ok(None);
    }
    let magic = be_u32(&b[0..4]);
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::RequestMagic(magic));
    }
    Ok(Some(RequestHeader {
        flags: be_u16(&b[4..6]),
        kind: be_u16(&b[6..8]),
        cookie: be_u64(&b[8..16]),
        offset: be_u64(&b[16..24]),
        len: be_u32(&b[24..28]),
    }))
}

/// Encodes a simple reply header (16 bytes) into `out`.
pub fn encode_simple_reply(out: &mut Vec<u8>, error: u32, cookie: u64) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
}

fn option_reply(out: &mut Vec<u8>, option: u32, kind: u32, data: &[u8]) {
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

impl Connection {
    /// A new connection; the server's greeting is already in the output.
    pub fn new(exports: Arc<[ExportInfo]>) -> Self {
        let mut output = Vec::with_capacity(18);
        output.extend_from_slice(&NBDMAGIC.to_be_bytes());
        output.extend_from_slice(&IHAVEOPT.to_be_bytes());
        output.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        Connection {
            exports,
            phase: Phase::ClientFlags,
            no_zeroes: false,
            input: Vec::new(),
            output,
            in_flight: None,
        }
    }

    /// Bytes received from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.phase != Phase::Closed {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// Bytes to send to the client (taken: the buffer is left empty).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Whether the connection is over (send the remaining output, then close).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The export selected by `NBD_OPT_GO`/`NBD_OPT_EXPORT_NAME`, if any.
    pub fn export(&self) -> Option<usize> {
        match self.phase {
            Phase::Transmission { export } => Some(export),
            _ => None,
        }
    }

    /// Processes buffered input. `Ok(Some(request))`: run it and call
    /// [`complete`](Self::complete) before polling again. `Ok(None)`: more
    /// input is needed (or the connection closed: see
    /// [`is_closed`](Self::is_closed)). `Err`: the client broke the protocol;
    /// the connection is closed.
    pub fn poll(&mut self) -> Result<Option<Request>, ProtocolError> {
        if self.in_flight.is_some() {
            return Ok(None);
        }
        let result = self.step();
        if result.is_err() {
            self.close();
        }
        result
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.input = Vec::new();
    }

    fn step(&mut self) -> Result<Option<Request>, ProtocolError> {
        loop {
            match self.phase {
                Phase::Closed => return Ok(None),
                Phase::ClientFlags => {
                    if self.input.len() < 4 {
                        return Ok(None);
                    }
                    let flags = be_u32(&self.input[..4]);
                    self.input.drain(..4);
                    if flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0
                        || flags & CLIENT_FIXED_NEWSTYLE == 0
                    {
                        return Err(ProtocolError::ClientFlags(flags));
                    }
                    self.no_zeroes = flags & CLIENT_NO_ZEROES != 0;
                    self.phase = Phase::Options;
                }
                Phase::Options => {
                    if self.input.len() < 16 {
                        return Ok(None);
                    }
                    let magic = be_u64(&self.input[..8]);
                    let option = be_u32(&self.input[8..12]);
                    let len = be_u32(&self.input[12..16]);
                    if magic != IHAVEOPT {
                        return Err(ProtocolError::OptionMagic(magic));
                    }
                    if len > MAX_OPTION_LEN {
                        return Err(ProtocolError::OptionTooLong { option, len });
                    }
                    let total = 16 + len as usize;
                    if self.input.len() < total {
                        return Ok(None);
                    }
                    let data: Vec<u8> = self.input[16..total].to_vec();
                    self.input.drain(..total);
                    self.option(option, &data)?;
                }
                Phase::Transmission { export } => match self.request(export)? {
                    Next::Continue => continue,
                    Next::NeedInput => return Ok(None),
                    Next::Run(request) => return Ok(Some(request)),
                },
            }
        }
    }

    fn option(&mut self, option: u32, data: &[u8]) -> Result<(), ProtocolError> {
        let out = &mut self.output;
        match option {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(data).into_owned();
                let Some(index) = self.exports.iter().position(|e| e.name == name) else {
                    return Err(ProtocolError::UnknownExport(name));
                };
                let e = &self.exports[index];
                out.extend_from_slice(&e.size.to_be_bytes());
                out.extend_from_slice(&e.transmission_flags().to_be_bytes());
                if !self.no_zeroes {
                    out.extend_from_slice(&[0; 124]);
                }
                self.phase = Phase::Transmission { export: index };
            }
            OPT_ABORT => {
                option_reply(out, option, REP_ACK, &[]);
                return Err(ProtocolError::Aborted);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    option_reply(out, option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data");
                    return Ok(());
                }
                for e in self.exports.iter() {
                    let mut item = Vec::with_capacity(4 + e.name.len() + e.description.len());
                    item.extend_from_slice(&(e.name.len() as u32).to_be_bytes());
                    item.extend_from_slice(e.name.as_bytes());
                    item.extend_from_slice(e.description.as_bytes());
                    option_reply(out, option, REP_SERVER, &item);
                }
                option_reply(out, option, REP_ACK, &[]);
            }
            OPT_INFO | OPT_GO => {
                let Some(req) = decode_info_request(data) else {
                    option_reply(out, option, REP_ERR_INVALID, b"malformed info request");
                    return Ok(());
                };
                let Some(index) = self.exports.iter().position(|e| e.name == req.name) else {
                    let msg = format!("no export named {:?}", req.name);
                    option_reply(out, option, REP_ERR_UNKNOWN, msg.as_bytes());
                    return Ok(());
                };
                let e = &self.exports[index];
                let mut info = Vec::with_capacity(12);
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&e.size.to_be_bytes());
                info.extend_from_slice(&e.transmission_flags().to_be_bytes());
                option_reply(out, option, REP_INFO, &info);
                for kind in req.infos {
                    let mut info = kind.to_be_bytes().to_vec();
                    match kind {
                        INFO_NAME => info.extend_from_slice(e.name.as_bytes()),
                        INFO_DESCRIPTION => info.extend_from_slice(e.description.as_bytes()),
                        INFO_BLOCK_SIZE => {
                            info.extend_from_slice(&1u32.to_be_bytes());
                            info.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                            info.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
                        }
                        // Unknown or already sent information: ignored.
                        _ => continue,
                    }
                    option_reply(out, option, REP_INFO, &info);
                }
                option_reply(out, option, REP_ACK, &[]);
                if option == OPT_GO {
                    self.phase = Phase::Transmission { export: index };
                }
            }
            // TLS, structured replies, metadata contexts, extended headers and
            // anything newer: not supported; the client carries on without.
            _ => option_reply(out, option, REP_ERR_UNSUP, &[]),
        }
        Ok(())
    }

    fn request(&mut self, export: usize) -> Result<Next, ProtocolError> {
        let Some(h) = decode_request_header(&self.input)? else {
            return Ok(Next::NeedInput);
        };
        let e = &self.exports[export];
        let payload = if h.kind == CMD_WRITE { h.len } else { 0 };
        if payload > MAX_PAYLOAD {
            return Err(ProtocolError::PayloadTooLong(payload));
        }
        let total = REQUEST_HEADER_LEN + payload as usize;
        if self.input.len() < total {
            return Ok(Next::NeedInput);
        }
        let data = if h.kind == CMD_WRITE {
            self.input[REQUEST_HEADER_LEN..total].to_vec()
        } else {
            Vec::new()
        };
        self.input.drain(..total);

        let fua = h.flags & CMD_FLAG_FUA != 0;
        let in_range = h
            .offset
            .checked_add(u64::from(h.len))
            .is_some_and(|end| end <= e.size);
        let known_flags = match h.kind {
            CMD_WRITE | CMD_TRIM => CMD_FLAG_FUA,
            CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
            _ => 0,
        };
        let writes = matches!(h.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
        let error = if h.flags & !known_flags != 0 {
            Some(EINVAL)
        } else if writes && e.read_only {
            Some(EPERM)
        } else if matches!(h.kind, CMD_READ | CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES) && !in_range
        {
            Some(if h.kind == CMD_WRITE { ENOSPC } else { EINVAL })
        } else if h.kind == CMD_READ && h.len > MAX_PAYLOAD {
            Some(EOVERFLOW)
        } else {
            None
        };
        if let Some(error) = error {
            encode_simple_reply(&mut self.output, error, h.cookie);
            return Ok(Next::Continue);
        }
        let command = match h.kind {
            CMD_READ => Command::Read {
                offset: h.offset,
                len: h.len,
            },
            CMD_WRITE => Command::Write {
                offset: h.offset,
                data,
                fua,
            },
            CMD_FLUSH => Command::Flush,
            CMD_TRIM => Command::Trim {
                offset: h.offset,
                len: h.len,
                fua,
            },
            CMD_WRITE_ZEROES => Command::WriteZeroes {
                offset: h.offset,
                len: h.len,
                fua,
            },
            CMD_DISC => {
                self.close();
                return Ok(Next::Run(Request {
                    cookie: h.cookie,
                    command: Command::Disconnect,
                }));
            }
            // Unknown commands (and NBD_CMD_CACHE, BLOCK_STATUS we never
            // advertised): EINVAL, and carry on.
            _ => {
                encode_simple_reply(&mut self.output, EINVAL, h.cookie);
                return Ok(Next::Continue);
            }
        };
        self.in_flight = Some((h.cookie, matches!(command, Command::Read { .. })));
        Ok(Next::Run(Request {
            cookie: h.cookie,
            command,
        }))
    }

    /// The outcome of the request handed out last: `Ok(data)` (the data read
    /// for a read, empty otherwise) or `Err(nbd_errno)`.
    pub fn complete(&mut self, result: Result<&[u8], u32>) {
        let Some((cookie, is_read)) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(data) => {
                encode_simple_reply(&mut self.output, 0, cookie);
                if is_read {
                    self.output.extend_from_slice(data);
                }
            }
            Err(error) => encode_simple_reply(&mut self.output, error.max(1), cookie),
        }
    }
}
