//! `tandem mkfs.ocfs2` against the real ocfs2-tools: for each option set, the
//! real fsck.ocfs2 finds nothing wrong with our volume, and debugfs.ocfs2 shows
//! the same superblock, system files (names, inode numbers, sizes, links) and
//! allocations as on a volume the real mkfs.ocfs2 made with the same options
//! (fields that are random or time-stamped are left out).

use std::path::{Path, PathBuf};
use std::process::Command;

const MKFS: &str = "/usr/sbin/mkfs.ocfs2";
const FSCK: &str = "/usr/sbin/fsck.ocfs2";
const DEBUGFS: &str = "/usr/sbin/debugfs.ocfs2";

fn require_tools() {
    for tool in [MKFS, FSCK, DEBUGFS, "/sbin/modprobe"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install ocfs2-tools and kmod (scripts/install does) to run the OCFS2 oracle tests"
        );
    }
}

fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn debugfs(img: &Path, req: &str) -> String {
    let out = Command::new(DEBUGFS)
        .arg("-R")
        .arg(req)
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// debugfs output without the fields that differ between two runs.
fn stable(text: &str) -> String {
    const VOLATILE: &[&str] = &[
        "time:",
        "Generation",
        "CRC32",
        "UUID:",
        "Hash:",
        "DX Seeds",
        "Last Check",
        "Checksum",
    ];
    text.lines()
        .filter(|l| !VOLATILE.iter().any(|v| l.contains(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ls -l` lines reduced to inode, mode, links, size, name.
fn listing(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 9 {
                format!("{} {} {} {} {}", f[0], f[1], f[2], f[5], f[8..].join(" "))
            } else {
                l.to_string()
            }
        })
        .collect()
}

fn problems(img: &Path) -> (Vec<String>, i32, String) {
    let out = Command::new(FSCK).arg("-fn").arg(img).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = text
        .lines()
        .filter(|l| {
            l.starts_with('[')
                && l.find(']').is_some_and(|e| {
                    e > 1
                        && l[1..e]
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
        })
        .map(str::to_string)
        .collect();
    (bad, out.status.code().unwrap_or(-1), text)
}

fn compare(name: &str, size: u64, args: &[&str]) {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let ours = image(dir.path(), &format!("{name}-ours"), size);
    let theirs = image(dir.path(), &format!("{name}-theirs"), size);

    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("mkfs.ocfs2")
        .arg("-F")
        .args(args)
        .arg(&ours));
    assert!(ok, "{name}: our mkfs failed:\n{out}");
    assert!(out.contains("mkfs.ocfs2 successful"), "{name}: {out}");
    let (ok, their_out) = run(Command::new(MKFS).arg("-F").args(args).arg(&theirs));
    assert!(ok, "{name}: real mkfs failed:\n{their_out}");
    // The summary lines (geometry, features, sizes) match the real tool's.
    let summary = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| {
                [
                    "Label:",
                    "Features:",
                    "Block size:",
                    "Cluster size:",
                    "Volume size:",
                    "Cluster groups:",
                    "Extent allocator",
                    "Journal size:",
                    "Node slots:",
                    "Writing backup",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(summary(&out), summary(&their_out), "{name}: mkfs summary");

    let (bad, code, text) = problems(&ours);
    assert!(
        bad.is_empty() && code == 0,
        "{name}: fsck.ocfs2 -fn found problems (exit {code}):\n{text}"
    );

    assert_eq!(
        stable(&debugfs(&ours, "stats")),
        stable(&debugfs(&theirs, "stats")),
        "{name}: stats"
    );
    let sys_ours = listing(&debugfs(&ours, "ls -l //"));
    assert_eq!(
        sys_ours,
        listing(&debugfs(&theirs, "ls -l //")),
        "{name}: ls -l //"
    );
    assert_eq!(
        listing(&debugfs(&ours, "ls -l /")),
        listing(&debugfs(&theirs, "ls -l /")),
        "{name}: ls -l /"
    );
    for line in &sys_ours {
        let file = line.rsplit(' ').next().unwrap();
        if file == "." || file == ".." {
            continue;
        }
        let req = format!("stat //{file}");
        assert_eq!(
            stable(&debugfs(&ours, &req)),
            stable(&debugfs(&theirs, &req)),
            "{name}: {req}"
        );
    }
    assert_eq!(
        stable(&debugfs(&ours, "stat /lost+found")),
        stable(&debugfs(&theirs, "stat /lost+found")),
        "{name}: stat /lost+found"
    );
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn seed_options() {
    compare(
        "seed",
        GIB,
        &[
            "--cluster-size",
            "8K",
            "-J",
            "size=32M",
            "-T",
            "mail",
            "--node-slots",
            "2",
            "--label",
            "ocfs2_fs",
            "--mount",
            "cluster",
            "--fs-feature-level=max-features",
            "--cluster-stack=o2cb",
            "--cluster-name=tclust",
        ],
    );
}

#[test]
fn max_compat_512_byte_blocks_local() {
    compare(
        "b512",
        256 * MIB,
        &[
            "-b",
            "512",
            "-C",
            "4K",
            "-N",
            "1",
            "-M",
            "local",
            "--fs-feature-level=max-compat",
        ],
    );
}

#[test]
fn max_compat_1k_blocks_1m_clusters_8_slots() {
    // (Not the default level: with indexed-dirs, a 1K inode holds the system
    // directory inline for one slot only, and the real mkfs's own fsck then
    // reports DX_TREE_MISSING on it.)
    compare(
        "b1k",
        256 * MIB,
        &[
            "-b",
            "1K",
            "-C",
            "1M",
            "-N",
            "8",
            "--fs-feature-level=max-compat",
            "-L",
            "vol",
        ],
    );
}

#[test]
fn max_features_2k_blocks_2_slots() {
    // (With 4 slots the system directory no longer fits inline in a 2K inode;
    // the real mkfs then leaves it unindexed and its own fsck reports
    // DX_TREE_MISSING, so that layout cannot be a clean oracle case.)
    compare(
        "b2k",
        256 * MIB,
        &[
            "-b",
            "2K",
            "-C",
            "16K",
            "-N",
            "2",
            "--fs-feature-level=max-features",
        ],
    );
}

#[test]
fn max_compat_cluster_stack_1g() {
    compare(
        "compat-o2cb",
        GIB,
        &[
            "-b",
            "4K",
            "-C",
            "64K",
            "-N",
            "3",
            "--fs-feature-level=max-compat",
            "--cluster-stack=o2cb",
            "--cluster-name=c1",
        ],
    );
}

#[test]
fn defaults_only() {
    compare("defaults", GIB, &[]);
}

#[test]
fn local_default_level_4k() {
    compare(
        "local4k",
        GIB,
        &["-b", "4K", "-C", "4K", "-M", "local", "-T", "mail"],
    );
}

#[test]
fn features_string_256m() {
    compare(
        "features",
        256 * MIB,
        &[
            "-b",
            "4K",
            "-C",
            "32K",
            "-N",
            "2",
            "--fs-features=nosparse,nounwritten,noxattr,metaecc",
        ],
    );
}

#[test]
fn vmstore_20g_sparse_with_backups() {
    compare(
        "vm20g",
        20 * GIB,
        &[
            "-T",
            "vmstore",
            "-N",
            "2",
            "--fs-feature-level=max-features",
        ],
    );
}
