//! The o2cb cluster stack across real daemons in the lab: cluster.conf and
//! /etc/default/o2cb written with the o2cb verbs, `service o2cb start`, a global
//! heartbeat region on a volume every node opens, real TCP between the nodes.
//!
//! - Two nodes: node 1 holds EX, node 2's PR waits and is granted, with the
//!   value block node 1 left, when node 1 releases. Node 1's daemon is killed:
//!   node 2 declares it dead within the configured dead time, recovers it and
//!   gets the lock. Node 1 comes back and rejoins; the network between the two
//!   is cut: exactly one keeps the cluster (node 1, the lowest), the other
//!   fences itself and says why.
//! - Three nodes: the lock moves between all three; the cluster port refuses
//!   garbage, an unknown address, a Hello from a node not in cluster.conf and
//!   one with other timeouts, each with a log line, and keeps serving; node 3
//!   is cut off from 1 and 2: the majority keeps the cluster, node 3 fences.
//!
//! The timeouts are shortened in /etc/default/o2cb: threshold 3 beats (dead
//! after 4 s without a heartbeat write), idle timeout 5 s, keepalive and
//! reconnect 1 s.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{connect_in_lab, send_and_expect_close, TestLab};

const SETTINGS: &str = "O2CB_ENABLED=true
O2CB_STACK=o2cb
O2CB_BOOTCLUSTER=tclust
O2CB_HEARTBEAT_THRESHOLD=3
O2CB_IDLE_TIMEOUT_MS=5000
O2CB_KEEPALIVE_DELAY_MS=1000
O2CB_RECONNECT_DELAY_MS=1000
";

