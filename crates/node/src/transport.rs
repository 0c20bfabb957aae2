//! TCP between the nodes of a resource.
//!
//! For each pair, the node with the lower node id dials and the other listens on
//! its configured address, so there is never more than one connection per pair.
//! A connection starts with a preamble each way — `TNDMCONN`, a version byte
//! (1), the sender's node id, a big-endian u16 length and the resource name —
//! and then carries the engine's frames. A peer that sends something else, names
//! another resource or an unknown node id is dropped with a log line; the
//! listener goes on.
//!
//! Threads: a dialer per peer with a higher node id, one listener per resource
//! (when some peer has a lower node id), a reader and a writer per connection
//! (the engine queues frames; the thread that ran it writes them once the
//! engine's lock is let go, without blocking, and the writer thread takes over
//! what the socket does not take). Everything they
//! learn goes to the resource's engine as [`HostMsg`]s; the engine owns the
//! connection table.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use blockdev::AlignedBuf;
use bytes::Bytes;
use replication::message::{
    bulk_split, decode_apart, decode_with, DecodeError, HEADER_LEN, MAX_PAYLOAD,
};
use replication::NodeId;

use crate::host::{Events, HostMsg};

const PREAMBLE_MAGIC: &[u8; 8] = b"TNDMCONN";
const PREAMBLE_VERSION: u8 = 1;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// The receive buffer: two of the largest frames, and room for a large read.
const READ_BUFFER: usize = 2 * (HEADER_LEN + MAX_PAYLOAD) + READ_AT_LEAST;
/// A read is never smaller than this, if the buffer can help it.
const READ_AT_LEAST: usize = 64 << 10;
/// Nor larger than this: a read that took a whole large frame into the
/// buffer would cost a copy of its block data that reading it apart avoids,
/// so a large frame's head is seen before most of its block data is read.
const READ_AT_MOST: usize = 64 << 10;
/// Block data from this size on is read apart from the buffer, straight into
/// aligned memory (below it, the frame usually comes whole in one read).
const READ_APART: usize = 64 << 10;
/// Pieces of frames one `sendmsg` takes at most.
const IOVECS: usize = 64;

/// A live connection, as the engine holds it.
pub struct Connection {
    pub id: u64,
    outbox: Arc<Outbox>,
    stream: TcpStream,
}

impl Connection {
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Queues a frame: `head`, then `bulk` (see `message::encode_split`), and
    /// notes the connection in `flushes`, to write once the engine's lock is
    /// let go ([`Flushes::run`]).
    pub fn send(&self, head: Vec<u8>, bulk: Option<Bytes>, flushes: &mut Flushes) {
        let mut out = self.outbox.lock();
        if out.failed {
            return;
        }
        out.queue.push_back(Bytes::from(head));
        if let Some(bulk) = bulk.filter(|b| !b.is_empty()) {
            out.queue.push_back(bulk);
        }
        drop(out);
        if !flushes.0.iter().any(|o| Arc::ptr_eq(o, &self.outbox)) {
            flushes.0.push(self.outbox.clone());
        }
    }
}

/// Connections with frames queued by one run of the engine.
#[derive(Default)]
pub struct Flushes(Vec<Arc<Outbox>>);

impl Flushes {
    /// Writes what each connection has queued, without blocking: while no
    /// other thread is writing to it, the calling thread writes itself
    /// (`MSG_DONTWAIT`), which spares a thread wake-up per frame (at 4 KiB
    /// writes the wake-ups were the cost); what the socket does not take at
    /// once goes to the writer thread, which may block.
    pub fn run(self) {
        for outbox in self.0 {
            outbox.flush();
        }
    }
}

impl Drop for Connection {
    /// The writer thread writes what is queued, then shuts the socket down.
    fn drop(&mut self) {
        self.outbox.lock().closed = true;
        self.outbox.wake.notify_one();
    }
}

/// What a connection has to write, shared by the engine, the threads that
/// flush after it, and the writer thread.
pub struct Outbox {
    state: Mutex<Outgoing>,
    wake: Condvar,
    stream: TcpStream,
}

