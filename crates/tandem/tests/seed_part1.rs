//! Seed part 1 (steps 2-10) end to end in the lab, with the seed's own command
//! lines: real daemons, real TCP, real FUSE and loop devices, the kernel's XFS.
//!
//! Needs root. Every external command runs under `timeout`, and a guard takes the
//! lab (daemons, mounts, loop devices) down even when an assertion fails.

use std::process::Command;
use std::time::Duration;

mod common;

use common::TestLab;

/// The seed's wwwdata.res with the lab's addresses.
const WWWDATA: &str = "resource wwwdata { 
  protocol C;
  meta-disk internal;
  device /dev/drbd1;
  syncer {
    verify-alg sha1;
  }
  net {
    allow-two-primaries;
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

/// Steps 2-5: configuration, create-md, up on both, primary --force on nodo1.
/// Creates the meta-data and starts the resource on both nodes; `nodo2_env`
/// prefixes nodo2's `drbdadm up` (the daemon it starts inherits it).
fn bring_up(lab: &TestLab, nodo2_env: &str) {
    let res = lab.dir.join("wwwdata.res");
    std::fs::write(&res, WWWDATA).unwrap();
    for node in ["nodo1", "nodo2"] {
        lab.ok(
            node,
            &format!("cp {} /etc/drbd.d/wwwdata.res", res.display()),
        );
        let out = lab.sh(node, "drbdadm create-md wwwdata 2>&1");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        for line in [
            "initializing activity log",
            "initializing bitmap (32 KB) to all zero",
            "Writing meta data...",
            "New drbd meta data block successfully created.",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "create-md on {node} lacks {line:?}:\n{text}"
            );
        }
        let env = if node == "nodo2" { nodo2_env } else { "" };
        lab.ok(node, &format!("{env}drbdadm up wwwdata"));
    }
    lab.ok("nodo1", "drbdadm wait-connect wwwdata");
    lab.ok("nodo1", "drbdadm primary --force wwwdata");
}

#[test]
fn seed_part_one_xfs_on_the_primary_refused_on_the_secondary_and_handed_over() {
    let lab = TestLab::up("seed1-xfs", 2);
    bring_up(&lab, "");

    // Step 6: the status while syncing, then in sync.
    let syncing = lab.ok("nodo1", "drbdadm status wwwdata");
    assert!(
        syncing.starts_with("wwwdata role:Primary\n  disk:UpToDate\n  nodo2 role:Secondary\n"),
        "{syncing}"
    );
    let synced = lab.wait_status(
        "nodo1",
        "wwwdata",
        "replication:Established peer-disk:UpToDate",
        Duration::from_secs(120),
    );
    assert_eq!(
        synced,
        "wwwdata role:Primary\n  disk:UpToDate\n  nodo2 role:Secondary\n    replication:Established peer-disk:UpToDate\n\n"
    );
    lab.ok("nodo2", "drbdadm wait-sync wwwdata");
    assert!(lab
        .ok("nodo2", "drbdadm status wwwdata")
        .contains("  disk:UpToDate\n  nodo1 role:Primary\n"));

    // Step 7: XFS on the Primary.
    lab.ok("nodo1", "mkfs.xfs -q /dev/drbd1");
    let content = "Hola desde nodo1: datos replicados con tandem.\n";
    lab.ok(
        "nodo1",
        &format!("mount /dev/drbd1 /mnt && printf '{content}' > /mnt/prueba.txt && sync"),
    );

    // Step 8: the Secondary refuses, and nothing reaches its disk.
    let size: u64 = lab
        .ok("nodo1", "blockdev --getsize64 /dev/drbd1")
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = checksum(&lab.image("nodo2", "sdc"), size);
    let refused = lab.sh("nodo2", "mount /dev/drbd1 /mnt");
    assert!(
        !refused.status.success(),
        "mount on the Secondary succeeded"
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("can't read superblock on /dev/drbd1"),
        "{said}"
    );
    let writes = lab.sh(
        "nodo2",
        "dd if=/dev/zero of=/dev/drbd1 bs=4096 count=1 oflag=direct 2>&1",
    );
    assert!(
        !writes.status.success(),
        "a write on the Secondary succeeded"
    );
    assert_eq!(
        before,
        checksum(&lab.image("nodo2", "sdc"), size),
        "the Secondary's disk changed"
    );
    // Still Secondary (nothing promoted it), connected, both UpToDate.
    assert_eq!(lab.ok("nodo2", "drbdadm role wwwdata"), "Secondary\n");
    assert_eq!(lab.ok("nodo2", "drbdadm cstate wwwdata"), "Connected\n");
    assert_eq!(
        lab.ok("nodo2", "drbdadm dstate wwwdata"),
        "UpToDate/UpToDate\n"
    );
    assert_eq!(lab.ok("nodo1", "drbdadm role wwwdata"), "Primary\n");
    // Demotion is refused while mounted.
    assert!(!lab
        .sh("nodo1", "drbdadm secondary wwwdata")
        .status
        .success());

    // Step 9: hand over.
    lab.ok("nodo1", "umount /mnt && drbdadm secondary wwwdata");
    lab.ok("nodo2", "drbdadm primary wwwdata");

    // Step 10: the file is there, byte for byte, and XFS is clean.
    let read = lab.ok(
        "nodo2",
        "mount /dev/drbd1 /mnt && cat /mnt/prueba.txt && umount /mnt",
    );
    assert_eq!(read, content);
    lab.ok("nodo2", "xfs_repair -n /dev/drbd1 >/dev/null 2>&1");

    lab.ok("nodo2", "drbdadm down wwwdata");
    lab.ok("nodo1", "drbdadm down wwwdata");
    // Down leaves meta-data the real drbdmeta reads: clean, UpToDate.
    let dump = lab.ok("nodo1", "DRBD_DRIVER_VERSION_OVERRIDE=9.2.0 drbdmeta --force 1 v09 /dev/sdc internal dump-md 2>/dev/null");
    assert!(
        dump.contains("flags 0x00000091;") || dump.contains("flags 0x00000095;"),
        "{dump}"
    );
}

