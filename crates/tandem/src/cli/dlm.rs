//! `tandem dlm`: the lock manager from the shell. `lock` takes a named lock in
//! a lock domain, holds it and releases it, so lock behaviour across nodes can
//! be tried by hand and by the end-to-end tests; `locks` lists what this node's
//! lock manager knows.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use node::control::{self, Request, Response};

#[derive(Subcommand)]
pub enum DlmCommand {
    /// Take a lock, hold it, release it. Prints `granted MODE` when granted
    /// (with the lock value block), `blocking: ...` when another node waits,
    /// and `released` at the end.
    Lock {
        /// The lock domain (OCFS2 uses the volume's UUID).
        domain: String,
        /// The lock resource's name (at most 32 bytes).
        name: String,
        /// NL, PR or EX.
        mode: String,
        /// Hold it this many seconds (default: until standard input closes).
        #[arg(long, value_name = "SECONDS")]
        hold: Option<f64>,
        /// Release at once when another node waits for the lock.
        #[arg(long)]
        release_on_blocking: bool,
        /// From EX: the value block to leave with the lock (text, at most 64 bytes).
        #[arg(long, value_name = "TEXT")]
        lvb: Option<String>,
    },
    /// The lock resources this node masters or holds, with holders and modes.
    Locks,
}

pub fn main(command: DlmCommand) -> ExitCode {
    let result = match command {
        DlmCommand::Lock {
            domain,
            name,
            mode,
            hold,
            release_on_blocking,
            lvb,
        } => lock(&domain, &name, &mode, hold, release_on_blocking, lvb),
        DlmCommand::Locks => locks(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem dlm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_request(stream: &UnixStream, request: &Request) -> Result<(), String> {
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    (&mut &*stream)
        .write_all(line.as_bytes())
        .map_err(|e| format!("talking to the daemon: {e}"))
}

/// The value block as text: up to its first NUL.
fn lvb_text(lvb: &[u8]) -> String {
    let end = lvb.iter().position(|&b| b == 0).unwrap_or(lvb.len());
    String::from_utf8_lossy(&lvb[..end]).into_owned()
}

fn lock(
    domain: &str,
    name: &str,
    mode: &str,
    hold: Option<f64>,
    release_on_blocking: bool,
    lvb: Option<String>,
) -> Result<(), String> {
    if let Some(text) = &lvb {
        if text.len() > cluster::dlm::LVB_LEN {
            return Err(format!(
                "a lock value block holds at most {} bytes",
                cluster::dlm::LVB_LEN
            ));
        }
    }
    let socket = control::socket_path();
    let stream = UnixStream::connect(&socket)
        .map_err(|e| format!("no tandem daemon answers on {}: {e}", socket.display()))?;
    let asked = Instant::now();
    write_request(
        &stream,
        &Request::Lock {
            domain: domain.to_string(),
            name: name.to_string(),
            mode: mode.to_string(),
        },
    )?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    // Wait for the grant, however long it takes (run under `timeout` to bound it).
    reader
        .read_line(&mut line)
        .map_err(|e| format!("waiting for the lock: {e}"))?;
    match serde_json::from_str::<Response>(&line) {
        Ok(Response::Granted { mode, lvb }) => {
            println!(
                "granted {mode} on {domain}/{name} after {:.3} s; lvb \"{}\"",
                asked.elapsed().as_secs_f64(),
                lvb_text(&lvb)
            );
        }
        Ok(Response::Error { message, .. }) => return Err(message),
        _ => {
            return Err(format!(
                "unexpected answer from the daemon: {}",
                line.trim()
            ))
        }
    }
    let _ = std::io::stdout().flush();

    // Hold it: until the time is up, or standard input closes.
    let stdin_closed = Arc::new(AtomicBool::new(false));
    if hold.is_none() {
        let flag = stdin_closed.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            flag.store(true, Ordering::SeqCst);
        });
    }
    let until = hold.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    loop {
        if until.is_some_and(|t| Instant::now() >= t) || stdin_closed.load(Ordering::SeqCst) {
            break;
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("the daemon closed the connection".into()),
            Ok(_) => match serde_json::from_str::<Response>(&line) {
                Ok(Response::Blocking { wanted }) => {
                    println!("blocking: another node waits for {wanted}");
                    let _ = std::io::stdout().flush();
                    if release_on_blocking {
                        break;
                    }
                }
                Ok(Response::Error { message, .. }) => return Err(format!("lock lost: {message}")),
                _ => {
                    return Err(format!(
                        "unexpected message from the daemon: {}",
                        line.trim()
                    ))
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    write_request(
        &stream,
        &Request::Release {
            lvb: lvb.map(String::into_bytes),
        },
    )?;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("releasing the lock: {e}"))?;
        match serde_json::from_str::<Response>(&line) {
            Ok(Response::Ok) => break,
            // A notice that crossed our release.
            Ok(Response::Blocking { .. }) => continue,
            Ok(Response::Error { message, .. }) => return Err(message),
            _ => {
                return Err(format!(
                    "unexpected answer from the daemon: {}",
                    line.trim()
                ))
            }
        }
    }
    println!("released {domain}/{name}");
    Ok(())
}

fn locks() -> Result<(), String> {
    let status = match crate::cli::o2cb::status()? {
        Some(s) => s,
        None => return Err("no cluster is registered on this node".into()),
    };
    for d in &status.domains {
        for l in &d.locks {
            let list = |v: &[(u8, String)]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.iter()
                        .map(|(n, m)| format!("{n}:{m}"))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            };
            println!(
                "{} {} master={} granted={} waiting={}",
                d.domain,
                l.name,
                l.master,
                list(&l.holders),
                list(&l.waiting)
            );
        }
    }
    Ok(())
}
