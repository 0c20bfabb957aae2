//! Our drbdadm meta-data verbs against the real `drbdmeta` (drbd-utils 9.22), on
//! real loop devices over sparse files. Needs root and drbd-utils; fails (does not
//! skip) without them.
//!
//! Each test makes its own loop devices, detached and deleted by a guard even when
//! the test fails.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use drbd_meta::activity_log::{block_of_transaction, update_transactions};
use drbd_meta::superblock::mdf;
use drbd_meta::{Bitmap, Layout, Superblock};

const GIB: u64 = 1 << 30;
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A sparse file in a private directory, attached to a loop device.
struct Loop {
    dir: PathBuf,
    dev: String,
}

impl Loop {
    fn new(bytes: u64) -> Loop {
        preflight();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tandem-drbd-meta-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("disk.img");
        File::create(&file).unwrap().set_len(bytes).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Loop { dir, dev }
    }

    fn minor(&self) -> String {
        self.dev.trim_start_matches("/dev/loop").to_string()
    }

    /// A configuration with this disk on host `alpha` (node 0) and one peer.
    fn config(&self) -> PathBuf {
        let path = self.dir.join("r0.res");
        let text = format!(
            "resource r0 {{\n  device /dev/drbd{};\n  disk {};\n  meta-disk internal;\n  \
             on alpha {{ node-id 0; address 127.0.0.1:7789; }}\n  \
             on beta {{ node-id 1; address 127.0.0.2:7789; }}\n}}\n",
            self.minor(),
            self.dev
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        File::open(&self.dev)
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.dev)
            .unwrap();
        f.write_all_at(data, offset).unwrap();
        f.sync_all().unwrap();
    }

    /// The first 68 KiB and the last 1 MiB: everything create-md reads or writes
    /// on a 1 GiB device.
    fn snapshot(&self, size: u64) -> Vec<u8> {
        let mut s = self.read(0, 68 * 1024);
        s.extend(self.read(size - (1 << 20), 1 << 20));
        s
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn preflight() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the drbd-meta oracle tests need root (loop devices)"
    );
    let found = Command::new("drbdmeta")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok(),
        "drbdmeta (drbd-utils) is not installed: scripts/install must install drbd-utils"
    );
}

