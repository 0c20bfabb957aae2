//! The real kernel judges `tandem mkfs.ocfs2`: for each feature level, the stock
//! Debian 6.1 ocfs2 driver (booted under QEMU by `vmtest`) mounts our volume
//! (local mount), writes, renames, links and deletes files, and unmounts
//! cleanly; then the real `fsck.ocfs2 -fn` on the host finds nothing wrong and
//! the kernel logged no error.
//!
//! One VM run mounts all three volumes in turn, so the test pays for one boot.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vmtest::{Guest, Vm};

const FSCK: &str = "/usr/sbin/fsck.ocfs2";

/// The volumes: a name (also the disk serial), and mkfs options.
const VOLUMES: &[(&str, &[&str])] = &[
    (
        "max-compat",
        &["-b", "1K", "-C", "4K", "--fs-feature-level=max-compat"],
    ),
    (
        "default",
        &["-b", "4K", "-C", "4K", "--fs-feature-level=default"],
    ),
    (
        "max-features",
        &["-b", "4K", "-C", "64K", "--fs-feature-level=max-features"],
    ),
];

/// The guest script's function, called once per volume (`$1`: the disk
/// serial). set -e ends the script at the first failed step, so a refused mount
/// or a failed write fails the test with the console showing which.
const GUEST_SCRIPT: &str = r#"
set -e
exercise() {
    dev=/dev/disk/by-serial/$1
    m=/mnt/$1
    mkdir -p $m
    mount -t ocfs2 $dev $m
    mkdir -p $m/a/b/c/d
    echo small > $m/a/small
    seq 1 20000 > $m/a/b/seq.txt
    dd if=/dev/urandom of=$m/a/b/c/random bs=64k count=40 2>/dev/null
    dd if=/dev/urandom of=$m/sparse bs=4k count=1 seek=3000 2>/dev/null
    for i in $(seq 1 300); do echo "file $i" > $m/a/b/c/d/f$i; done
    ln -s small $m/a/short-link
    ln -s $(printf 'x%.0s' $(seq 1 300)) $m/a/long-link
    ln $m/a/small $m/a/hard
    mv $m/a/b/seq.txt $m/seq.txt
    rm $m/a/b/c/d/f1 $m/a/b/c/d/f2
    truncate -s 100000 $m/a/b/c/random
    sync
    ls -lR $m > /out/$1.ls
    umount $m
    echo "$1 ok"
}
"#;

fn fsck_problems(img: &Path) -> Vec<String> {
    let p = img.display().to_string();
    let out = vmtest::run_bounded(120, FSCK, &["-fn", p.as_str()]).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fsck.ocfs2 -fn {p} exited {}:\n{text}",
        out.status
    );
    // fsck.ocfs2 -fn exits 0 even when it finds problems: each one is a line
    // starting with a bracketed code such as [INODE_COUNT].
    text.lines()
        .filter(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .is_some_and(|(code, _)| {
                    !code.is_empty()
                        && code
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
        })
        .map(|l| format!("{p}: {l}"))
        .collect()
}

#[test]
fn kernel_mounts_and_writes_our_volumes_and_fsck_finds_them_clean() {
    assert!(
        Path::new(FSCK).exists(),
        "{FSCK} is missing: run scripts/install"
    );
    let vm = Vm::locate().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();

    let mut script = GUEST_SCRIPT.to_string();
    let mut guest_disks = Vec::new();
    for (name, args) in VOLUMES {
        let img = dir.path().join(format!("{name}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let out = Command::new("timeout")
            .args(["60", env!("CARGO_BIN_EXE_tandem"), "mkfs.ocfs2", "-F", "-q"])
            .args(["-M", "local", "-L", name])
            .args(*args)
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tandem mkfs.ocfs2 {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        script.push_str(&format!("exercise {name}\n"));
        guest_disks.push((img, *name));
    }
    script.push_str("dmesg > /out/dmesg\n");

    let mut guest = Guest::new(script).timeout(Duration::from_secs(90));
    for (img, name) in &guest_disks {
        guest = guest.disk(img, name);
    }
    let outcome = vm.run(&guest).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "VM run took {:?}; console:\n{}",
        outcome.elapsed, outcome.console
    );
    outcome.assert_success();
    for (_, name) in &guest_disks {
        assert!(
            outcome.console.contains(&format!("{name} ok")),
            "{name} was not exercised; console:\n{}",
            outcome.console
        );
    }
    let dmesg = std::fs::read_to_string(outcome.out_file("dmesg")).unwrap();
    let errors: Vec<&str> = dmesg
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("error"))
        .collect();
    assert!(errors.is_empty(), "the kernel logged errors:\n{dmesg}");

    let problems: Vec<String> = guest_disks
        .iter()
        .flat_map(|(img, _)| fsck_problems(img))
        .collect();
    assert!(
        problems.is_empty(),
        "fsck.ocfs2 -fn found problems:\n{}",
        problems.join("\n")
    );
}
