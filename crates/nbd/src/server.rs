//! The thin shell: a TCP listener, one thread per connection, each moving bytes
//! between its socket and its [`Connection`] and running requests on the
//! export's [`BlockDevice`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use blockdev::BlockDevice;

use crate::conn::{Command, Connection, ExportInfo};
use crate::proto::{errno_of, EINVAL};

/// One export: a name and the device behind it.
#[derive(Clone)]
pub struct Export {
    /// Name clients ask for.
    pub name: String,
    /// Shown by `nbdinfo --list`.
    pub description: String,
    /// The device.
    pub device: Arc<dyn BlockDevice>,
    /// Refuse writes.
    pub read_only: bool,
}

impl Export {
    fn info(&self) -> ExportInfo {
        ExportInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            size: self.device.size(),
            read_only: self.read_only,
        }
    }
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// A client must finish negotiating within this time.
    pub negotiation_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 64,
            negotiation_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs one request on the device; for a read the data lands in `buf`.
pub fn execute(device: &dyn BlockDevice, command: &Command, buf: &mut Vec<u8>) -> Result<(), u32> {
    let r = match command {
        Command::Read { offset, len } => {
            buf.clear();
            buf.resize(*len as usize, 0);
            device.read_at(buf, *offset)
        }
        Command::Write { offset, data, fua } => device.write_at(data, *offset, *fua),
        Command::Flush => device.flush(),
        Command::Trim { offset, len, fua } | Command::WriteZeroes { offset, len, fua } => device
            .discard(*offset, u64::from(*len))
            .and_then(|()| if *fua { device.flush() } else { Ok(()) }),
        Command::Disconnect => device.flush(),
    };
    r.map_err(|e| errno_of(&e))
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, TcpStream>>,
    protocol_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn note(&self, what: String) {
        let mut errors = self
            .protocol_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if errors.len() >= 100 {
            errors.remove(0);
        }
        errors.push(what);
    }
}

/// Serves one connection until the client leaves or breaks the protocol.
fn serve_connection(
    mut stream: TcpStream,
    exports: &[Export],
    infos: Arc<[ExportInfo]>,
    timeout: Duration,
) -> io::Result<Option<String>> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut conn = Connection::new(infos);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut data = Vec::new();
    let mut negotiating = true;
    loop {
        if conn.has_output() {
            stream.write_all(&conn.take_output())?;
        }
        if conn.is_closed() {
            return Ok(None);
        }
        if negotiating && conn.export().is_some() {
            negotiating = false;
            stream.set_read_timeout(None)?;
        }
        match conn.poll() {
            Ok(Some(request)) => {
                let export = conn.export().and_then(|i| exports.get(i));
                let result = match export {
                    Some(e) => execute(e.device.as_ref(), &request.command, &mut data),
                    None => Err(EINVAL),
                };
                conn.complete(result.map(|()| data.as_slice()));
            }
            Ok(None) => {
                if conn.has_output() || conn.is_closed() {
                    continue;
                }
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Ok(None);
                }
                conn.receive(&chunk[..n]);
            }
            Err(e) => {
                // Send what the connection still has to say (an ACK to
                // NBD_OPT_ABORT, error replies), then drop the client.
                if conn.has_output() {
                    let _ = stream.write_all(&conn.take_output());
                }
                return Ok(Some(e.to_string()));
            }
        }
    }
}

/// A running NBD server. Dropping it stops it.
pub struct NbdServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl NbdServer {
    /// Listens on `addr` (port 0: any free port, see
    /// [`local_addr`](Self::local_addr)) and serves `exports`.
    pub fn bind(
        addr: SocketAddr,
        exports: Vec<Export>,
        options: ServerOptions,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let exports: Arc<[Export]> = exports.into();
        let infos: Arc<[ExportInfo]> = exports.iter().map(Export::info).collect();
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("nbd-accept".to_owned())
            .spawn(move || accept_loop(listener, exports, infos, s, options))?;
        Ok(NbdServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Why clients were dropped (the last 100 protocol errors).
    pub fn protocol_errors(&self) -> Vec<String> {
        self.shared
            .protocol_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops accepting, closes every connection and waits for their threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    exports: Arc<[Export]>,
    infos: Arc<[ExportInfo]>,
    shared: Arc<Shared>,
    options: ServerOptions,
) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        workers.retain(|w| !w.is_finished());
        if workers.len() >= options.max_connections {
            shared.note("too many connections: refused one".to_owned());
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            shared
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, clone);
        }
        let (exports, infos, s) = (exports.clone(), infos.clone(), shared.clone());
        let timeout = options.negotiation_timeout;
        let spawned = thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                let peer = stream.peer_addr().ok();
                match serve_connection(stream, &exports, infos, timeout) {
                    Ok(None) => {}
                    Ok(Some(why)) => s.note(format!("{peer:?}: {why}")),
                    Err(e) => {
                        if !s.stop.load(Ordering::SeqCst) {
                            s.note(format!("{peer:?}: {e}"))
                        }
                    }
                }
                s.streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        match spawned {
            Ok(w) => workers.push(w),
            Err(_) => {
                if let Some(s) = shared
                    .streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
                {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
    for s in shared
        .streams
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
    {
        let _ = s.shutdown(Shutdown::Both);
    }
    for w in workers {
        let _ = w.join();
    }
}
