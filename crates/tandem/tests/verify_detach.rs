//! `drbdadm verify`, `invalidate`/`invalidate-remote`, `new-current-uuid
//! --clear-bitmap`, `pause-sync`/`resume-sync`, `outdate`,
//! `detach`/`attach` (of a Secondary, and of a Primary that goes on with
//! its peer's disk) and resync rate limits with `adjust` end to end in the lab: real daemons, real TCP, the backing disks compared byte for
//! byte at the end.
//!
//! Needs root. Every external command runs under `timeout`, and a guard takes the
//! lab (daemons, mounts, loop devices) down even when an assertion fails.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{TestLab, IN_SYNC, R0};

fn wait_for_log(lab: &TestLab, node: &str, wanted: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let out = lab.sh(node, "cat /run/tandem/tandemd.log");
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        if log.contains(wanted) {
            return log;
        }
        assert!(
            start.elapsed() < limit,
            "{node}: no {wanted:?} in the log after {limit:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Takes both nodes down and compares their backing disks outside the meta-data.
fn assert_disks_identical(lab: &TestLab) {
    let size: u64 = lab
        .ok("nodo1", "blockdev --getsize64 /dev/drbd1")
        .trim()
        .parse()
        .unwrap();
    lab.ok("nodo1", "drbdadm down r0");
    lab.ok("nodo2", "drbdadm down r0");
    assert_eq!(
        checksum(&lab.image("nodo1", "sdc"), size),
        checksum(&lab.image("nodo2", "sdc"), size),
        "the backing disks differ outside the meta-data"
    );
}

fn checksum(image: &std::path::Path, len: u64) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg("sh")
        .arg("-c")
        .arg(format!("head -c {len} {} | sha1sum", image.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Overwrites `blocks` of the Secondary's (nodo2's) backing disk while it is
/// down, through its own device node (no stale page cache anywhere), and
/// brings it back in sync (by the bitmap, which knows nothing of them).
fn corrupt_secondary(lab: &TestLab, blocks: &[u64]) {
    lab.ok("nodo2", "drbdadm down r0");
    for block in blocks {
        lab.ok(
            "nodo2",
            &format!(
                "dd if=/dev/urandom of=/dev/sdc bs=4096 count=1 seek={block} oflag=direct conv=notrunc status=none"
            ),
        );
    }
    lab.ok("nodo2", "drbdadm up r0");
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(30));
}

/// Waits until `node`'s log shows more than `before` resync starts with
/// `peer`; returns them all.
fn wait_for_resync_start(lab: &TestLab, node: &str, peer: &str, before: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let starts = resync_starts(&lab.log(node), peer);
        if starts.len() > before {
            return starts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no resync: {starts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lines of a resync's start with `peer` in a log: "... (N KiB out of sync)".
fn resync_starts(log: &str, peer: &str) -> Vec<String> {
    let start = format!("resync with {peer} started");
    log.lines()
        .filter(|l| l.contains(&start))
        .map(str::to_string)
        .collect()
}

#[test]
fn verify_finds_the_corrupted_blocks_and_a_reconnect_repairs_them() {
    let lab = TestLab::up("vd-verify", 2);
    lab.bring_up_r0();

    corrupt_secondary(&lab, &[3, 1000, 4097, 100_000, 200_003]);

    // (The Secondary's return started an empty bitmap resync: the Primary had
    // moved to a new generation without it.)
    let before = resync_starts(&lab.log("nodo1"), "nodo2").len();
    lab.ok("nodo1", "drbdadm verify r0");
    let status = lab.ok("nodo1", "drbdadm status r0");
    let line = status
        .lines()
        .find(|l| l.contains("replication:VerifyS"))
        .unwrap_or_else(|| panic!("no VerifyS right after verify:\n{status}"));
    let done: f64 = line
        .split("done:")
        .nth(1)
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or_else(|| panic!("no done:NN.NN in {line:?}"));
    assert!((0.0..100.0).contains(&done), "{line}");
    let target = lab.ok("nodo2", "drbdadm status r0");
    assert!(
        target.contains("replication:VerifyT") || target.contains(IN_SYNC),
        "{target}"
    );

    let log = wait_for_log(
        &lab,
        "nodo1",
        "Online verify found",
        Duration::from_secs(120),
    );
    assert!(
        log.contains("Online verify found 5 4k blocks out of sync"),
        "{log}"
    );
    wait_for_log(
        &lab,
        "nodo2",
        "Online verify found 5 4k blocks out of sync",
        Duration::from_secs(10),
    );
    // Not resynced on its own: the data still differ until a reconnect.
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(10));
    assert_eq!(resync_starts(&lab.log("nodo1"), "nodo2").len(), before);

    lab.ok("nodo1", "drbdadm disconnect r0 && drbdadm connect r0");
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(60));
    lab.ok("nodo2", "drbdadm wait-sync r0");
    let starts = resync_starts(&lab.log("nodo1"), "nodo2");
    assert_eq!(starts.len(), before + 1, "{starts:?}");
    assert!(
        starts[before].contains("started as SyncSource (20 KiB out of sync)"),
        "{starts:?}"
    );
    assert_disks_identical(&lab);
}

#[test]
fn invalidate_resyncs_the_secondary_in_full_and_the_primary_refuses_it() {
    let lab = TestLab::up("vd-invalidate", 2);
    lab.bring_up_r0();
    let size: u64 = lab
        .ok("nodo1", "blockdev --getsize64 /dev/drbd1")
        .trim()
        .parse()
        .unwrap();
    let full = format!("started as SyncSource ({} KiB out of sync)", size / 1024);

    // Only a full resync (or a verify) finds these.
    corrupt_secondary(&lab, &[5, 77_777, 200_001]);

    // A Primary is not overwritten.
    let refused = lab.sh("nodo1", "drbdadm invalidate r0 2>&1");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(said.contains("cannot become sync target"), "{said}");
    assert_eq!(lab.ok("nodo1", "drbdadm dstate r0"), "UpToDate/UpToDate\n");

    let before = resync_starts(&lab.log("nodo1"), "nodo2").len();
    lab.ok("nodo2", "drbdadm invalidate r0");
    wait_for_log(&lab, "nodo1", &full, Duration::from_secs(30));
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(120));
    lab.ok("nodo2", "drbdadm wait-sync r0");
    // From the Primary, the same the other way round.
    lab.ok("nodo1", "drbdadm invalidate-remote r0");
    let starts = || resync_starts(&lab.log("nodo1"), "nodo2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts().len() < before + 2 {
        assert!(Instant::now() < deadline, "{:?}", starts());
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(120));
    lab.ok("nodo2", "drbdadm wait-sync r0");
    let starts = starts();
    assert_eq!(starts.len(), before + 2, "{starts:?}");
    assert!(
        starts[before..].iter().all(|s| s.contains(&full)),
        "{starts:?}"
    );
    assert_disks_identical(&lab);
}

#[test]
fn new_current_uuid_clear_bitmap_skips_the_initial_sync() {
    let lab = TestLab::up("vd-skip-sync", 2);
    lab.up_fresh_r0();
    assert_eq!(
        lab.ok("nodo1", "drbdadm dstate r0"),
        "Inconsistent/Inconsistent\n"
    );
    // The older form, options before the command.
    lab.ok("nodo1", "drbdadm -- --clear-bitmap new-current-uuid r0");
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(30));
    lab.wait_status("nodo2", "r0", IN_SYNC, Duration::from_secs(30));
    for node in ["nodo1", "nodo2"] {
        let log = lab.log(node);
        assert!(!log.contains("resync with"), "{node}:\n{log}");
    }
    let again = lab.sh("nodo2", "drbdadm new-current-uuid --clear-bitmap r0 2>&1");
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.contains("not a just-created one"), "{said}");

    // Primary without --force; writes replicate; the disks, never synced,
    // are identical.
    lab.ok("nodo1", "drbdadm primary r0");
    lab.ok(
        "nodo1",
        "dd if=/dev/urandom of=/dev/drbd1 bs=4096 count=64 seek=1000 oflag=direct status=none",
    );
    assert_disks_identical(&lab);
}

