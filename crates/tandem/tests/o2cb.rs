//! `o2cb`'s configuration verbs against the real ocfs2-tools `o2cb`: each reads
//! what the other writes, and the same commands write the same file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cluster::conf::ClusterConf;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
const REAL_O2CB: &str = "/usr/sbin/o2cb";

fn require_real_o2cb() {
    assert!(
        Path::new(REAL_O2CB).exists(),
        "the real o2cb is missing: install ocfs2-tools (scripts/install test does)"
    );
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tandem-o2cb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ours(file: &Path, args: &[&str]) -> Output {
    Command::new(TANDEM)
        .arg("o2cb")
        .arg(format!("--config-file={}", file.display()))
        .args(args)
        .output()
        .unwrap()
}

fn real(file: &Path, args: &[&str]) -> Output {
    Command::new(REAL_O2CB)
        .arg(format!("--config-file={}", file.display()))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The seed's commands, step 13, plus the other configuration verbs.
const SEED_COMMANDS: &[&[&str]] = &[
    &["add-cluster", "tclust"],
    &["add-node", "tclust", "nodo1", "--ip", "10.0.0.59"],
    &["add-node", "tclust", "nodo2", "--ip", "10.0.0.218"],
];

const MORE_COMMANDS: &[&[&str]] = &[
    &[
        "add-node", "tclust", "nodo3", "--ip", "10.0.0.3", "--port", "7000", "--number", "7",
    ],
    &[
        "add-heartbeat",
        "tclust",
        "0C2A3F9B1E7D4C6A8B5E2F1D0A9C8B7E",
    ],
    &["heartbeat-mode", "tclust", "global"],
    &["add-cluster", "other"],
    &["add-node", "other", "x1", "--ip", "192.168.7.1"],
    &["remove-node", "tclust", "nodo1"],
    &["add-node", "tclust", "nodo4", "--ip", "10.0.0.4"],
    &["remove-cluster", "other"],
];

fn parse_file(path: &Path) -> ClusterConf {
    ClusterConf::parse(&std::fs::read_to_string(path).unwrap(), "x").unwrap()
}

#[test]
fn the_seed_commands_write_the_same_file_as_the_real_o2cb() {
    require_real_o2cb();
    let dir = Scratch::new("seed");
    let (mine, theirs) = (dir.file("ours.conf"), dir.file("real.conf"));
    for command in SEED_COMMANDS {
        ok(ours(&mine, command), "ours");
        ok(real(&theirs, command), "real");
    }
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        std::fs::read_to_string(&theirs).unwrap(),
        "cluster.conf byte for byte"
    );
}

#[test]
fn each_reads_what_the_other_writes() {
    require_real_o2cb();
    let dir = Scratch::new("cross");
    let (mine, theirs) = (dir.file("ours.conf"), dir.file("real.conf"));
    for command in SEED_COMMANDS.iter().chain(MORE_COMMANDS) {
        ok(ours(&mine, command), &format!("ours {command:?}"));
        ok(real(&theirs, command), &format!("real {command:?}"));
    }
    // Same content (the real tool's stanza order is its own).
    let (a, b) = (parse_file(&mine), parse_file(&theirs));
    let mut a_nodes = a.nodes.clone();
    let mut b_nodes = b.nodes.clone();
    a_nodes.sort_by_key(|n| n.number);
    b_nodes.sort_by_key(|n| n.number);
    assert_eq!(a_nodes, b_nodes);
    assert_eq!(a.clusters, b.clusters);
    assert_eq!(a.heartbeats, b.heartbeats);
    let numbers: Vec<(String, u8)> = a_nodes.iter().map(|n| (n.name.clone(), n.number)).collect();
    assert_eq!(
        numbers,
        [
            ("nodo4".to_string(), 0),
            ("nodo2".into(), 1),
            ("nodo3".into(), 7)
        ]
    );

    // Each tool lists the other's file the same way it lists its own.
    for verb in ["list-cluster", "list-nodes", "list-heartbeats"] {
        let real_on_ours = ok(real(&mine, &[verb, "tclust"]), "real on ours");
        let real_on_real = ok(real(&theirs, &[verb, "tclust"]), "real on real");
        assert_eq!(
            ClusterConf::parse(&with_cluster(&real_on_ours), "r")
                .unwrap()
                .nodes
                .len(),
            ClusterConf::parse(&with_cluster(&real_on_real), "r")
                .unwrap()
                .nodes
                .len(),
            "{verb}"
        );
        let ours_on_real = ok(ours(&theirs, &[verb, "tclust"]), "ours on real");
        let ours_on_ours = ok(ours(&mine, &[verb, "tclust"]), "ours on ours");
        assert_eq!(ours_on_real, ours_on_ours, "{verb}");
        assert_eq!(
            normalized(&real_on_ours),
            normalized(&ours_on_ours),
            "{verb}: the same stanzas"
        );
    }
    assert_eq!(
        ok(ours(&theirs, &["list-clusters"]), "ours"),
        ok(real(&mine, &["list-clusters"]), "real")
    );
}

/// A listing of nodes alone lacks the cluster stanza the parser wants.
fn with_cluster(listing: &str) -> String {
    if listing.contains("cluster:\n") {
        listing.to_string()
    } else {
        format!("cluster:\n\tname = tclust\n\n{listing}")
    }
}

/// Stanzas as sorted sets of sorted lines: the same content in any order.
fn normalized(text: &str) -> Vec<Vec<String>> {
    let mut stanzas: Vec<Vec<String>> = text
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let mut lines: Vec<String> = s.lines().map(|l| l.trim().to_string()).collect();
            lines.sort();
            lines
        })
        .collect();
    stanzas.sort();
    stanzas
}

#[test]
fn refusals_match_the_real_tool_and_leave_the_file_alone() {
    require_real_o2cb();
    let dir = Scratch::new("refuse");
    let (mine, theirs) = (dir.file("ours.conf"), dir.file("real.conf"));
    for command in SEED_COMMANDS {
        ok(ours(&mine, command), "ours");
        ok(real(&theirs, command), "real");
    }
    let before = std::fs::read_to_string(&mine).unwrap();
    let refused: &[&[&str]] = &[
        &["add-cluster", "tclust"],
        &["add-node", "tclust", "nodo1", "--ip", "10.0.0.9"],
        &[
            "add-node", "tclust", "nodo9", "--ip", "10.0.0.9", "--number", "0",
        ],
        &["add-node", "tclust", "nodo9", "--ip", "1.2.3.400"],
        &["add-node", "nope", "nodo9", "--ip", "10.0.0.9"],
        &["remove-node", "tclust", "zz"],
        &["remove-cluster", "nope"],
        &["heartbeat-mode", "tclust", "foo"],
    ];
    for command in refused {
        let (o, r) = (ours(&mine, command), real(&theirs, command));
        assert_eq!(o.status.code(), r.status.code(), "{command:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&r.stderr),
            "{command:?}: the same message"
        );
    }
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), before);

    // A damaged file is refused with its place, and not rewritten.
    let broken = "cluster:\n\tname = tclust\n\theartbeat_mode = local\n\nnode:\n\tcluster = tclust\n\tnumber = 0\n\tip_port = 77x7\n\tip_address = 10.0.0.59\n\tname = nodo1\n";
    std::fs::write(&mine, broken).unwrap();
    let out = ours(
        &mine,
        &["add-node", "tclust", "nodo2", "--ip", "10.0.0.218"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:8:12: port '77x7' is not a number",
            mine.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), broken);
}
