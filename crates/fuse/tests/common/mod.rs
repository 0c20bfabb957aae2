//! Helpers for tests that need root, /dev/fuse and the loop driver: external
//! commands with a deadline, and guards that undo mounts and loop devices even
//! when the test fails.

#![allow(dead_code)]

use std::hash::Hasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Fails the test unless this machine can run it (root, FUSE, loop
/// devices): a test that cannot run must not pass as if it had.
pub fn require_privileged() {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/fuse").exists() && Path::new("/dev/loop-control").exists();
    assert!(
        ok,
        "needs root, /dev/fuse and /dev/loop-control (scripts/test runs the tests as root)"
    );
}

/// Runs `cmd args` under `timeout 60` (killed 5 s later if it ignores TERM).
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .args(["--kill-after=5", "60", cmd])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    eprintln!(
        "$ {cmd} {}\n  exit {:?}\n  stdout: {}\n  stderr: {}",
        args.join(" "),
        out.status.code(),
        tail(&out.stdout),
        tail(&out.stderr)
    );
    out
}

/// The last few lines of a command's output.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(4)..].join("\n    ")
}

/// Runs and expects success.
pub fn run_ok(cmd: &str, args: &[&str]) -> Output {
    let out = run(cmd, args);
    assert!(out.status.success(), "{cmd} {args:?} failed");
    out
}

/// Unmounts (lazily, with a deadline) when dropped.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("timeout")
                .args(["10", "umount", "-l"])
                .arg(&self.0)
                .output();
        }
    }
}

/// Detaches a loop device attached with losetup when dropped.
pub struct LosetupGuard(pub String);

impl Drop for LosetupGuard {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["10", "losetup", "-d", &self.0])
            .output();
    }
}

/// Whether something is mounted on `path`.
pub fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Loop devices whose backing file is `file` (from `losetup -j`).
pub fn loops_of(file: &Path) -> Vec<String> {
    let out = run(
        "losetup",
        &["-n", "-O", "NAME", "-j", &file.to_string_lossy()],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A hash of a file's whole content.
pub fn checksum(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    h.finish()
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24 of CapEff).
pub fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}
