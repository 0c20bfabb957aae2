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
//! (when some peer has a lower node id), a reader and a writer per connection. Everything they learn goes to the
//! resource's event channel as [`HostMsg`]s; the engine thread owns the
//! connection table.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use replication::message::{decode, DecodeError};
use replication::NodeId;

use crate::host::HostMsg;

const PREAMBLE_MAGIC: &[u8; 8] = b"TNDMCONN";
const PREAMBLE_VERSION: u8 = 1;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// A live connection, as the engine thread holds it.
pub struct Connection {
    pub id: u64,
    pub writer: Sender<Vec<u8>>,
    pub stream: TcpStream,
}

impl Connection {
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Per-peer switches the engine thread sets and the dialer reads.
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
    pub events: Sender<HostMsg>,
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
    pub fn start(self: Arc<Self>) -> io::Result<()> {
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
            thread::Builder::new()
                .name(format!("listen-{}", self.resource))
                .spawn(move || me.listen(listener))?;
        }
        for peer in self.peers.iter().filter(|p| p.node_id > self.node_id) {
            let me = self.clone();
            let peer = peer.clone();
            thread::Builder::new()
                .name(format!("dial-{}-{}", self.resource, peer.node_id))
                .spawn(move || me.dial(peer))?;
        }
        Ok(())
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

    /// Hands a connection to the engine thread and starts its reader and writer.
    fn established(&self, peer: Arc<PeerLink>, stream: TcpStream) {
        tune(&stream);
        let _ = stream.set_read_timeout(None);
        let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        let (writer, outgoing) = mpsc::channel::<Vec<u8>>();
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
                writer,
                stream: control,
            },
        });
        let events = self.events.clone();
        let resource = self.resource.clone();
        let node_id = peer.node_id;
        let _ = thread::Builder::new()
            .name(format!("send-{resource}-{node_id}"))
            .spawn(move || write_loop(write_half, outgoing));
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

fn write_loop(mut stream: TcpStream, outgoing: Receiver<Vec<u8>>) {
    for frame in outgoing {
        if stream.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn read_loop(
    mut stream: TcpStream,
    resource: &str,
    peer: NodeId,
    connection: u64,
    events: &Sender<HostMsg>,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        // Hand over every whole frame in the buffer.
        let mut used = 0;
        loop {
            match decode(&buffer[used..]) {
                Ok((message, n)) => {
                    used += n;
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
                Err(DecodeError::Incomplete(_)) => break,
                Err(e) => {
                    log(
                        resource,
                        format!("protocol error from node {peer}: {e}; dropping the connection"),
                    );
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        buffer.drain(..used);
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
