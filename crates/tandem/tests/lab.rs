//! The lab, end to end, through the real `tandem` binary: real namespaces, real
//! loop devices, the real drbd-utils as the reference for `drbdadm dump`.
//!
//! Needs root (CI runs as root). Each test gets its own lab directory, so tests
//! run in parallel; a guard takes the lab down even when a test fails.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

/// A lab in a directory of its own, taken down when dropped.
struct TestLab {
    dir: PathBuf,
}

impl TestLab {
    fn up(name: &str, nodes: usize) -> TestLab {
        let dir = std::env::temp_dir().join(format!("tandem-test-{name}-{}", std::process::id()));
        let lab = TestLab { dir };
        // A leftover of an earlier, killed run of this very test.
        lab.tandem(&["lab", "down"]);
        let out = lab.tandem(&["lab", "up", "--nodes", &nodes.to_string()]);
        assert_success(&out, "lab up");
        lab
    }

    fn tandem(&self, args: &[&str]) -> Output {
        Command::new(TANDEM)
            .args(args)
            .env("TANDEM_LAB_DIR", &self.dir)
            .output()
            .expect("running tandem")
    }

    /// `tandem lab exec NODE -- sh -c SCRIPT`.
    fn sh(&self, node: &str, script: &str) -> Output {
        self.tandem(&["lab", "exec", node, "--", "sh", "-c", script])
    }

    fn sh_ok(&self, node: &str, script: &str) -> String {
        let out = self.sh(node, script);
        assert_success(&out, &format!("{node}: {script}"));
        String::from_utf8(out.stdout).unwrap()
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

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn loop_devices_under(dir: &Path) -> Vec<String> {
    lab::attached_loop_devices()
        .into_iter()
        .filter(|(_, backing)| backing.starts_with(dir))
        .map(|(dev, _)| dev)
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(String::from)
        .collect()
}

/// Processes whose mount namespace has inode `ns`.
fn processes_in(ns: u64) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let meta = std::fs::metadata(e.path().join("ns/mnt")).ok()?;
            (meta.ino() == ns).then_some(pid)
        })
        .collect()
}

