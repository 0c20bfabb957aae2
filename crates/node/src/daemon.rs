//! The daemon's main loop: the control socket and the table of resources.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use replication::{Admin, VerifyAlg};

use crate::cluster_host::{ClusterHost, LockEvent};
use crate::control::{Request, Response};
use crate::host::ResourceHost;
use crate::spec::ResourceSpec;

/// drbdadm's exit code for a failed state change.
const EXIT_STATE_CHANGE: i32 = 11;
/// drbdadm's exit code for an unknown resource / a config problem.
const EXIT_NO_RESOURCE: i32 = 10;

type Resources = Arc<Mutex<HashMap<String, ResourceHost>>>;
type ClusterSlot = Arc<Mutex<Option<ClusterHost>>>;

/// What the daemon hosts: resources, and the cluster stack once registered.
#[derive(Clone)]
struct State {
    resources: Resources,
    cluster: ClusterSlot,
}

/// NBD's registered port, the default for `tandem nbd export`.
const NBD_PORT: u16 = 10809;

/// o2cb's exit status for a failed cluster operation.
const EXIT_CLUSTER: i32 = 1;

/// Runs the daemon on `socket` until a `Shutdown` request.
pub fn run(socket: &Path) -> std::io::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if UnixStream::connect(socket).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a daemon already answers on {}", socket.display()),
        ));
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    eprintln!(
        "tandemd: listening on {} (pid {})",
        socket.display(),
        std::process::id()
    );
    let state = State {
        resources: Arc::new(Mutex::new(HashMap::new())),
        cluster: Arc::new(Mutex::new(None)),
    };
    stop_on_signals(state.clone(), socket.to_owned())?;
    // One thread per connection: a lock holder keeps its connection open for
    // as long as it holds the lock.
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let state = state.clone();
        let socket = socket.to_owned();
        std::thread::spawn(move || {
            if serve(stream, &state) {
                let _ = std::fs::remove_file(&socket);
                eprintln!("tandemd: stopped");
                std::process::exit(0);
            }
        });
    }
    Ok(())
}

/// SIGTERM/SIGINT (the machine shutting down, `tandem lab down`): take every
/// resource down, in use or not, so no loop device or mount is left behind.
fn stop_on_signals(state: State, socket: std::path::PathBuf) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("tandemd: signal {signal}: taking every resource down");
                if let Some(cluster) = locked(&state.cluster).take() {
                    cluster.unregister();
                }
                for (name, host) in locked(&state.resources).drain() {
                    host.down();
                    eprintln!("tandemd: {name}: down");
                }
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            }
        })?;
    Ok(())
}

/// Answers one request (or serves one lock holder); true when the daemon
/// should stop.
fn serve(stream: UnixStream, state: &State) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return false;
    }
    let (response, stop) = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Lock { domain, name, mode }) => {
            serve_lock(&stream, &state.cluster, &domain, &name, &mode);
            return false;
        }
        Ok(request) => match handle_cluster(&request, &state.cluster) {
            Some(response) => (response, false),
            None => handle(request, state),
        },
        Err(e) => (
            Response::Error {
                message: format!("bad request: {e}"),
                code: 20,
            },
            false,
        ),
    };
    send(&stream, &response);
    stop
}

fn send(stream: &UnixStream, response: &Response) -> bool {
    match serde_json::to_string(response) {
        Ok(mut text) => {
            text.push('\n');
            (&*stream).write_all(text.as_bytes()).is_ok()
        }
        Err(_) => false,
    }
}