/// The real drbdmeta on `lo` (`--force`, so it never waits for a question).
fn drbdmeta(lo: &Loop, args: &[&str]) -> Output {
    let out = Command::new("drbdmeta")
        .env("DRBD_DRIVER_VERSION_OVERRIDE", "9.2.0")
        .args(["--force", &lo.minor(), "v09", &lo.dev, "internal"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run drbdmeta");
    out
}

/// Our drbdadm through the binary, as host `alpha`, with `stdin` as input.
fn ours(lo: &Loop, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("drbdadm")
        .arg("-c")
        .arg(lo.config())
        .args(args)
        .env("__DRBD_NODE__", "alpha")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit without reading its input (a refusal): a closed pipe
    // is not a failure of the test.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn must(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A dump without drbdmeta's four header lines (time, host, command) and the blank after.
fn body(dump: &str) -> String {
    assert!(
        dump.starts_with("# DRBD meta data dump\n"),
        "not a dump:\n{dump}"
    );
    dump.lines().skip(5).map(|l| format!("{l}\n")).collect()
}

fn assert_same(real: &str, ours: &str, what: &str) {
    if real != ours {
        let first = real.lines().zip(ours.lines()).position(|(a, b)| a != b);
        panic!("{what}: outputs differ (first differing line {first:?})\n--- real\n{real}\n--- ours\n{ours}");
    }
}

/// Ours creates; the real drbdmeta reads the same thing ours reads.
#[test]
fn ours_create_md_is_read_by_drbdmeta() {
    for max_peers in [None, Some("3")] {
        let lo = Loop::new(GIB);
        let mut args = vec!["create-md", "r0"];
        if let Some(n) = max_peers {
            args.extend(["--max-peers", n]);
        }
        let out = must(ours(&lo, &args, ""), "our create-md");
        assert_eq!(
            text(&out),
            "initializing activity log\nWriting meta data...\nNew drbd meta data block successfully created.\n"
        );
        let expect_kb = if max_peers.is_some() {
            "96 KB"
        } else {
            "32 KB"
        };
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains(&format!("initializing bitmap ({expect_kb}) to all zero")));

        let real = text(&must(drbdmeta(&lo, &["dump-md"]), "drbdmeta dump-md"));
        let mine = text(&must(ours(&lo, &["dump-md", "r0"], ""), "our dump-md"));
        assert_same(&body(&real), &body(&mine), "dump-md of our create-md");
        let peers = if max_peers.is_some() {
            "max-peers 3;"
        } else {
            "max-peers 1;"
        };
        assert!(real.contains(peers) && real.contains("current-uuid 0x0000000000000004;"));
        assert!(real.contains("flags 0x00000080;"), "{real}");

        let real_gi = text(&must(
            drbdmeta(&lo, &["--node-id=1", "get-gi"]),
            "drbdmeta get-gi",
        ));
        let our_gi = text(&must(ours(&lo, &["get-gi", "r0"], ""), "our get-gi"));
        assert_eq!(real_gi, our_gi);
    }
}

/// Fields and bitmap bits written with the library are read identically by
/// the real drbdmeta: agreed size, UUIDs, flags, per-peer slots, bitmap text.
#[test]
fn populated_meta_data_reads_the_same() {
    let lo = Loop::new(GIB);
    must(
        ours(&lo, &["create-md", "--max-peers", "2", "r0"], ""),
        "our create-md",
    );
    let layout = Layout::internal_default(GIB, 2).unwrap();
    let mut sb = Superblock::decode(&lo.read(layout.md_offset, 4096)).unwrap();
    sb.effective_size = layout.max_usable_sectors;
    sb.current_uuid = 0x1234_5678_9abc_def0;
    sb.flags = mdf::AL_CLEAN | mdf::CONSISTENT | mdf::WAS_UP_TO_DATE;
    sb.node_id = 0;
    sb.peers[1].bitmap_index = 0;
    sb.peers[1].bitmap_uuid = 0xfeed_f00d;
    sb.peers[1].flags = 0x1_0011;
    sb.peers[2].bitmap_index = 1;
    sb.history_uuids[0] = 0xaaaa;
    sb.history_uuids[1] = 0xbbbb;
    sb.la_peer_max_bio_size = 1 << 20;
    lo.write(layout.md_offset, &sb.encode());
    let mut bm = Bitmap::zeroed(layout.bm_bytes as usize, 2);
    for bit in [0u64, 1, 63, 64, 5000, 100_000, 262_000] {
        bm.set(0, bit, true);
    }
    for bit in 10_000..12_000 {
        bm.set(1, bit, true);
    }
    lo.write(layout.bm_offset, bm.as_bytes());

    let real = text(&must(drbdmeta(&lo, &["dump-md"]), "drbdmeta dump-md"));
    let mine = text(&must(ours(&lo, &["dump-md", "r0"], ""), "our dump-md"));
    assert_same(&body(&real), &body(&mine), "dump-md of populated meta-data");
    assert!(real.contains("# bits-set 2000;"), "{real}");
    for verb in ["get-gi", "show-gi"] {
        let real = text(&must(drbdmeta(&lo, &["--node-id=1", verb]), verb));
        let mine = text(&must(ours(&lo, &[verb, "r0"], ""), verb));
        assert_same(&real, &mine, verb);
    }
}

/// The real drbdmeta creates; ours reads the same thing the real one reads.
#[test]
fn drbdmeta_create_md_is_read_by_ours() {
    let lo = Loop::new(GIB + 12345 * 512);
    must(drbdmeta(&lo, &["create-md", "2"]), "drbdmeta create-md");
    let real = text(&must(drbdmeta(&lo, &["dump-md"]), "drbdmeta dump-md"));
    let mine = text(&must(ours(&lo, &["dump-md", "r0"], ""), "our dump-md"));
    assert_same(
        &body(&real),
        &body(&mine),
        "dump-md of drbdmeta's create-md",
    );
    for verb in ["get-gi", "show-gi"] {
        let real = text(&must(drbdmeta(&lo, &["--node-id=1", verb]), verb));
        let mine = text(&must(ours(&lo, &[verb, "r0"], ""), verb));
        assert_same(&real, &mine, verb);
    }
}

/// A crashed Primary's activity log: ours and the real apply-al set the same bits.
#[test]
fn apply_al_matches_drbdmeta() {
    let layout = Layout::internal_default(GIB, 2).unwrap();
    let extents: Vec<u32> = vec![0, 3, 17, 100, 200, 255, 300];
    let devices = [Loop::new(GIB), Loop::new(GIB)];
    for lo in &devices {
        must(
            ours(lo, &["create-md", "--max-peers", "2", "r0"], ""),
            "our create-md",
        );
        let mut sb = Superblock::decode(&lo.read(layout.md_offset, 4096)).unwrap();
        sb.effective_size = layout.max_usable_sectors;
        sb.flags = mdf::PRIMARY_IND | mdf::CONSISTENT;
        sb.device_uuid = 42;
        lo.write(layout.md_offset, &sb.encode());
        for tr in update_transactions(1000, &extents, 61) {
            let block = u64::from(block_of_transaction(tr.tr_number, 1, 8));
            lo.write(layout.al_offset + block * 4096, &tr.encode());
        }
    }
    let [theirs, mine] = &devices;
    must(drbdmeta(theirs, &["apply-al"]), "drbdmeta apply-al");
    let out = must(ours(mine, &["apply-al", "r0"], ""), "our apply-al");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Marked additional"),
        "{out:?}"
    );
    let a = text(&must(drbdmeta(theirs, &["dump-md"]), "dump-md"));
    let b = text(&must(drbdmeta(mine, &["dump-md"]), "dump-md"));
    assert_same(&body(&a), &body(&b), "dump-md after apply-al");
    // 7 extents, 1024 bits each, two peers; the last extent (255..) is clipped to the bitmap.
    assert!(!a.contains("# bits-set 0;"), "{a}");
    assert_eq!(
        theirs.read(layout.al_offset, 32768),
        mine.read(layout.al_offset, 32768),
        "AL after apply-al"
    );
}

/// create-md refuses a filesystem or meta-data without --force, writing nothing.
#[test]
fn create_md_refuses_existing_data() {
    let lo = Loop::new(GIB);
    let mkfs = Command::new("mkfs.xfs")
        .args(["-f", "-q", &lo.dev])
        .output();
    let mkfs = mkfs.expect("mkfs.xfs missing: scripts/install must install xfsprogs");
    assert!(
        mkfs.status.success(),
        "mkfs.xfs: {}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    let before = lo.snapshot(GIB);

    // A filesystem over the whole device: refused even with --force (exit 40).
    for force in [false, true] {
        let args: &[&str] = if force {
            &["create-md", "--force", "r0"]
        } else {
            &["create-md", "r0"]
        };
        let out = ours(&lo, args, "yes\n");
        assert_eq!(out.status.code(), Some(40), "{out:?}");
        let said = text(&out);
        assert!(
            said.contains("Found xfs filesystem") && said.contains("Operation refused."),
            "{said}"
        );
        assert_eq!(
            lo.snapshot(GIB),
            before,
            "create-md wrote to a refused device"
        );
    }
    let real = drbdmeta(&lo, &["create-md", "1"]);
    assert_eq!(
        real.status.code(),
        Some(40),
        "the real drbdmeta refuses it too"
    );

    // A smaller filesystem: a question, answered no (empty stdin), then forced.
    let small = Command::new("mkfs.xfs")
        .args(["-f", "-q", "-d", "size=512m", &lo.dev])
        .output()
        .unwrap();
    assert!(small.status.success());
    let before = lo.snapshot(GIB);
    let out = ours(&lo, &["create-md", "r0"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("Operation canceled."));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Do you want to proceed?"));
    assert_eq!(lo.snapshot(GIB), before);
    must(
        ours(&lo, &["create-md", "r0"], "yes\n"),
        "create-md confirmed with yes",
    );

    // Existing meta-data: a question; "no" cancels and writes nothing.
    let before = lo.snapshot(GIB);
    let out = ours(&lo, &["create-md", "r0"], "no\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("There appears to be a v09 flexible-size internal meta data block"),
        "{err}"
    );
    assert!(
        err.contains("Do you really want to overwrite the existing meta-data?"),
        "{err}"
    );
    assert!(text(&out).contains("Operation cancelled."));
    assert_eq!(lo.snapshot(GIB), before);
    // The device UUID survives a forced re-create, as with drbdadm.
    let uuid = |lo: &Loop| {
        Superblock::decode(&lo.read(GIB - 4096, 4096))
            .unwrap()
            .device_uuid
    };
    let old = uuid(&lo);
    must(
        ours(&lo, &["create-md", "--force", "r0"], ""),
        "forced create-md",
    );
    assert_eq!(uuid(&lo), old);
    assert_ne!(old, 0);

    // wipe-md, then nothing left to wipe.
    must(ours(&lo, &["wipe-md", "--force", "r0"], ""), "wipe-md");
    assert_eq!(
        drbdmeta(&lo, &["dump-md"]).status.code(),
        Some(1),
        "meta-data still there after wipe-md"
    );
    let out = must(ours(&lo, &["wipe-md", "r0"], ""), "second wipe-md");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("There appears to be no drbd meta data to wipe out?"));
    assert_eq!(ours(&lo, &["dump-md", "r0"], "").status.code(), Some(1));
}
