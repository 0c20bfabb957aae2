//! Starting the node daemon on demand (`drbdadm up`, `o2cb register-cluster`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use node::control::{self, Request};

/// Starts the daemon unless one answers, and waits until it does.
pub fn ensure() -> Result<(), String> {
    let socket = control::socket_path();
    if control::call(&socket, &Request::Ping, Duration::from_secs(5)).is_ok() {
        return Ok(());
    }
    let dir = socket.parent().unwrap_or(Path::new("/run/tandem"));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tandemd.log"))
        .map_err(|e| format!("opening the daemon's log: {e}"))?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(me);
    command
        .arg("daemon")
        .env("TANDEM_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory; the daemon must
    // outlive this command and its terminal.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if control::call(&socket, &Request::Ping, Duration::from_secs(2)).is_ok() {
            // Not waited for: it is the daemon; reaped by init when it ends.
            std::mem::forget(child);
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the daemon exited at once ({status}); see {}",
                dir.join("tandemd.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("the daemon did not come up within 10 s".into())
}
