//! Helpers shared by the oracle tests: the real ocfs2-tools, sparse images in a
//! temporary directory, and parsers for debugfs.ocfs2 output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const MKFS: &str = "/usr/sbin/mkfs.ocfs2";
pub const FSCK: &str = "/usr/sbin/fsck.ocfs2";
pub const DEBUGFS: &str = "/usr/sbin/debugfs.ocfs2";

/// Fails (does not skip) when the oracle tools are missing.
pub fn require_tools() {
    for tool in [MKFS, FSCK, DEBUGFS, "/sbin/modprobe"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install ocfs2-tools and kmod (scripts/install does) to run the OCFS2 oracle tests"
        );
    }
}

/// A sparse image of `size` bytes in `dir`.
pub fn sparse_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

/// Runs the real mkfs.ocfs2 with `args` on `image`.
pub fn real_mkfs(image: &Path, args: &[&str]) {
    let out = Command::new(MKFS)
        .args(["-F", "-q"])
        .args(args)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "real mkfs.ocfs2 {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `debugfs.ocfs2 -R CMD image` stdout.
pub fn debugfs(image: &Path, cmd: &str) -> String {
    let out = Command::new(DEBUGFS)
        .arg("-R")
        .arg(cmd)
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `ls -l` line of debugfs: inode, mode string, links, size, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsLine {
    pub inode: u64,
    pub mode: String,
    pub links: u32,
    pub size: u64,
    pub name: String,
}

pub fn parse_ls(out: &str) -> Vec<LsLine> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 9 {
                return None;
            }
            Some(LsLine {
                inode: f[0].parse().ok()?,
                mode: f[1].to_string(),
                links: f[2].parse().ok()?,
                size: f[5].parse().ok()?,
                name: f[8..].join(" "),
            })
        })
        .collect()
}

/// `fsck.ocfs2 -fn image`: returns the problem lines (those starting with a
/// bracketed code) and the exit status.
pub fn fsck(image: &Path) -> (Vec<String>, i32, String) {
    let out = Command::new(FSCK).arg("-fn").arg(image).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
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
    (problems, out.status.code().unwrap_or(-1), text)
}

/// Parses `debugfs -R stats` into (key, value) pairs of the fields that do not
/// change from one mkfs run to the next.
pub fn stable_stats(out: &str) -> Vec<(String, String)> {
    const VOLATILE: &[&str] = &[
        "Last Check",
        "UUID",
        "Hash",
        "DX Seeds",
        "Generation",
        "FS Generation",
        "CRC32",
        "ctime",
        "atime",
        "mtime",
        "dtime",
    ];
    let mut fields = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        // Lines hold several "Key: value" pairs separated by runs of spaces.
        let parts: Vec<&str> = line
            .split("   ")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        for p in parts {
            if let Some((k, v)) = p.split_once(':') {
                let k = k.trim();
                if VOLATILE.iter().any(|x| k == *x || k.ends_with(x)) {
                    continue;
                }
                fields.push((k.to_string(), v.trim().to_string()));
            }
        }
    }
    fields
}
