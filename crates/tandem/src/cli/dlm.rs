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
    /// Lock round trips: COUNT acquisitions of EX, each released at once, or
    /// with --pingpong held until another node asks (run it on two nodes at
    /// once). Prints the rate and the lock messages this node sent.
    Bench {
        domain: String,
        name: String,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long)]
        pingpong: bool,
    },
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
        DlmCommand::Bench {
            domain,
            name,
            count,
            pingpong,
        } => bench(&domain, &name, count, pingpong),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem dlm: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One lock held through one connection to the daemon.
struct HeldLock {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    domain: String,
    name: String,
}

impl HeldLock {
    /// Asks for the lock and waits, however long it takes, for the grant;
    /// the lock and its value block.
    fn acquire(domain: &str, name: &str, mode: &str) -> Result<(HeldLock, String), String> {
        let socket = control::socket_path();
        let stream = UnixStream::connect(&socket)
            .map_err(|e| format!("no tandem daemon answers on {}: {e}", socket.display()))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut lock = HeldLock {
            stream,
            reader,
            domain: domain.to_string(),
            name: name.to_string(),
        };
        lock.send(&Request::Lock {
            domain: domain.to_string(),
            name: name.to_string(),
            mode: mode.to_string(),
        })?;
        match lock.next(None)? {
            Some(Response::Granted { lvb, .. }) => Ok((lock, lvb_text(&lvb))),
            Some(Response::Error { message, .. }) => Err(message),
            other => Err(format!("unexpected answer from the daemon: {other:?}")),
        }
    }

    fn send(&mut self, request: &Request) -> Result<(), String> {
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .map_err(|e| format!("talking to the daemon: {e}"))
    }

    /// The daemon's next message, waiting at most `wait` (None: forever);
    /// Ok(None) when the time is up.
    fn next(&mut self, wait: Option<Duration>) -> Result<Option<Response>, String> {
        self.stream
            .set_read_timeout(wait.map(|w| w.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("the daemon closed the connection".into()),
            Ok(_) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| format!("bad message from the daemon: {e}")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits up to `wait` for another node to want the lock: the mode it
    /// wants, or None.
    fn blocked(&mut self, wait: Duration) -> Result<Option<String>, String> {
        match self.next(Some(wait))? {
            None => Ok(None),
            Some(Response::Blocking { wanted }) => Ok(Some(wanted)),
            Some(Response::Error { message, .. }) => Err(format!("lock lost: {message}")),
            Some(other) => Err(format!("unexpected message from the daemon: {other:?}")),
        }
    }

    fn release(mut self, lvb: Option<Vec<u8>>) -> Result<(), String> {
        self.send(&Request::Release { lvb })?;
        loop {
            match self.next(None)? {
                Some(Response::Ok) => return Ok(()),
                // A notice that crossed our release.
                Some(Response::Blocking { .. }) => continue,
                Some(Response::Error { message, .. }) => {
                    return Err(format!("{}/{}: {message}", self.domain, self.name))
                }
                other => return Err(format!("unexpected answer from the daemon: {other:?}")),
            }
        }
    }
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
    let asked = Instant::now();
    let (mut held, value) = HeldLock::acquire(domain, name, mode)?;
    println!(
        "granted {} on {domain}/{name} after {:.3} s; lvb \"{value}\"",
        mode.to_ascii_uppercase(),
        asked.elapsed().as_secs_f64()
    );
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
    loop {
        if until.is_some_and(|t| Instant::now() >= t) || stdin_closed.load(Ordering::SeqCst) {
            break;
        }
        let slice = until.map_or(Duration::from_millis(50), |t| {
            t.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50))
        });
        if let Some(wanted) = held.blocked(slice)? {
            println!("blocking: another node waits for {wanted}");
            let _ = std::io::stdout().flush();
            if release_on_blocking {
                break;
            }
        }
    }
    held.release(lvb.map(String::into_bytes))?;
    println!("released {domain}/{name}");
    Ok(())
}

/// Lock round trips: `count` acquisitions of EX on `domain/name`. Alone, each
/// is released at once (uncontended re-acquire); with `pingpong`, each is
/// held until another node asks for it (run it on two nodes at once).
fn bench(domain: &str, name: &str, count: u32, pingpong: bool) -> Result<(), String> {
    let sent_before = crate::cli::o2cb::status()?.map_or(0, |s| s.messages_sent);
    let start = Instant::now();
    let mut waited = Duration::ZERO;
    let mut blocked = 0u32;
    for i in 0..count {
        let asked = Instant::now();
        let (mut held, _) = HeldLock::acquire(domain, name, "EX")?;
        waited += asked.elapsed();
        // The last round holds on for nobody: the other side may be done.
        if pingpong && i + 1 < count && held.blocked(Duration::from_secs(5))?.is_some() {
            blocked += 1;
        }
        held.release(None)?;
    }
    let elapsed = start.elapsed();
    let sent = crate::cli::o2cb::status()?.map_or(0, |s| s.messages_sent) - sent_before;
    println!(
        "{count} EX acquisitions in {:.3} s: {:.0} per second, {:.1} us mean wait for a grant; \
         {blocked} released on another node's request; {sent} lock messages sent by this node",
        elapsed.as_secs_f64(),
        f64::from(count) / elapsed.as_secs_f64(),
        waited.as_secs_f64() * 1e6 / f64::from(count.max(1)),
    );
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