#[test]
fn nodes_are_machines_of_their_own_and_down_leaves_nothing() {
    let lab = TestLab::up("machines", 2);

    assert_eq!(lab.sh_ok("nodo1", "hostname"), "nodo1\n");
    assert_eq!(lab.sh_ok("nodo2", "uname -n"), "nodo2\n");

    // Two 1 GiB block devices per node, and they are different devices.
    let listing = lab.sh_ok("nodo2", "ls -l /dev/sdb /dev/sdc");
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.lines().all(|l| l.starts_with('b')), "{listing}");
    let sizes = lab.sh_ok("nodo2", "blockdev --getsize64 /dev/sdb /dev/sdc");
    assert_eq!(sizes, "1073741824\n1073741824\n");
    let devices = |node| lab.sh_ok(node, "stat -c %t:%T /dev/sdb /dev/sdc");
    let (d1, d2) = (devices("nodo1"), devices("nodo2"));
    let all: std::collections::HashSet<&str> = d1.lines().chain(d2.lines()).collect();
    assert_eq!(all.len(), 4, "every disk is its own device: {d1} {d2}");

    // Writing a node's disk does not touch the other node's.
    lab.sh_ok(
        "nodo1",
        "printf nodo1-data | dd of=/dev/sdb bs=512 seek=8 conv=fsync 2>/dev/null",
    );
    assert_eq!(
        lab.sh_ok(
            "nodo1",
            "dd if=/dev/sdb bs=512 skip=8 count=1 2>/dev/null | head -c 10"
        ),
        "nodo1-data"
    );
    assert_eq!(lab.sh_ok("nodo2", "dd if=/dev/sdb bs=512 skip=8 count=1 2>/dev/null | od -An -c | head -1 | tr -d ' \\\\0\\n'"), "");

    // Each node has its own /etc/drbd.d, and the host's is untouched.
    lab.sh_ok("nodo1", "echo '# nodo1 only' > /etc/drbd.d/only-here.res");
    assert!(lab
        .sh_ok("nodo1", "ls /etc/drbd.d")
        .contains("only-here.res"));
    assert!(!lab
        .sh_ok("nodo2", "ls /etc/drbd.d")
        .contains("only-here.res"));
    assert!(!Path::new("/etc/drbd.d/only-here.res").exists());
    for node in ["nodo1", "nodo2"] {
        lab.sh_ok(
            node,
            "test -f /etc/drbd.conf && test -d /etc/ocfs2 && test ! -e /etc/default/o2cb",
        );
    }
    // Private /mnt and /run: a mount in one node is invisible elsewhere.
    lab.sh_ok(
        "nodo1",
        "mount -t tmpfs scratch /mnt && touch /mnt/in-nodo1",
    );
    assert_eq!(
        lab.sh("nodo2", "test -e /mnt/in-nodo1").status.code(),
        Some(1)
    );
    assert!(!Path::new("/mnt/in-nodo1").exists());

    // Every node's address is on the lab's loopback, none on the host's.
    let addresses = lab.sh_ok("nodo1", "ip -4 -o address show dev lo");
    assert!(
        addresses.contains("127.0.0.11/8") && addresses.contains("127.0.0.12/8"),
        "{addresses}"
    );
    let host = Command::new("ip")
        .args(["-4", "-o", "address", "show", "dev", "lo"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("127.0.0.11/"));

    // The exit status is the command's.
    assert_eq!(lab.sh("nodo1", "exit 7").status.code(), Some(7));
    // The compatibility names come first on PATH.
    let drbdadm = lab.sh_ok("nodo1", "command -v drbdadm");
    assert!(drbdadm.starts_with(lab.dir.to_str().unwrap()), "{drbdadm}");

    // Status lists nodes, addresses, disks, processes and mounts.
    let status = lab.tandem(&["lab", "status"]);
    assert_success(&status, "lab status");
    let status = String::from_utf8(status.stdout).unwrap();
    for expected in [
        "nodo1  address 127.0.0.11",
        "nodo2  address 127.0.0.12",
        "disk /dev/sdb: /dev/loop",
        "mount scratch on /mnt type tmpfs",
    ] {
        assert!(
            status.contains(expected),
            "status lacks {expected:?}:\n{status}"
        );
    }

    // A detached process inside a node: it survives the command that started it,
    // appears in status, and down stops it.
    lab.sh_ok("nodo2", "setsid -f sleep 1000 </dev/null >/dev/null 2>&1");
    std::thread::sleep(Duration::from_millis(200));
    let ns = std::fs::metadata(lab.dir.join("nodes/nodo2/ns/mnt"))
        .unwrap()
        .ino();
    let sleepers = processes_in(ns);
    assert_eq!(
        sleepers.len(),
        1,
        "the detached sleep runs in nodo2: {sleepers:?}"
    );
    let status = String::from_utf8(lab.tandem(&["lab", "status"]).stdout).unwrap();
    assert!(status.contains("sleep 1000"), "{status}");

    assert!(!loop_devices_under(&lab.dir).is_empty());
    let out = lab.tandem(&["lab", "down"]);
    assert_success(&out, "lab down");
    assert!(
        loop_devices_under(&lab.dir).is_empty(),
        "loop devices left: {:?}",
        loop_devices_under(&lab.dir)
    );
    assert!(
        mounts_under(&lab.dir).is_empty(),
        "mounts left: {:?}",
        mounts_under(&lab.dir)
    );
    assert!(processes_in(ns).is_empty(), "processes left in nodo2");
    assert!(!lab.dir.exists(), "the lab directory is gone");
    // The namespace itself is gone: nothing on the host refers to it any more.
    let ns_name = format!("mnt:[{ns}]");
    let holders: Vec<_> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&ns_name))
        .map(String::from)
        .collect();
    assert!(holders.is_empty(), "{holders:?}");

    // Safe twice.
    assert_success(&lab.tandem(&["lab", "down"]), "second lab down");
}