/// Writes the configuration on `nodes` (cluster.conf lists `configured` nodes)
/// and starts the o2cb service on each.
fn start_cluster(lab: &TestLab, nodes: &[u8], configured: u8) {
    let region = lab.dir.join("shared.img");
    if !region.exists() {
        std::fs::File::create(&region)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let out = lab.tandem(&[
            "mkfs.ocfs2",
            "-q",
            "-N",
            "4",
            "--cluster-stack=o2cb",
            "--cluster-name=tclust",
            region.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "mkfs: {:?}", out);
    }
    let mut setup =
        String::from("set -e; rm -f /etc/ocfs2/cluster.conf; o2cb add-cluster tclust\n");
    for n in 1..=configured {
        setup.push_str(&format!(
            "o2cb add-node tclust nodo{n} --ip 127.0.0.1{n} --number {n}\n"
        ));
    }
    setup.push_str(&format!(
        "o2cb add-heartbeat tclust {}\no2cb heartbeat-mode tclust global\n\
         printf '{}' > /etc/default/o2cb\n",
        region.display(),
        SETTINGS.replace('\n', "\\n")
    ));
    for &n in nodes {
        lab.ok(&format!("nodo{n}"), &setup);
    }
    for &n in nodes {
        let out = lab.ok(&format!("nodo{n}"), "tandem service o2cb start");
        assert!(out.contains("OK"), "{out}");
    }
}

/// `o2cb cluster-status` on node `n`.
fn status(lab: &TestLab, n: u8) -> String {
    lab.ok(&format!("nodo{n}"), "o2cb cluster-status")
}

/// Whether node `of`'s status shows node `n` as a connected member.
fn sees(status: &str, n: u8) -> bool {
    status
        .lines()
        .any(|l| l.contains(&format!("Node {n} ")) && l.contains("member, connected"))
}

/// Waits until every node of `nodes` sees all the others as connected members.
fn wait_joined(lab: &TestLab, nodes: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let all = nodes.iter().all(|&a| {
            let s = status(lab, a);
            nodes.iter().filter(|&&b| b != a).all(|&b| sees(&s, b))
        });
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes {nodes:?} did not all join within 45 s:\n{}",
            nodes
                .iter()
                .map(|&n| format!(
                    "nodo{n}:\n{}\n{}",
                    status(lab, n),
                    lab.log(&format!("nodo{n}"))
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A lock holder running in a node: `tandem dlm lock` with its output read
/// line by line.
struct Holder {
    child: Child,
    lines: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(lab: &TestLab, node: u8, args: &str) -> Holder {
        let mut child = lab
            .command(
                &format!("nodo{node}"),
                90,
                &format!("tandem dlm lock {args}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Holder { child, lines }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.lines.read_line(&mut l).unwrap();
        l
    }

    /// Everything it printed until it exited, and whether it succeeded.
    fn finish(mut self) -> (String, bool) {
        let mut rest = String::new();
        while self.lines.read_line(&mut rest).unwrap_or(0) > 0 {}
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        (rest + &err, ok)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Ours, by its id; a no-op once it exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds a `granted` line says the request waited.
fn waited(line: &str) -> f64 {
    line.split(" after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a granted line: {line:?}"))
}

/// Node `from` waits for `mode` on `d/r` while node `holder` holds EX; returns
/// how long it waited.
fn handoff(lab: &TestLab, holder: u8, from: u8, mode: &str, lvb: &str) -> f64 {
    let mut h = Holder::start(lab, holder, &format!("d r EX --hold 2 --lvb {lvb}"));
    let granted = h.line();
    assert!(granted.starts_with("granted EX"), "{granted}");
    let out = lab.ok(
        &format!("nodo{from}"),
        &format!("tandem dlm lock d r {mode} --hold 0"),
    );
    let (rest, ok) = h.finish();
    assert!(ok, "holder on nodo{holder}: {rest}");
    assert!(
        rest.contains(&format!("blocking: another node waits for {mode}")),
        "nodo{holder} got no blocking notice: {rest}"
    );
    assert!(
        out.contains(&format!("granted {mode} on d/r")) && out.contains(&format!("lvb \"{lvb}\"")),
        "nodo{from}: {out}"
    );
    waited(&out)
}

/// Cuts the network between the `a` nodes and the `b` nodes (both ways).
fn partition(lab: &TestLab, a: &[u8], b: &[u8]) {
    let mut rules = String::from(
        "nft add table inet tandem_partition && \
         nft add chain inet tandem_partition out '{ type filter hook output priority 0; }'",
    );
    for x in a {
        for y in b {
            for (s, d) in [(x, y), (y, x)] {
                rules.push_str(&format!(
                    " && nft add rule inet tandem_partition out ip saddr 127.0.0.1{s} ip daddr 127.0.0.1{d} drop"
                ));
            }
        }
    }
    let out = std::process::Command::new("timeout")
        .arg("30")
        .arg("nsenter")
        .arg(format!("--net={}", lab.netns().display()))
        .args(["sh", "-c", &rules])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until node `n`'s status starts with `prefix`.
fn wait_status(lab: &TestLab, n: u8, prefix: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(lab, n);
        if s.starts_with(prefix) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "nodo{n} not '{prefix}' within {limit:?}:\n{s}\n{}",
            lab.log(&format!("nodo{n}"))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The process id of node `n`'s daemon, from its log.
fn daemon_pid(lab: &TestLab, n: u8) -> i32 {
    let log = lab.ok(&format!("nodo{n}"), "cat /run/tandem/tandemd.log");
    log.lines()
        .filter_map(|l| l.split("(pid ").nth(1))
        .filter_map(|r| r.trim_end_matches(')').parse().ok())
        .next_back()
        .expect("the daemon logs its pid")
}

#[test]
fn two_nodes_lock_handoff_death_and_split() {
    let lab = TestLab::up("o2cb2", 2);
    start_cluster(&lab, &[1, 2], 2);
    wait_joined(&lab, &[1, 2]);

    // Contention: PR waits for EX and gets its value block.
    let w = handoff(&lab, 1, 2, "PR", "first");
    assert!(w > 1.0, "PR granted after {w} s while EX was held for 2 s");

    // Node 1 dies holding EX: node 2 gets the lock once node 1 is declared dead
    // (dead time 4 s; a heartbeat sector unchanged for 3 reads) and recovered.
    let mut h = Holder::start(&lab, 1, "d r EX");
    assert!(h.line().starts_with("granted EX"));
    let listing = lab.ok("nodo1", "tandem dlm locks");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("d r ") && l.contains("1:EX")),
        "{listing}"
    );
    let pid = daemon_pid(&lab, 1);
    // SAFETY: kill(2) on the daemon this test started (its pid from its log).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let out = lab.ok("nodo2", "tandem dlm lock d r EX --hold 0");
    let took = killed.elapsed();
    drop(h);
    assert!(out.contains("granted EX"), "{out}");
    assert!(
        took < Duration::from_secs(20) && took > Duration::from_secs(3),
        "EX on node 2 after {took:?}"
    );
    let log = lab.log("nodo2");
    assert!(log.contains("node 1 (nodo1) is dead"), "{log}");
    assert!(log.contains("recovering node 1"), "{log}");

    // Node 1 comes back (a new incarnation) and rejoins.
    let out = lab.ok("nodo1", "tandem service o2cb start");
    assert!(out.contains("OK"), "{out}");
    wait_joined(&lab, &[1, 2]);
    handoff(&lab, 2, 1, "EX", "second");

    // Split: node 1 (lowest) keeps the cluster, node 2 fences itself.
    partition(&lab, &[1], &[2]);
    let fenced = wait_status(
        &lab,
        2,
        "Cluster 'tclust' is fenced",
        Duration::from_secs(40),
    );
    assert!(fenced.contains("lowest node 1"), "{fenced}");
    assert!(lab.log("nodo2").contains("fencing this node"));
    let s1 = status(&lab, 1);
    assert!(s1.starts_with("Cluster 'tclust' is online"), "{s1}");
    let refused = lab.sh("nodo2", "tandem dlm lock d r PR --hold 0");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("fenced"),
        "{refused:?}"
    );
    // The survivor declares the fenced node dead and keeps granting.
    let s1 = wait_status_line(&lab, 1, "Node 2 nodo2 127.0.0.12:7777: down");
    assert!(s1.contains("online"), "{s1}");
    let out = lab.ok("nodo1", "tandem dlm lock d r EX --hold 0");
    assert!(out.contains("granted EX"), "{out}");
}

fn wait_status_line(lab: &TestLab, n: u8, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(lab, n);
        if s.lines().any(|l| l.trim() == line) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "nodo{n} never showed {line:?}:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn hello(node: u8, idle_timeout_ms: u32) -> Vec<u8> {
    let mut out = Vec::new();
    cluster::message::encode_net(
        &cluster::message::NetMessage::Hello(cluster::message::Hello {
            version: cluster::message::PROTOCOL_VERSION,
            node,
            cluster: "tclust".into(),
            idle_timeout_ms,
            keepalive_delay_ms: 1000,
            reconnect_delay_ms: 1000,
            generation: 42,
            acked_generation: 0,
            acked: 0,
        }),
        &mut out,
    );
    out
}

#[test]
fn three_nodes_locks_bad_input_and_majority() {
    let lab = TestLab::up("o2cb3", 3);
    // Node 4 is in cluster.conf but never starts: its address is where the
    // bad input comes from.
    start_cluster(&lab, &[1, 2, 3], 4);
    wait_joined(&lab, &[1, 2, 3]);

    // The lock moves around all three nodes, its value block with it.
    handoff(&lab, 1, 2, "EX", "one");
    handoff(&lab, 2, 3, "PR", "two");
    handoff(&lab, 3, 1, "EX", "three");

    // Bad input on node 1's cluster port.
    let node1 = "127.0.0.11:7777";
    send_and_expect_close(connect_in_lab(&lab, "127.0.0.99", node1), b"hello?");
    send_and_expect_close(
        connect_in_lab(&lab, "127.0.0.14", node1),
        b"GET / HTTP/1.0\r\n\r\n garbage garbage",
    );
    send_and_expect_close(connect_in_lab(&lab, "127.0.0.14", node1), &hello(9, 5000));
    send_and_expect_close(connect_in_lab(&lab, "127.0.0.14", node1), &hello(4, 9999));
    let log = lab.log("nodo1");
    for line in [
        "refused a connection from 127.0.0.99",
        "node 4: bad frame",
        "refused node 4: node 9 is not in cluster.conf",
        "refused node 4: peer's idle timeout is 9999 ms, ours is 5000 ms",
    ] {
        assert!(log.contains(line), "no {line:?} in node 1's log:\n{log}");
    }
    // Still serving, still the same cluster.
    let s = status(&lab, 1);
    assert!(sees(&s, 2) && sees(&s, 3), "{s}");
    handoff(&lab, 2, 1, "PR", "four");

    // Node 3 cut off from 1 and 2: the majority (1, 2) keeps the cluster.
    partition(&lab, &[3], &[1, 2]);
    let fenced = wait_status(
        &lab,
        3,
        "Cluster 'tclust' is fenced",
        Duration::from_secs(40),
    );
    assert!(fenced.contains("fencing this node"), "{fenced}");
    for n in [1, 2] {
        let s = status(&lab, n);
        assert!(s.starts_with("Cluster 'tclust' is online"), "nodo{n}: {s}");
    }
    wait_status_line(&lab, 1, "Node 3 nodo3 127.0.0.13:7777: down");
    handoff(&lab, 1, 2, "EX", "five");
}