#[test]
fn pause_sync_holds_the_initial_sync_until_both_sides_resume() {
    let lab = TestLab::up("vd-pause", 2);
    lab.up_fresh_r0();
    lab.ok(
        "nodo1",
        "drbdadm pause-sync r0 && drbdadm primary --force r0",
    );
    let source = "replication:PausedSyncS peer-disk:Inconsistent done:0.00 resync-suspended:user";
    let target = "replication:PausedSyncT peer-disk:UpToDate done:0.00 resync-suspended:peer";
    lab.wait_status("nodo2", "r0", target, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.ok("nodo1", "drbdadm status r0").contains(source));
    assert!(lab.ok("nodo2", "drbdadm status r0").contains(target));

    // Paused on both sides: resuming one is not enough.
    lab.ok("nodo2", "drbdadm pause-sync r0");
    lab.wait_status(
        "nodo1",
        "r0",
        "done:0.00 resync-suspended:user,peer",
        Duration::from_secs(10),
    );
    lab.ok("nodo1", "drbdadm resume-sync r0");
    lab.wait_status(
        "nodo1",
        "r0",
        "replication:PausedSyncS peer-disk:Inconsistent done:0.00 resync-suspended:peer",
        Duration::from_secs(10),
    );
    lab.ok("nodo2", "drbdadm resume-sync r0");
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(120));
    lab.ok("nodo2", "drbdadm wait-sync r0");
    assert_disks_identical(&lab);
}