#[test]
fn down_cleans_up_a_half_made_lab() {
    let dir = std::env::temp_dir().join(format!("tandem-test-half-{}", std::process::id()));
    let lab = TestLab { dir: dir.clone() };
    assert_success(&lab.tandem(&["lab", "up", "--nodes", "1"]), "lab up");
    // Break it the way an interrupted `up` would leave it: a node whose namespaces
    // were never made, with a disk already attached.
    let half = dir.join("nodes/nodo9");
    std::fs::create_dir_all(half.join("disks")).unwrap();
    std::fs::create_dir_all(half.join("ns")).unwrap();
    std::fs::File::create(half.join("ns/mnt")).unwrap();
    let image = half.join("disks/sdb.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    assert_success(&out, "losetup");

    let status = String::from_utf8(lab.tandem(&["lab", "status"]).stdout).unwrap();
    assert!(
        status.contains("nodo9") && status.contains("half-made"),
        "{status}"
    );

    assert_success(&lab.tandem(&["lab", "down"]), "lab down");
    assert!(loop_devices_under(&dir).is_empty());
    assert!(mounts_under(&dir).is_empty());
    assert!(!dir.exists());
}

#[test]
fn exec_in_a_missing_node_or_lab_is_a_clear_error() {
    let lab = TestLab::up("missing", 1);
    let out = lab.tandem(&["lab", "exec", "nodo7", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node \"nodo7\""), "{err}");

    let nolab = Command::new(TANDEM)
        .args(["lab", "exec", "nodo1", "--", "true"])
        .env("TANDEM_LAB_DIR", "/nonexistent/tandem-lab")
        .output()
        .unwrap();
    assert!(!nolab.status.success());
    assert!(String::from_utf8_lossy(&nolab.stderr).contains("is the lab up?"));
}

/// The seed's two resource files, with the lab's addresses.
fn seed_resource(name: &str, disk: &str, port: u16, device: &str) -> String {
    format!(
        "resource {name} {{ \n  protocol C;\n  meta-disk internal;\n  device {device};\n  syncer {{\n    verify-alg sha1;\n  }}\n  net {{\n    allow-two-primaries;\n  }}\n  on nodo1 {{\n    disk {disk};\n    address 127.0.0.11:{port};\n  }}\n  on nodo2 {{\n    disk {disk};\n    address 127.0.0.12:{port};\n  }}\n}}\n"
    )
}

#[test]
fn the_seed_resources_dump_identically_with_ours_and_the_real_drbdadm_in_a_node() {
    assert!(
        Path::new("/usr/sbin/drbdadm").exists(),
        "the real drbdadm is missing: install drbd-utils (scripts/install test does)"
    );
    let lab = TestLab::up("seed-dump", 2);
    for node in ["nodo1", "nodo2"] {
        let files = [
            (
                "wwwdata",
                seed_resource("wwwdata", "/dev/sdc", 7789, "/dev/drbd1"),
            ),
            (
                "dbdata",
                seed_resource("dbdata", "/dev/sdb", 7790, "/dev/drbd2"),
            ),
        ];
        for (name, text) in files {
            let path = lab.dir.join(format!("{name}.res.in"));
            std::fs::write(&path, text).unwrap();
            lab.sh_ok(
                node,
                &format!("cp {} /etc/drbd.d/{name}.res", path.display()),
            );
        }
        let env = "DRBD_DRIVER_VERSION_OVERRIDE=9.2.0";
        let ours = lab.sh_ok(node, "drbdadm dump");
        let real = lab.sh_ok(node, &format!("{env} /usr/sbin/drbdadm dump"));
        assert_eq!(ours, real, "{node}: ours vs the real drbdadm");
        // What a user checks: this host's section is the node's, with its address.
        let address = if node == "nodo1" {
            "127.0.0.11"
        } else {
            "127.0.0.12"
        };
        let words = ours.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains(&format!("on {node} {{")), "{ours}");
        assert!(
            words.contains(&format!("address ipv4 {address}:7789;")),
            "{ours}"
        );
        for resource in ["wwwdata", "dbdata"] {
            let ours = lab.sh_ok(node, &format!("drbdadm dump {resource}"));
            let real = lab.sh_ok(node, &format!("{env} /usr/sbin/drbdadm dump {resource}"));
            assert_eq!(ours, real, "{node}: dump {resource}");
        }
    }
}