struct Outgoing {
    /// Pieces of frames in order; the first `sent` bytes of the front one are
    /// written.
    queue: VecDeque<Bytes>,
    sent: usize,
    /// A thread (a flushing one, or the writer) is writing pieces it took off
    /// the queue: whatever comes meanwhile waits in the queue, behind them.
    writing: bool,
    /// The socket was full: the writer thread writes everything until the
    /// queue is empty, and flushing threads leave their frames to it (taking
    /// turns at a full socket cost a wake-up per turn).
    backlog: bool,
    /// The engine dropped the connection.
    closed: bool,
    /// A write failed: the connection is dead, nothing more goes out.
    failed: bool,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outgoing> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`Flushes::run`]. The queue is taken off under the lock and written
    /// without it, so others can queue more meanwhile; a thread that finds
    /// another writing leaves its frames to it.
    fn flush(&self) {
        let mut out = self.lock();
        // Whether the writer thread must take over: the socket was full.
        let mut hand_over = false;
        while !(out.failed || out.writing || out.backlog || out.queue.is_empty()) {
            let mut taken = out.take();
            drop(out);
            let result = send_queued(&self.stream, &taken, libc::MSG_DONTWAIT);
            out = self.lock();
            out.writing = false;
            match result {
                Ok(n) => taken.consume(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    // The reader notices the dead socket and reports it lost.
                    out.fail();
                    let _ = self.stream.shutdown(Shutdown::Both);
                    break;
                }
            }
            if !taken.queue.is_empty() {
                // What is left goes ahead of what came meanwhile.
                let later = std::mem::take(&mut out.queue);
                out.queue = taken.queue;
                out.sent = taken.sent;
                out.queue.extend(later);
                out.backlog = true;
                hand_over = true;
                break;
            }
        }
        if hand_over || out.closed {
            self.wake.notify_one();
        }
    }
}

impl Outgoing {
    /// Drops the `n` bytes at the front of the queue, written.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front() else {
                return;
            };
            let left = front.len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            self.queue.pop_front();
        }
    }

    /// Takes the queue off to write it; `writing` holds back other writers.
    fn take(&mut self) -> Outgoing {
        self.writing = true;
        Outgoing {
            queue: std::mem::take(&mut self.queue),
            sent: std::mem::take(&mut self.sent),
            writing: false,
            backlog: false,
            closed: false,
            failed: false,
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.queue.clear();
        self.sent = 0;
    }
}

/// One `sendmsg` of as much of the queue as it takes: the bytes written.
fn send_queued(stream: &TcpStream, out: &Outgoing, flags: libc::c_int) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); IOVECS];
    let mut used = 0;
    for (i, piece) in out.queue.iter().take(IOVECS).enumerate() {
        slices[i] = IoSlice::new(if i == 0 { &piece[out.sent..] } else { piece });
        used += 1;
    }
    socket2::SockRef::from(stream)
        .send_vectored_with_flags(&slices[..used], flags | libc::MSG_NOSIGNAL)
}

/// Per-peer switches the engine sets and the dialer reads.
pub struct PeerLink {
    pub node_id: NodeId,
    pub address: SocketAddr,
    /// The engine wants this connection.
    pub wanted: AtomicBool,
    /// A connection is up (the dialer waits while it is).
    pub connected: AtomicBool,
}

pub struct Transport {
    pub resource: String,
    pub node_id: NodeId,
    pub address: SocketAddr,
    pub peers: Vec<Arc<PeerLink>>,
    pub stop: Arc<AtomicBool>,
    pub events: Events,
}

fn log(resource: &str, what: impl std::fmt::Display) {
    eprintln!("tandemd: {resource}: {what}");
}

fn preamble(node_id: NodeId, resource: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + resource.len());
    out.extend_from_slice(PREAMBLE_MAGIC);
    out.push(PREAMBLE_VERSION);
    out.push(node_id);
    out.extend_from_slice(&(resource.len() as u16).to_be_bytes());
    out.extend_from_slice(resource.as_bytes());
    out
}

/// Reads the peer's preamble: its node id, or why not.
fn read_preamble(stream: &mut TcpStream, resource: &str) -> Result<NodeId, String> {
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("no preamble ({e})"))?;
    if &head[..8] != PREAMBLE_MAGIC {
        return Err("garbage instead of a tandem preamble".into());
    }
    if head[8] != PREAMBLE_VERSION {
        return Err(format!(
            "preamble version {} (we speak {PREAMBLE_VERSION})",
            head[8]
        ));
    }
    let len = usize::from(u16::from_be_bytes([head[10], head[11]]));
    if len > 255 {
        return Err(format!("a resource name of {len} bytes"));
    }
    let mut name = vec![0u8; len];
    stream
        .read_exact(&mut name)
        .map_err(|e| format!("truncated preamble ({e})"))?;
    if name != resource.as_bytes() {
        return Err(format!(
            "wrong resource '{}' (this is '{resource}')",
            String::from_utf8_lossy(&name)
        ));
    }
    Ok(head[9])
}

fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    // A peer that vanishes without a FIN (a cut network) is noticed in seconds.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    let _ = sock.set_tcp_keepalive(&keepalive);
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(5)));
}

impl Transport {
    /// Starts the listener (if any peer has a lower node id) and the dialers.
    /// Returns the listener's thread: it closes the listening socket within
    /// 50 ms of `stop`, and `down` waits for that, so that an `up` right after
    /// can listen on the same address.
    pub fn start(self: Arc<Self>) -> io::Result<Option<thread::JoinHandle<()>>> {
        let mut listening = None;
        if self.peers.iter().any(|p| p.node_id < self.node_id) {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(self.address),
                socket2::Type::STREAM,
                None,
            )?;
            socket.set_reuse_address(true)?;
            socket.bind(&self.address.into())?;
            socket.listen(16)?;
            let listener: TcpListener = socket.into();
            listener.set_nonblocking(true)?;
            let me = self.clone();
            listening = Some(
                thread::Builder::new()
                    .name(format!("listen-{}", self.resource))
                    .spawn(move || me.listen(listener))?,
            );
        }
        for peer in self.peers.iter().filter(|p| p.node_id > self.node_id) {
            let me = self.clone();
            let peer = peer.clone();
            thread::Builder::new()
                .name(format!("dial-{}-{}", self.resource, peer.node_id))
                .spawn(move || me.dial(peer))?;
        }
        Ok(listening)
    }

    fn listen(&self, listener: TcpListener) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    match read_preamble(&mut stream, &self.resource) {
                        Ok(id) => match self
                            .peers
                            .iter()
                            .find(|p| p.node_id == id && id < self.node_id)
                        {
                            Some(peer) => {
                                if stream
                                    .write_all(&preamble(self.node_id, &self.resource))
                                    .is_ok()
                                {
                                    self.established(peer.clone(), stream);
                                }
                            }
                            None => log(
                                &self.resource,
                                format!("dropping connection from {from}: unknown node id {id}"),
                            ),
                        },
                        Err(why) => log(
                            &self.resource,
                            format!("dropping connection from {from}: {why}"),
                        ),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    log(&self.resource, format!("accept failed: {e}"));
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn dial(&self, peer: Arc<PeerLink>) {
        while !self.stop.load(Ordering::Relaxed) {
            if !peer.wanted.load(Ordering::Relaxed) || peer.connected.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            match self.try_dial(&peer) {
                Ok(stream) => self.established(peer.clone(), stream),
                Err(_) => thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    fn try_dial(&self, peer: &PeerLink) -> io::Result<TcpStream> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(peer.address),
            socket2::Type::STREAM,
            None,
        )?;
        // Leave from our own address, so the peer (and a lab partition rule)
        // sees which node this is.
        let mut local = self.address;
        local.set_port(0);
        socket.bind(&local.into())?;
        socket.connect_timeout(&peer.address.into(), Duration::from_secs(1))?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(&preamble(self.node_id, &self.resource))?;
        match read_preamble(&mut stream, &self.resource) {
            Ok(id) if id == peer.node_id => Ok(stream),
            Ok(id) => Err(io::Error::other(format!(
                "node {id} answered for node {}",
                peer.node_id
            ))),
            Err(why) => Err(io::Error::other(why)),
        }
    }

    /// Hands a connection to the engine and starts its reader and writer.
    fn established(&self, peer: Arc<PeerLink>, stream: TcpStream) {
        tune(&stream);
        let _ = stream.set_read_timeout(None);
        let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox {
            state: Mutex::new(Outgoing {
                queue: VecDeque::new(),
                sent: 0,
                writing: false,
                backlog: false,
                closed: false,
                failed: false,
            }),
            wake: Condvar::new(),
            stream: match stream.try_clone() {
                Ok(s) => s,
                Err(_) => return,
            },
        });
        let (Ok(read_half), Ok(write_half), Ok(control)) =
            (stream.try_clone(), stream.try_clone(), stream.try_clone())
        else {
            return;
        };
        peer.connected.store(true, Ordering::Relaxed);
        let _ = self.events.send(HostMsg::Connected {
            peer: peer.node_id,
            connection: Connection {
                id,
                outbox: outbox.clone(),
                stream: control,
            },
        });
        let events = self.events.clone();
        let resource = self.resource.clone();
        let node_id = peer.node_id;
        let _ = thread::Builder::new()
            .name(format!("send-{resource}-{node_id}"))
            .spawn(move || write_loop(write_half, &outbox));
        let _ = thread::Builder::new()
            .name(format!("recv-{resource}-{node_id}"))
            .spawn(move || {
                read_loop(read_half, &resource, node_id, id, &events);
                peer.connected.store(false, Ordering::Relaxed);
                let _ = events.send(HostMsg::Lost {
                    peer: node_id,
                    connection: id,
                });
            });
    }
}