#[test]
fn outdate_bars_promotion_until_the_secondary_is_back_in_sync() {
    let lab = TestLab::up("vd-outdate", 2);
    lab.bring_up_r0();
    let connected = lab.sh("nodo2", "drbdadm outdate r0 2>&1");
    assert!(!connected.status.success());
    let said = String::from_utf8_lossy(&connected.stdout);
    assert!(
        said.contains("Refusing to be Outdated while Connected"),
        "{said}"
    );
    assert!(!lab.sh("nodo1", "drbdadm outdate r0").status.success());

    // Both Secondary, so nothing moves on while they are apart.
    lab.ok("nodo1", "drbdadm secondary r0");
    lab.ok("nodo2", "drbdadm disconnect r0 && drbdadm outdate r0");
    assert_eq!(lab.ok("nodo2", "drbdadm dstate r0"), "Outdated/DUnknown\n");
    let promote = lab.sh("nodo2", "drbdadm primary r0 2>&1");
    assert!(!promote.status.success());
    let said = String::from_utf8_lossy(&promote.stdout);
    assert!(said.contains("Need access to UpToDate data"), "{said}");

    // Kept in the meta-data as the real drbdmeta reads it: consistent, not
    // up to date, clean.
    let resyncs = || lab.log("nodo2").matches("resync with").count();
    let before = resyncs();
    lab.ok("nodo2", "drbdadm down r0");
    let dump = lab.ok(
        "nodo2",
        "DRBD_DRIVER_VERSION_OVERRIDE=9.2.0 drbdmeta --force 1 v09 /dev/sdc internal dump-md 2>/dev/null",
    );
    assert!(dump.contains("flags 0x00000081;"), "{dump}");

    // Back with its UpToDate peer of the same generation: UpToDate, nothing
    // resynced.
    lab.ok("nodo2", "drbdadm up r0 && drbdadm wait-connect r0");
    lab.wait_status("nodo2", "r0", IN_SYNC, Duration::from_secs(30));
    assert_eq!(lab.ok("nodo2", "drbdadm dstate r0"), "UpToDate/UpToDate\n");
    assert_eq!(resyncs(), before, "{}", lab.log("nodo2"));
}

#[test]
fn detach_and_attach_on_the_secondary_resync_only_the_blocks_written_meanwhile() {
    let lab = TestLab::up("vd-detach", 2);
    lab.bring_up_r0();

    let before = resync_starts(&lab.log("nodo1"), "nodo2").len();
    lab.ok("nodo2", "drbdadm detach r0");
    assert!(
        lab.ok("nodo2", "drbdadm status r0")
            .contains("r0 role:Secondary\n  disk:Diskless\n"),
        "{}",
        lab.ok("nodo2", "drbdadm status r0")
    );
    lab.wait_status(
        "nodo1",
        "r0",
        "replication:Established peer-disk:Diskless",
        Duration::from_secs(10),
    );
    // 10 scattered blocks written on the Primary while the Secondary has no disk.
    lab.ok(
        "nodo1",
        "for i in $(seq 0 9); do dd if=/dev/urandom of=/dev/drbd1 bs=4096 count=1 seek=$((i * 9973)) oflag=direct status=none || exit 1; done",
    );
    lab.ok("nodo2", "drbdadm attach r0");
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(60));
    lab.ok("nodo2", "drbdadm wait-sync r0");
    assert!(lab
        .ok("nodo2", "drbdadm status r0")
        .contains("  disk:UpToDate\n"));
    let starts = resync_starts(&lab.log("nodo1"), "nodo2");
    assert_eq!(starts.len(), before + 1, "{starts:?}");
    assert!(
        starts[before].contains("started as SyncSource (40 KiB out of sync)"),
        "only the 10 written blocks: {starts:?}"
    );
    assert_disks_identical(&lab);
}