fn checksum(image: &std::path::Path, len: u64) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {len} {} | sha1sum", image.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn after_a_disconnect_only_the_written_blocks_are_resynced() {
    let lab = TestLab::up("seed1-resync", 2);
    // nodo2 does its disk I/O on threads, as where io_uring is refused; nodo1
    // through its io_uring.
    bring_up(&lab, "TANDEM_NO_IO_URING=1 ");
    assert!(lab.log("nodo2").contains("io_uring refused"));
    assert!(!lab.log("nodo1").contains("io_uring refused"));
    lab.wait_status(
        "nodo1",
        "wwwdata",
        "replication:Established peer-disk:UpToDate",
        Duration::from_secs(120),
    );

    lab.ok("nodo1", "drbdadm disconnect wwwdata");
    assert!(lab
        .ok("nodo1", "drbdadm status wwwdata")
        .contains("  nodo2 connection:StandAlone\n"));
    // 100 scattered 4 KiB blocks written while the peer is away.
    lab.ok(
        "nodo1",
        "for i in $(seq 0 99); do dd if=/dev/urandom of=/dev/drbd1 bs=4096 count=1 seek=$((i * 617)) oflag=direct status=none || exit 1; done",
    );
    lab.ok("nodo1", "drbdadm connect wwwdata");
    lab.wait_status(
        "nodo1",
        "wwwdata",
        "replication:Established peer-disk:UpToDate",
        Duration::from_secs(60),
    );
    let log = lab.log("nodo1");
    let resyncs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("resync with nodo2 started"))
        .collect();
    assert_eq!(resyncs.len(), 2, "{log}");
    assert!(
        resyncs[1].contains("(400 KiB out of sync)"),
        "only the 100 written blocks: {log}"
    );
    // And only they were copied: sent by nodo1, written by nodo2.
    for (node, peer) in [("nodo1", "nodo2"), ("nodo2", "nodo1")] {
        let log = lab.log(node);
        let finished: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("resync with {peer} finished")))
            .collect();
        assert!(
            finished
                .last()
                .is_some_and(|l| l.contains("(400 KiB copied)")),
            "{node}: {log}"
        );
    }

    // nodo2 (the side that listens) goes down and straight back up: its
    // address is free again at once, and it reconnects.
    for _ in 0..3 {
        lab.ok(
            "nodo2",
            "drbdadm down wwwdata && drbdadm up wwwdata && drbdadm wait-connect wwwdata",
        );
        lab.wait_status(
            "nodo2",
            "wwwdata",
            "replication:Established peer-disk:UpToDate",
            Duration::from_secs(60),
        );
    }

    // Both backing disks are identical outside the meta-data.
    let size: u64 = lab
        .ok("nodo1", "blockdev --getsize64 /dev/drbd1")
        .trim()
        .parse()
        .unwrap();
    lab.ok("nodo1", "drbdadm down wwwdata");
    lab.ok("nodo2", "drbdadm down wwwdata");
    assert_eq!(
        checksum(&lab.image("nodo1", "sdc"), size),
        checksum(&lab.image("nodo2", "sdc"), size)
    );
}