/// The writer thread: writes what the engine queued, blocking as long
/// as the socket wants, until the engine drops the connection or a write fails.
fn write_loop(stream: TcpStream, outbox: &Outbox) {
    let mut out = outbox.lock();
    loop {
        if out.failed || (out.queue.is_empty() && out.closed && !out.writing) {
            break;
        }
        if out.queue.is_empty() || out.writing {
            out = outbox.wake.wait(out).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        // Write without the lock, so the engine can queue more meanwhile.
        let mut taken = out.take();
        drop(out);
        let mut result = Ok(());
        while !taken.queue.is_empty() {
            match send_queued(&stream, &taken, 0) {
                Ok(0) => result = Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => taken.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                break;
            }
        }
        out = outbox.lock();
        out.writing = false;
        if out.queue.is_empty() {
            out.backlog = false;
        }
        if result.is_err() {
            out.fail();
        }
    }
    drop(out);
    let _ = stream.shutdown(Shutdown::Both);
}

/// Block data out of the receive buffer: one copy, aligned so the disk's
/// direct I/O writes it as it is.
fn aligned_copy(blocks: &[u8]) -> Bytes {
    match blockdev::AlignedBuf::copy_of(blocks, replication::BLOCK_SIZE) {
        Ok(copy) => Bytes::from_owner(copy),
        Err(_) => Bytes::copy_from_slice(blocks),
    }
}

/// A peer that breaks the protocol is dropped, with a log line saying how.
fn protocol_error(resource: &str, peer: NodeId, stream: &TcpStream, e: DecodeError) {
    log(
        resource,
        format!("protocol error from node {peer}: {e}; dropping the connection"),
    );
    let _ = stream.shutdown(Shutdown::Both);
}

/// The reader thread: frames to the engine. Reads go straight into one
/// large buffer and frames are decoded where they lie; the tail of a partial
/// frame moves to the front only when the space behind it runs short.
fn read_loop(
    mut stream: TcpStream,
    resource: &str,
    peer: NodeId,
    connection: u64,
    events: &Events,
) {
    let mut buffer = vec![0u8; READ_BUFFER];
    let (mut start, mut end) = (0, 0);
    loop {
        // Hand over every whole frame in the buffer.
        let missing = loop {
            match decode_with(&buffer[start..end], aligned_copy) {
                Ok((message, n)) => {
                    start += n;
                    if events
                        .send(HostMsg::Frame {
                            peer,
                            connection,
                            message,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(DecodeError::Incomplete(missing)) => break missing,
                Err(e) => return protocol_error(resource, peer, &stream, e),
            }
        };
        // A large frame with block data whose head is here: its block data
        // goes from the socket straight into aligned memory, not through the
        // buffer and a copy (everything after `start` belongs to this frame).
        match bulk_split(&buffer[start..end]) {
            Some((split, total)) if total - split >= READ_APART && end - start >= split => {
                let head = start..start + split;
                let have = &buffer[start + split..end];
                let message = match AlignedBuf::read_after(
                    have,
                    stream.as_fd(),
                    total - split,
                    replication::BLOCK_SIZE,
                ) {
                    Ok(blocks) => decode_apart(&buffer[head], Bytes::from_owner(blocks)),
                    Err(_) => return,
                };
                let message = match message {
                    Ok(message) => message,
                    Err(e) => return protocol_error(resource, peer, &stream, e),
                };
                let frame = HostMsg::Frame {
                    peer,
                    connection,
                    message,
                };
                if events.send(frame).is_err() {
                    return;
                }
                (start, end) = (0, 0);
                continue;
            }
            _ => {}
        }
        if start == end {
            (start, end) = (0, 0);
        } else if buffer.len() - end < missing.max(READ_AT_LEAST) {
            // What is left is less than one frame (decode refuses larger
            // ones), so the buffer has room for the rest of it after this.
            buffer.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let room = end..buffer.len().min(end + READ_AT_MOST);
        match stream.read(&mut buffer[room]) {
            Ok(0) => return,
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