/// The `done:` percentage in a status line, if any.
fn done_percent(status: &str) -> Option<f64> {
    let at = status.find("done:")? + "done:".len();
    status[at..].split_whitespace().next()?.parse().ok()
}

#[test]
fn a_resync_rate_limit_holds_the_sync_back_until_adjust_lifts_it() {
    let lab = TestLab::up("vd-rate", 2);
    // DRBD 9: the dynamic controller (c-plan-ahead > 0) goes no faster than
    // c-max-rate.
    let limited = R0.replace(
        "  syncer {",
        "  disk {\n    c-max-rate 4M;\n  }\n  syncer {",
    );
    lab.up_fresh(&limited);
    lab.ok("nodo1", "drbdadm primary --force r0");
    let started = Instant::now();
    // Meanwhile `wait-sync` on a terminal (a pseudo-terminal from `script`)
    // draws the resync's progress, until `timeout` ends it.
    let waiting = lab.sh(
        "nodo1",
        "timeout 3 script -qfec 'drbdadm wait-sync r0' /dev/null",
    );
    let drawn = String::from_utf8_lossy(&waiting.stdout);
    assert!(
        drawn.contains("\rr0 SyncSource: [") && drawn.contains("%"),
        "{drawn:?}"
    );
    let status = lab.ok("nodo1", "drbdadm status r0");
    let seconds = started.elapsed().as_secs_f64();
    let done = done_percent(&status).unwrap_or_else(|| panic!("no done: in\n{status}"));
    // 4 MiB/s of the 1 GiB disk is 0.39% a second; unlimited, the lab's disks
    // sync the whole of it in well under a second.
    let most = 0.39 * (seconds + 0.5);
    assert!(
        done > 0.0 && done < most,
        "done:{done} after {seconds:.1} s at 4 MiB/s (at most {most:.2}):\n{status}"
    );
    assert!(status.contains("replication:SyncSource"), "{status}");
    // The control socket is root's: another user is told so.
    let denied = lab.sh(
        "nodo1",
        "setpriv --reuid=65534 --regid=65534 --clear-groups drbdadm status r0",
    );
    let said = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && said.contains("tandemd.sock: permission denied"),
        "{said}"
    );

    // The limit gone from the configuration, `adjust` applies it to the
    // running resource.
    lab.install_r0("nodo1", R0);
    lab.ok("nodo1", "drbdadm adjust r0");
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(60));
    lab.ok("nodo2", "drbdadm wait-sync r0");
    assert_disks_identical(&lab);
}