/// A connection's preamble (docs/FORMAT.md): "TNDMCONN", version 1, node id,
/// the resource's name.
fn preamble(node_id: u8, resource: &str) -> Vec<u8> {
    let mut out = b"TNDMCONN".to_vec();
    out.extend_from_slice(&[1, node_id]);
    out.extend_from_slice(&(resource.len() as u16).to_be_bytes());
    out.extend_from_slice(resource.as_bytes());
    out
}

/// A frame's header (docs/FORMAT.md): magic "TNDM", kind, payload length.
fn frame_header(kind: u8, len: u32) -> Vec<u8> {
    let mut out = b"TNDM".to_vec();
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out
}

#[test]
fn a_peer_that_breaks_the_protocol_is_dropped_and_replication_goes_on() {
    let lab = TestLab::up("seed1-bad-peer", 2);
    bring_up(&lab, "");
    lab.ok("nodo1", "drbdadm wait-sync wwwdata");

    // Bad input on nodo2's replication port, from an address of the lab's.
    let nodo2 = "127.0.0.12:7789";
    let send = |bytes: &[u8]| {
        common::send_and_expect_close(common::connect_in_lab(&lab, "127.0.0.14", nodo2), bytes)
    };
    send(b"GET / HTTP/1.0\r\n\r\n garbage garbage");
    send(&preamble(0, "other"));
    send(&preamble(9, "wwwdata"));
    // Passing for nodo1 (node id 0), then frames it would never send: a
    // kind that does not exist, and a large Data frame (read apart from the
    // receive buffer) whose block data is not whole 4 KiB blocks.
    let mut unknown = preamble(0, "wwwdata");
    unknown.extend_from_slice(&frame_header(99, 0));
    send(&unknown);
    let mut ragged = preamble(0, "wwwdata");
    ragged.extend_from_slice(&frame_header(6, 24 + 65_537));
    ragged.extend_from_slice(&[0u8; 24]);
    ragged.extend_from_slice(&vec![0xa5; 65_537]);
    send(&ragged);

    let log = lab.sh("nodo2", "cat /run/tandem/tandemd.log");
    let log = String::from_utf8_lossy(&log.stdout);
    for line in [
        "garbage instead of a tandem preamble",
        "wrong resource 'other' (this is 'wwwdata')",
        "unknown node id 9",
        "protocol error from node 0: unknown message kind 99; dropping the connection",
        "protocol error from node 0: Data: field data: 65537 bytes is not a whole number of 4 KiB blocks; dropping the connection",
    ] {
        assert!(log.contains(line), "no {line:?} in nodo2's log:\n{log}");
    }

    // nodo2 kept serving: nodo1 is back in sync with it, and a write on
    // nodo1 reaches nodo2's disk.
    lab.wait_status(
        "nodo1",
        "wwwdata",
        "replication:Established peer-disk:UpToDate",
        Duration::from_secs(60),
    );
    lab.ok(
        "nodo1",
        "head -c 262144 /dev/urandom > /tmp/pattern && \
         dd if=/tmp/pattern of=/dev/drbd1 bs=4096 seek=256 oflag=direct status=none",
    );
    let pattern = lab.ok("nodo1", "sha1sum < /tmp/pattern");
    for node in ["nodo1", "nodo2"] {
        let image = lab.image(node, "sdc");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tail -c +1048577 {} | head -c 262144 | sha1sum",
                image.display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            pattern,
            "{node}'s disk lacks the write"
        );
    }
}