/// The cluster stack's requests; None for the others.
fn handle_cluster(request: &Request, cluster: &ClusterSlot) -> Option<Response> {
    let mut slot = locked(cluster);
    let not_registered = |name: &str| {
        error(
            format!("cluster '{name}' is not registered (o2cb register-cluster {name})"),
            EXIT_CLUSTER,
        )
    };
    let matching = |slot: &Option<ClusterHost>, name: &str| {
        slot.as_ref().filter(|h| h.spec().cluster == name).is_some()
    };
    Some(match request {
        Request::ClusterRegister(spec) => match slot.as_ref() {
            Some(host) if host.spec() == spec => Response::Ok,
            Some(host) => error(
                format!(
                    "cluster '{}' is registered already; unregister it first",
                    host.spec().cluster
                ),
                EXIT_CLUSTER,
            ),
            None => match ClusterHost::register(spec.clone()) {
                Ok(host) => {
                    *slot = Some(host);
                    Response::Ok
                }
                Err(e) => error(e, EXIT_CLUSTER),
            },
        },
        Request::ClusterUnregister { cluster } => {
            if matching(&slot, cluster) {
                if let Some(host) = slot.take() {
                    host.unregister();
                }
            }
            Response::Ok
        }
        Request::HeartbeatStart { cluster, regions } => match slot.as_ref() {
            Some(host) if host.spec().cluster == *cluster => {
                match host.start_heartbeat(regions.iter().map(Into::into).collect()) {
                    Ok(()) => Response::Ok,
                    Err(e) => error(e, EXIT_CLUSTER),
                }
            }
            _ => not_registered(cluster),
        },
        Request::HeartbeatStop { cluster } => match slot.as_ref() {
            Some(host) if host.spec().cluster == *cluster => match host.stop_heartbeat() {
                Ok(()) => Response::Ok,
                Err(e) => error(e, EXIT_CLUSTER),
            },
            _ => not_registered(cluster),
        },
        Request::ClusterStatus => match slot.as_ref() {
            Some(host) => match host.status() {
                Ok(status) => Response::Cluster(status),
                Err(e) => error(e, EXIT_CLUSTER),
            },
            None => error("no cluster is registered".into(), EXIT_CLUSTER),
        },
        Request::Release { .. } => error("no lock is held on this connection".into(), 20),
        _ => return None,
    })
}