#[test]
fn a_primary_detaches_goes_on_with_the_peers_disk_and_attaches_it_again_as_sync_target() {
    let lab = TestLab::up("vd-pdetach", 2);
    lab.bring_up_r0();
    let before = resync_starts(&lab.log("nodo2"), "nodo1").len();
    lab.ok("nodo1", "drbdadm detach r0");
    let status = lab.ok("nodo1", "drbdadm status r0");
    assert!(
        status.contains("r0 role:Primary\n  disk:Diskless\n") && status.contains(IN_SYNC),
        "{status}"
    );
    lab.wait_status(
        "nodo2",
        "r0",
        "replication:Established peer-disk:Diskless",
        Duration::from_secs(10),
    );

    // 10 scattered blocks written and read back through the diskless
    // Primary's device: only nodo2's disk has them.
    let dir = lab.dir.join("pd");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.display();
    lab.ok(
        "nodo1",
        &format!(
            "for i in $(seq 0 9); do dd if=/dev/urandom of={dir}/$i bs=4096 count=1 status=none && \
             dd if={dir}/$i of=/dev/drbd1 bs=4096 seek=$((i * 9973)) oflag=direct conv=notrunc status=none || exit 1; done"
        ),
    );
    lab.ok(
        "nodo1",
        &format!(
            "for i in $(seq 0 9); do dd if=/dev/drbd1 of={dir}/back bs=4096 count=1 skip=$((i * 9973)) iflag=direct status=none && \
             cmp {dir}/$i {dir}/back || exit 1; done"
        ),
    );

    // The peer's disk is the only one: it stays.
    let refused = lab.sh("nodo2", "drbdadm detach r0");
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr)
                .contains("a Primary without UpToDate data of its own uses this disk"),
        "{refused:?}"
    );

    // The Primary takes its disk back and stays Primary: the disk is
    // resynced as target, only the 10 blocks it missed, and meanwhile the
    // device still reads what was written.
    let before_target = resync_starts(&lab.log("nodo1"), "nodo2").len();
    lab.ok("nodo1", "drbdadm attach r0");
    let starts = wait_for_resync_start(&lab, "nodo2", "nodo1", before);
    assert!(
        starts[before].contains("started as SyncSource (40 KiB out of sync)"),
        "only the 10 blocks written while nodo1 had no disk: {starts:?}"
    );
    let starts = wait_for_resync_start(&lab, "nodo1", "nodo2", before_target);
    assert!(
        starts[before_target].contains("started as SyncTarget (40 KiB out of sync)"),
        "{starts:?}"
    );
    lab.ok(
        "nodo1",
        &format!(
            "for i in $(seq 0 9); do dd if=/dev/drbd1 of={dir}/back bs=4096 count=1 skip=$((i * 9973)) iflag=direct status=none && \
             cmp {dir}/$i {dir}/back || exit 1; done"
        ),
    );
    lab.ok("nodo1", "drbdadm wait-sync r0");
    let status = lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(60));
    assert!(
        status.starts_with("r0 role:Primary\n  disk:UpToDate\n"),
        "{status}"
    );
    lab.wait_status("nodo2", "r0", IN_SYNC, Duration::from_secs(60));
    lab.ok("nodo1", "drbdadm secondary r0");
    assert_disks_identical(&lab);
}

/// A 1 GiB disk that fails every read and write while a trigger file exists:
/// `nbdkit memory` behind its error filter, as a file through `nbdfuse`, as a
/// loop device with direct I/O. Dropping it takes it all down.
struct FailingDisk {
    dir: PathBuf,
    nbdkit: Child,
    nbdfuse: Option<Child>,
    loop_device: Option<String>,
}

