//! The lab as the end-to-end tests use it: a lab of its own per test (its own
//! directory, namespaces and network), commands in its nodes under a time
//! limit, and a guard that takes it all down (daemons, mounts, loop devices)
//! even when an assertion fails.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

pub const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

/// A two-node resource on the lab's `/dev/sdc` disks, protocol C.
pub const R0: &str = "resource r0 {
  protocol C;
  meta-disk internal;
  device /dev/drbd1;
  syncer {
    verify-alg sha1;
  }
  on nodo1 {
    disk /dev/sdc;
    address 127.0.0.11:7789;
  }
  on nodo2 {
    disk /dev/sdc;
    address 127.0.0.12:7789;
  }
}
";

pub const IN_SYNC: &str = "replication:Established peer-disk:UpToDate";

pub struct TestLab {
    pub dir: PathBuf,
}

impl TestLab {
    /// A fresh lab of `nodes` nodes named after the test.
    pub fn up(name: &str, nodes: usize) -> TestLab {
        let dir = std::env::temp_dir().join(format!("tandem-{name}-{}", std::process::id()));
        let lab = TestLab { dir };
        lab.tandem(&["lab", "down"]);
        let out = lab.tandem(&["lab", "up", "--nodes", &nodes.to_string()]);
        assert!(
            out.status.success(),
            "lab up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// Runs `tandem ARGS` for this lab, under a 120 s limit.
    pub fn tandem(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .arg(TANDEM)
            .args(args)
            .env("TANDEM_LAB_DIR", &self.dir)
            .output()
            .expect("running tandem")
    }

    /// A command line for a shell line in a node (for callers that spawn it).
    pub fn command(&self, node: &str, limit_secs: u32, script: &str) -> Command {
        let mut c = Command::new("timeout");
        c.arg(limit_secs.to_string())
            .arg(TANDEM)
            .args(["lab", "exec", node, "--", "sh", "-c", script])
            .env("TANDEM_LAB_DIR", &self.dir);
        c
    }

    /// Runs a shell line in a node (under a 120 s limit).
    pub fn sh(&self, node: &str, script: &str) -> Output {
        self.tandem(&["lab", "exec", node, "--", "sh", "-c", script])
    }

    /// Runs a shell line that must succeed; its standard output.
    pub fn ok(&self, node: &str, script: &str) -> String {
        let out = self.sh(node, script);
        assert!(
            out.status.success(),
            "{node}$ {script}\nexit: {}\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log(node)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The end of a node's daemon log.
    pub fn log(&self, node: &str) -> String {
        let out = self.sh(node, "cat /run/tandem/tandemd.log 2>/dev/null | tail -60");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `drbdadm status RESOURCE` on `node` until it shows `wanted`.
    pub fn wait_status(
        &self,
        node: &str,
        resource: &str,
        wanted: &str,
        limit: std::time::Duration,
    ) -> String {
        let start = std::time::Instant::now();
        loop {
            let status = self.ok(node, &format!("drbdadm status {resource}"));
            if status.contains(wanted) {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "{node}: no {wanted:?} after {limit:?}:\n{status}\n{}",
                self.log(node)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `r0` ([`R0`]): create-md, up on both nodes, primary --force on nodo1,
    /// and the first full sync.
    pub fn bring_up_r0(&self) {
        self.up_fresh_r0();
        self.ok("nodo1", "drbdadm primary --force r0");
        self.wait_status("nodo1", "r0", IN_SYNC, std::time::Duration::from_secs(120));
        self.ok("nodo2", "drbdadm wait-sync r0");
    }

    /// [`R0`] on both nodes with fresh meta-data, connected, not synced.
    pub fn up_fresh_r0(&self) {
        self.up_fresh(R0);
    }

    /// `r0` as `config` (a variant of [`R0`]) on both nodes with fresh
    /// meta-data, connected, not synced.
    pub fn up_fresh(&self, config: &str) {
        for node in ["nodo1", "nodo2"] {
            self.install_r0(node, config);
            self.ok(node, "drbdadm create-md r0 >/dev/null 2>&1");
            self.ok(node, "drbdadm up r0");
        }
        self.ok("nodo1", "drbdadm wait-connect r0");
    }

    /// Writes `config` as the node's `/etc/drbd.d/r0.res`.
    pub fn install_r0(&self, node: &str, config: &str) {
        let res = self.dir.join(format!("r0-{node}.res"));
        std::fs::write(&res, config).unwrap();
        self.ok(node, &format!("cp {} /etc/drbd.d/r0.res", res.display()));
    }

    /// The backing file of a node's disk (`sdb`, `sdc`).
    pub fn image(&self, node: &str, disk: &str) -> PathBuf {
        self.dir.join(format!("nodes/{node}/disks/{disk}.img"))
    }

    /// The lab's network namespace (shared by its nodes).
    pub fn netns(&self) -> PathBuf {
        self.dir.join("nodes/net")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let out = self.tandem(&["lab", "down"]);
        if !out.status.success() && !std::thread::panicking() {
            panic!("lab down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Opens a TCP connection inside the lab's network from `from` to `to`.
pub fn connect_in_lab(lab: &TestLab, from: &str, to: &str) -> TcpStream {
    let netns = lab.netns();
    let (from, to): (SocketAddr, SocketAddr) =
        (format!("{from}:0").parse().unwrap(), to.parse().unwrap());
    // A thread of its own enters the lab's network namespace; the socket
    // keeps it after the thread ends.
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).unwrap();
        // SAFETY: setns on a valid namespace file descriptor, for this thread only.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0);
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&from.into()).unwrap();
        s.connect_timeout(&to.into(), Duration::from_secs(5))
            .unwrap();
        TcpStream::from(s)
    })
    .join()
    .unwrap()
}

/// Sends `bytes` and waits until the other side drops the connection.
pub fn send_and_expect_close(mut s: TcpStream, bytes: &[u8]) {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let mut sink = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut s, &mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the daemon kept a bad connection open: {e}"),
        }
    }
}