/// Serves one lock holder: passes on the grant and blocking notices as they
/// come, and releases the lock when the client asks or goes away.
fn serve_lock(stream: &UnixStream, cluster: &ClusterSlot, domain: &str, name: &str, mode: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);
    let client = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let fail = |message: String| {
        send(stream, &error(message, EXIT_CLUSTER));
    };
    let Some(mode) = parse_mode(mode) else {
        return fail(format!("unknown lock mode '{mode}' (NL, PR or EX)"));
    };
    let lock_name = match cluster::dlm::LockName::new(name.as_bytes()) {
        Ok(n) => n,
        Err(e) => return fail(e.to_string()),
    };
    /// What this connection's loop waits for: the lock manager or the client.
    enum Input {
        Lock(LockEvent),
        Client(String),
        ClientGone,
    }
    let (tx, rx) = std::sync::mpsc::channel::<Input>();
    // The client's lines, read on a thread of their own so that a grant is
    // passed on the moment it comes.
    let Ok(client_side) = stream.try_clone() else {
        return;
    };
    let lines = tx.clone();
    std::thread::spawn(move || {
        let _ = client_side.set_read_timeout(None);
        for line in BufReader::new(client_side).lines() {
            match line {
                Ok(l) => {
                    if lines.send(Input::Client(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = lines.send(Input::ClientGone);
    });
    let asked = {
        let slot = locked(cluster);
        match slot.as_ref() {
            Some(host) => host.lock(
                domain,
                lock_name.clone(),
                mode,
                client,
                Box::new(move |event| {
                    let _ = tx.send(Input::Lock(event));
                }),
            ),
            None => Err("no cluster is registered".to_string()),
        }
    };
    if let Err(e) = asked {
        return fail(e);
    }
    let release = |lvb: Option<[u8; cluster::dlm::LVB_LEN]>| -> Result<(), String> {
        let slot = locked(cluster);
        match slot.as_ref() {
            Some(host) => host.release(domain, lock_name.clone(), client, lvb),
            None => Ok(()),
        }
    };
    while let Ok(input) = rx.recv() {
        match input {
            Input::Lock(LockEvent::Granted { mode, lvb }) => {
                let granted = Response::Granted {
                    mode: mode.to_string(),
                    lvb: lvb.to_vec(),
                };
                if !send(stream, &granted) {
                    let _ = release(None);
                    return;
                }
            }
            Input::Lock(LockEvent::Blocking { wanted }) => {
                let _ = send(
                    stream,
                    &Response::Blocking {
                        wanted: wanted.to_string(),
                    },
                );
            }
            Input::Lock(LockEvent::Lost(why)) => return fail(why),
            // The client is gone: its lock goes with it.
            Input::ClientGone => {
                let _ = release(None);
                return;
            }
            Input::Client(line) => {
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Release { lvb }) => {
                        let lvb = lvb.map(|v| {
                            let mut block = [0u8; cluster::dlm::LVB_LEN];
                            let n = v.len().min(block.len());
                            block[..n].copy_from_slice(&v[..n]);
                            block
                        });
                        match release(lvb) {
                            Ok(()) => Response::Ok,
                            Err(e) => error(e, EXIT_CLUSTER),
                        }
                    }
                    _ => error("expected Release on a lock connection".into(), 20),
                };
                send(stream, &response);
                if matches!(response, Response::Ok) {
                    return;
                }
            }
        }
    }
}

/// `up`: starts the resource and adds it to the table.
fn start(table: &mut HashMap<String, ResourceHost>, spec: ResourceSpec) -> Response {
    let name = spec.name.clone();
    match ResourceHost::start(spec) {
        Ok(host) => {
            eprintln!("tandemd: {name}: up");
            table.insert(name, host);
            Response::Ok
        }
        Err(e) => error(format!("{name}: {e}"), EXIT_NO_RESOURCE),
    }
}

/// Runs one administrative command per peer of `resource`; the last refusal,
/// if any.
fn every_peer(
    table: &HashMap<String, ResourceHost>,
    resource: &str,
    command: impl Fn(u8) -> Admin,
) -> Response {
    let Some(host) = table.get(resource) else {
        return error(
            format!("{resource}: not up (drbdadm up {resource})"),
            EXIT_NO_RESOURCE,
        );
    };
    let mut response = Response::Ok;
    for peer in host.spec.peers.iter().map(|p| p.node_id) {
        if let Err(e) = host.admin(command(peer)) {
            response = error(e, EXIT_STATE_CHANGE);
        }
    }
    response
}

fn parse_mode(text: &str) -> Option<cluster::dlm::Mode> {
    match text.to_ascii_uppercase().as_str() {
        "NL" => Some(cluster::dlm::Mode::Nl),
        "PR" => Some(cluster::dlm::Mode::Pr),
        "EX" => Some(cluster::dlm::Mode::Ex),
        _ => None,
    }
}

/// `mutex`, locked even if a request panicked while holding it: one bad
/// request must not fail every later one (the resource table and the cluster
/// slot change by whole entries, so what a panic left is consistent).
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(message: String, code: i32) -> Response {
    Response::Error { message, code }
}

fn handle(request: Request, state: &State) -> (Response, bool) {
    let mut table = locked(&state.resources);
    let admin =
        |table: &HashMap<String, ResourceHost>, name: &str, command: Admin| match table.get(name) {
            None => error(
                format!("{name}: not up (drbdadm up {name})"),
                EXIT_NO_RESOURCE,
            ),
            Some(host) => match host.admin(command) {
                Ok(()) => Response::Ok,
                Err(e) => error(e, EXIT_STATE_CHANGE),
            },
        };
    let response = match request {
        Request::Ping => Response::Ok,
        Request::Up(spec) => {
            if table.contains_key(&spec.name) {
                // `adjust` of a resource that is up: what can change while it
                // runs (the resync rate, on-io-error) takes effect.
                admin(&table, &spec.name, crate::host::options_of(&spec))
            } else {
                start(&mut table, spec)
            }
        }
        Request::Down { resource } => match table.get(&resource).map(|h| h.check_not_in_use()) {
            None => Response::Ok,
            Some(Err(e)) => error(e, EXIT_STATE_CHANGE),
            Some(Ok(())) => {
                if let Some(host) = table.remove(&resource) {
                    host.down();
                }
                eprintln!("tandemd: {resource}: down");
                Response::Ok
            }
        },
        Request::Primary { resource, force } => admin(&table, &resource, Admin::Primary { force }),
        Request::Secondary { resource } => match table.get(&resource) {
            Some(host) => match host.check_not_in_use() {
                Err(e) => error(e, EXIT_STATE_CHANGE),
                Ok(()) => admin(&table, &resource, Admin::Secondary),
            },
            None => admin(&table, &resource, Admin::Secondary),
        },
        Request::Connect {
            resource,
            discard_my_data,
        } => every_peer(&table, &resource, |peer| Admin::Connect {
            peer,
            discard_my_data,
        }),
        Request::Detach { resource } => admin(&table, &resource, Admin::Detach),
        Request::Attach(spec) => match table.get(&spec.name) {
            Some(host) => match host.attach() {
                Ok(()) => Response::Ok,
                Err(e) => error(e, EXIT_STATE_CHANGE),
            },
            None => start(&mut table, spec),
        },
        Request::Verify { resource, alg } => match VerifyAlg::from_name(&alg) {
            Err(e) => error(format!("{resource}: {e}"), EXIT_NO_RESOURCE),
            Ok(alg) => every_peer(&table, &resource, |peer| Admin::Verify { peer, alg }),
        },
        Request::Disconnect { resource } => {
            every_peer(&table, &resource, |peer| Admin::Disconnect { peer })
        }
        Request::Invalidate { resource } => admin(&table, &resource, Admin::Invalidate),
        Request::Outdate { resource } => admin(&table, &resource, Admin::Outdate),
        Request::PauseSync { resource, paused } => {
            every_peer(&table, &resource, |peer| Admin::PauseSync { peer, paused })
        }
        Request::NewCurrentUuid {
            resource,
            clear_bitmap,
        } => admin(&table, &resource, Admin::NewCurrentUuid { clear_bitmap }),
        Request::InvalidateRemote { resource } => {
            every_peer(&table, &resource, |peer| Admin::InvalidateRemote { peer })
        }
        Request::Status { resource } => {
            let mut all = Vec::new();
            let mut names: Vec<&String> = table.keys().collect();
            names.sort();
            for name in names {
                if resource.as_ref().is_some_and(|r| r != name) {
                    continue;
                }
                match table[name].status() {
                    Ok(s) => all.push(s),
                    Err(e) => return (error(e, 20), false),
                }
            }
            if let Some(r) = &resource {
                if all.is_empty() {
                    return (
                        error(format!("{r}: No such resource"), EXIT_NO_RESOURCE),
                        false,
                    );
                }
            }
            Response::Status(all)
        }
        Request::Shutdown => {
            if let Some(Err(e)) = table
                .values()
                .map(|h| h.check_not_in_use())
                .find(|r| r.is_err())
            {
                return (error(e, EXIT_STATE_CHANGE), false);
            }
            for (name, host) in table.drain() {
                host.down();
                eprintln!("tandemd: {name}: down");
            }
            if let Some(cluster) = locked(&state.cluster).take() {
                cluster.unregister();
            }
            return (Response::Ok, true);
        }
        Request::NbdExport { resource, listen } => match table.get_mut(&resource) {
            None => error(
                format!("{resource}: not up (drbdadm up {resource})"),
                EXIT_NO_RESOURCE,
            ),
            Some(host) => {
                let listen = listen.unwrap_or_else(|| {
                    let ip = host
                        .spec
                        .address
                        .rsplit_once(':')
                        .map_or("127.0.0.1", |(ip, _)| ip);
                    format!("{ip}:{NBD_PORT}")
                });
                match listen.parse() {
                    Err(_) => error(
                        format!("'{listen}' is not an IP:PORT address"),
                        EXIT_NO_RESOURCE,
                    ),
                    Ok(addr) => match host.export_nbd(addr) {
                        Ok(bound) => Response::Exported {
                            address: bound.to_string(),
                        },
                        Err(e) => error(e, EXIT_STATE_CHANGE),
                    },
                }
            }
        },
        Request::NbdUnexport { resource } => match table.get_mut(&resource) {
            None => Response::Ok,
            Some(host) => {
                host.unexport_nbd();
                Response::Ok
            }
        },
        // Answered by handle_cluster.
        _ => error("internal error: misrouted request".into(), 20),
    };
    (response, false)
}
