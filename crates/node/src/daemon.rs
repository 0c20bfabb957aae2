//! The daemon's main loop: the control socket and the table of resources.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replication::Admin;

use crate::control::{Request, Response};
use crate::host::ResourceHost;

/// drbdadm's exit code for a failed state change.
const EXIT_STATE_CHANGE: i32 = 11;
/// drbdadm's exit code for an unknown resource / a config problem.
const EXIT_NO_RESOURCE: i32 = 10;

type Resources = Arc<Mutex<HashMap<String, ResourceHost>>>;

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
    let resources: Resources = Arc::new(Mutex::new(HashMap::new()));
    stop_on_signals(resources.clone(), socket.to_owned())?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let resources = resources.clone();
        let shutdown = std::thread::spawn(move || serve(stream, &resources))
            .join()
            .unwrap_or(false);
        if shutdown {
            break;
        }
    }
    let _ = std::fs::remove_file(socket);
    eprintln!("tandemd: stopped");
    Ok(())
}

/// SIGTERM/SIGINT (the machine shutting down, `tandem lab down`): take every
/// resource down, in use or not, so no loop device or mount is left behind.
fn stop_on_signals(resources: Resources, socket: std::path::PathBuf) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("tandemd: signal {signal}: taking every resource down");
                if let Ok(mut table) = resources.lock() {
                    for (name, host) in table.drain() {
                        host.down();
                        eprintln!("tandemd: {name}: down");
                    }
                }
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            }
        })?;
    Ok(())
}

/// Answers one request; true when the daemon should stop.
fn serve(stream: UnixStream, resources: &Resources) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return false;
    }
    let (response, stop) = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(request, resources),
        Err(e) => (
            Response::Error {
                message: format!("bad request: {e}"),
                code: 20,
            },
            false,
        ),
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = (&stream).write_all(text.as_bytes());
    }
    stop
}

fn error(message: String, code: i32) -> Response {
    Response::Error { message, code }
}

fn handle(request: Request, resources: &Resources) -> (Response, bool) {
    let Ok(mut table) = resources.lock() else {
        return (error("internal error".into(), 20), false);
    };
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
                Response::Ok
            } else {
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
        } => match table.get(&resource) {
            None => error(
                format!("{resource}: not up (drbdadm up {resource})"),
                EXIT_NO_RESOURCE,
            ),
            Some(host) => {
                let mut response = Response::Ok;
                for peer in host.spec.peers.iter().map(|p| p.node_id) {
                    if let r @ Response::Error { .. } = admin(
                        &table,
                        &resource,
                        Admin::Connect {
                            peer,
                            discard_my_data,
                        },
                    ) {
                        response = r;
                    }
                }
                response
            }
        },
        Request::Disconnect { resource } => {
            let peers: Vec<u8> = table
                .get(&resource)
                .map(|h| h.spec.peers.iter().map(|p| p.node_id).collect())
                .unwrap_or_default();
            let mut response = if table.contains_key(&resource) {
                Response::Ok
            } else {
                error(format!("{resource}: not up"), EXIT_NO_RESOURCE)
            };
            for peer in peers {
                if let r @ Response::Error { .. } =
                    admin(&table, &resource, Admin::Disconnect { peer })
                {
                    response = r;
                }
            }
            response
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
            return (Response::Ok, true);
        }
    };
    (response, false)
}