impl FailingDisk {
    fn new(dir: &Path) -> FailingDisk {
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        let socket = dir.join("nbd.sock");
        let nbdkit = Command::new("nbdkit")
            .args(["--exit-with-parent", "-f", "-U"])
            .arg(&socket)
            .args([
                "--filter=error",
                "memory",
                "1G",
                "error=EIO",
                "error-rate=100%",
            ])
            .arg(format!("error-file={}", dir.join("fail").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nbdkit (scripts/install installs it)");
        let mut disk = FailingDisk {
            dir: dir.to_path_buf(),
            nbdkit,
            nbdfuse: None,
            loop_device: None,
        };
        wait_for(|| socket.exists(), "nbdkit's socket");
        let file = dir.join("mnt/disk");
        disk.nbdfuse = Some(
            Command::new("nbdfuse")
                .arg(&file)
                .arg(format!("nbd+unix:///?socket={}", socket.display()))
                .stderr(Stdio::null())
                .spawn()
                .expect("nbdfuse"),
        );
        wait_for(|| file.exists(), "nbdfuse's file");
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        disk.loop_device = Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
        disk
    }

    fn device(&self) -> &str {
        self.loop_device.as_deref().unwrap()
    }

    /// Every read and write fails from now on (`true`), or none does.
    fn set_failing(&self, failing: bool) {
        let trigger = self.dir.join("fail");
        if failing {
            std::fs::write(trigger, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(trigger);
        }
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        if let Some(device) = self.loop_device.take() {
            let _ = Command::new("losetup").args(["-d", &device]).status();
        }
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(self.dir.join("mnt"))
            .status();
        for child in self.nbdfuse.iter_mut().chain([&mut self.nbdkit]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(done: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "no {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A lab whose failing disk outlives it: fields drop in order, so the lab
/// (whose `down` lets go of the disk) goes first, even after a failed assert.
struct LabWithFailingDisk {
    lab: TestLab,
    disk: FailingDisk,
}

#[test]
fn on_io_error_pass_on_fails_the_write_and_detach_goes_on_with_the_peers_disk() {
    let lab = TestLab::up("vd-ioerr", 2);
    let disk = FailingDisk::new(&lab.dir.join("failing"));
    let setup = LabWithFailingDisk { lab, disk };
    let (lab, disk) = (&setup.lab, &setup.disk);
    let rdev = std::fs::metadata(disk.device()).unwrap().rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    lab.ok("nodo1", &format!("mknod /dev/failing b {major} {minor}"));
    let config = R0.replacen("disk /dev/sdc;", "disk /dev/failing;", 1);
    assert!(
        config.contains("on nodo1 {\n    disk /dev/failing;"),
        "{config}"
    );
    let pass_on = config.replace(
        "  syncer {",
        "  disk {\n    on-io-error pass_on;\n  }\n  syncer {",
    );
    lab.up_fresh(&pass_on);
    // Both disks are fresh: no initial sync needed.
    lab.ok(
        "nodo1",
        "drbdadm new-current-uuid --clear-bitmap r0 && drbdadm primary r0",
    );
    lab.wait_status("nodo1", "r0", IN_SYNC, Duration::from_secs(10));

    let dir = lab.dir.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.display();
    lab.ok(
        "nodo1",
        &format!(
            "head -c 4M /dev/urandom > {dir}/a && head -c 4M /dev/urandom > {dir}/b && \
             dd if={dir}/a of=/dev/drbd1 bs=1M oflag=direct status=none"
        ),
    );
    // nodo1's disk fails. Under `on-io-error pass_on` the write fails and
    // the disk stays.
    disk.set_failing(true);
    let failed = lab.sh(
        "nodo1",
        &format!("dd if={dir}/b of=/dev/drbd1 bs=1M seek=8 oflag=direct status=none"),
    );
    assert!(!failed.status.success(), "{failed:?}");
    assert!(lab
        .ok("nodo1", "drbdadm status r0")
        .contains("r0 role:Primary\n  disk:UpToDate\n"));
    // Under `detach` (the default; `adjust` applies the configuration) the
    // next write fails there, is on nodo2, and succeeds; nodo1 goes on
    // without its disk.
    lab.install_r0("nodo1", &config);
    lab.ok("nodo1", "drbdadm adjust r0");
    lab.ok(
        "nodo1",
        &format!("dd if={dir}/b of=/dev/drbd1 bs=1M seek=8 oflag=direct status=none"),
    );
    let status = lab.ok("nodo1", "drbdadm status r0");
    assert!(
        status.contains("r0 role:Primary\n  disk:Diskless\n"),
        "{status}"
    );
    assert!(lab
        .log("nodo1")
        .contains("the disk failed (on-io-error detach)"));
    lab.ok(
        "nodo1",
        &format!(
            "dd if=/dev/drbd1 bs=1M count=4 iflag=direct status=none | cmp - {dir}/a && \
             dd if=/dev/drbd1 bs=1M skip=8 count=4 iflag=direct status=none | cmp - {dir}/b"
        ),
    );

    // The disk works again; taken back (as Secondary), it is copied in full:
    // a disk that failed holds nothing to trust.
    disk.set_failing(false);
    let before = resync_starts(&lab.log("nodo2"), "nodo1").len();
    lab.ok("nodo1", "drbdadm secondary r0 && drbdadm attach r0");
    let starts = wait_for_resync_start(lab, "nodo2", "nodo1", before);
    let kib = lab
        .ok("nodo2", "blockdev --getsize64 /dev/drbd1")
        .trim()
        .parse::<u64>()
        .unwrap()
        / 1024;
    assert!(
        starts[before].contains(&format!("started as SyncSource ({kib} KiB out of sync)")),
        "a full resync of {kib} KiB: {starts:?}"
    );
    lab.ok("nodo1", "drbdadm wait-sync r0");
    lab.ok(
        "nodo1",
        &format!(
            "dd if=/dev/failing bs=1M count=4 iflag=direct status=none | cmp - {dir}/a && \
             dd if=/dev/failing bs=1M skip=8 count=4 iflag=direct status=none | cmp - {dir}/b"
        ),
    );
    lab.ok("nodo1", "drbdadm down r0");
    lab.ok("nodo2", "drbdadm down r0");
}
