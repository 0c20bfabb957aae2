//! `tandem mount -o ro`: OCFS2 volumes made by the real mkfs.ocfs2 (every
//! feature level, local and cluster) and by ours, mounted read-only through
//! FUSE; `ls -la`, `stat` and `find` on the mount agree with what the real
//! debugfs.ocfs2 shows. Volumes the reader must not serve are refused with a
//! message that names why: an incompatible feature it does not know, a journal
//! that needs recovery, a file that is not OCFS2, a read-write mount.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
const MKFS: &str = "/usr/sbin/mkfs.ocfs2";
const DEBUGFS: &str = "/usr/sbin/debugfs.ocfs2";

/// Runs a command with a time limit: a hung FUSE server must fail the test,
/// not stall the suite.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn real_mkfs(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    assert!(
        Path::new(MKFS).exists() && Path::new(DEBUGFS).exists(),
        "ocfs2-tools are missing: scripts/install installs them"
    );
    let img = dir.join(name);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let mut all = vec!["-q", "-F"];
    all.extend_from_slice(args);
    let path = img.to_str().unwrap();
    all.push(path);
    let out = run(MKFS, &all);
    assert!(out.status.success(), "mkfs.ocfs2 {args:?}: {}", text(&out));
    img
}

/// A read-only mount that is undone even when the test fails.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn new(img: &Path, dir: PathBuf) -> Mounted {
        std::fs::create_dir_all(&dir).unwrap();
        let out = run(
            TANDEM,
            &[
                "mount",
                "-o",
                "ro",
                img.to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "tandem mount: {}", text(&out));
        Mounted { dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // The server ends by itself once its mount is gone.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// One line of `debugfs.ocfs2 -R "ls -l DIR"`: inode, mode, links, uid, gid,
/// size, name.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    inode: u64,
    mode: String,
    links: u32,
    uid: u32,
    gid: u32,
    size: u64,
    name: String,
}

impl Entry {
    /// From fields in the order inode, mode, links, uid, gid, size.
    fn from_fields(f: &[&str], name: String) -> Entry {
        Entry {
            inode: f[0].parse().unwrap(),
            mode: f[1].to_owned(),
            links: f[2].parse().unwrap(),
            uid: f[3].parse().unwrap(),
            gid: f[4].parse().unwrap(),
            size: f[5].parse().unwrap(),
            name,
        }
    }
}

fn debugfs_ls(img: &Path, dir: &str) -> Vec<Entry> {
    let out = run(
        DEBUGFS,
        &["-R", &format!("ls -l {dir}"), img.to_str().unwrap()],
    );
    let mut entries: Vec<Entry> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 9).then(|| Entry::from_fields(&f, f[8..].join(" ")))
        })
        .collect();
    assert!(!entries.is_empty(), "debugfs ls -l {dir}: {}", text(&out));
    entries.sort();
    entries
}

/// The same fields for every entry of a directory of the mount, from
/// `ls -la` (names) and `stat` (everything else).
fn mount_ls(dir: &Path) -> Vec<Entry> {
    let out = run("ls", &["-a1", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "ls -a {}: {}",
        dir.display(),
        text(&out)
    );
    let mut entries: Vec<Entry> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|name| {
            let path = dir.join(name);
            let st = run("stat", &["-c", "%i %A %h %u %g %s", path.to_str().unwrap()]);
            assert!(
                st.status.success(),
                "stat {}: {}",
                path.display(),
                text(&st)
            );
            let stdout = String::from_utf8_lossy(&st.stdout);
            let f: Vec<&str> = stdout.split_whitespace().collect();
            Entry::from_fields(&f, name.to_owned())
        })
        .collect();
    entries.sort();
    entries
}

/// Compares a directory of the mount with debugfs's listing of it (`..` of
/// the root leaves the mount and is not compared).
fn assert_same_dir(img: &Path, mount: &Path, dir: &str) {
    let mut expect = debugfs_ls(img, dir);
    let mut got = mount_ls(&mount.join(dir.trim_start_matches('/')));
    if dir == "/" {
        expect.retain(|e| e.name != "..");
        got.retain(|e| e.name != "..");
    }
    assert_eq!(got, expect, "{}: {dir}", img.display());
}

#[test]
fn real_and_our_mkfs_volumes_mount_and_list_like_debugfs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut volumes = vec![
        real_mkfs(
            tmp.path(),
            "compat.img",
            &["-M", "local", "--fs-feature-level=max-compat", "-b", "1024"],
        ),
        real_mkfs(
            tmp.path(),
            "default.img",
            &["-M", "local", "--fs-feature-level=default", "-C", "64K"],
        ),
        real_mkfs(
            tmp.path(),
            "max.img",
            &["-M", "local", "--fs-feature-level=max-features", "-N", "4"],
        ),
        // The seed's options: a cluster volume (mounting it read-only needs no
        // cluster stack here).
        real_mkfs(
            tmp.path(),
            "seed.img",
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
        ),
    ];
    let ours = tmp.path().join("ours.img");
    std::fs::File::create(&ours)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let out = run(
        TANDEM,
        &[
            "mkfs.ocfs2",
            "-q",
            "--fs-feature-level=max-features",
            "-N",
            "2",
            ours.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "tandem mkfs.ocfs2: {}", text(&out));
    volumes.push(ours);

    for img in &volumes {
        let name = img.file_stem().unwrap().to_str().unwrap();
        let mnt = Mounted::new(img, tmp.path().join(format!("mnt-{name}")));
        assert_same_dir(img, &mnt.dir, "/");
        assert_same_dir(img, &mnt.dir, "/lost+found");

        // find walks everything without an error and sees what debugfs sees.
        let out = run("find", &[mnt.dir.to_str().unwrap(), "-printf", "%P\n"]);
        assert!(out.status.success(), "find on {name}: {}", text(&out));
        let found: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(found, ["", "lost+found"], "find on {name}");

        // Read-only means read-only.
        let out = run("touch", &[mnt.dir.join("new").to_str().unwrap()]);
        assert!(!out.status.success(), "touch succeeded on {name}");
        assert!(
            text(&out).contains("Read-only file system"),
            "{}",
            text(&out)
        );

        // df shows the volume's size.
        let out = run("df", &["-B1", "--output=size", mnt.dir.to_str().unwrap()]);
        let size: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df on {name}: {}", text(&out)));
        assert!(
            size > 200 << 20 && size <= 256 << 20,
            "df size {size} on {name}"
        );
    }
}

/// Rewrites a dinode of a volume without metaecc.
fn patch_inode(img: &Path, path: &str, change: impl FnOnce(&mut ocfs2::dinode::Dinode)) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let volume = ocfs2::Volume::open(&file).unwrap();
    assert!(
        !volume.superblock().meta_ecc(),
        "patch_inode cannot re-stamp checks"
    );
    let (blkno, mut inode) = if path == "super" {
        (
            ocfs2::superblock::SUPER_BLOCK_BLKNO,
            volume.superblock_inode().clone(),
        )
    } else {
        volume.lookup(path).unwrap()
    };
    let mut block = volume.read_block(blkno).unwrap();
    change(&mut inode);
    inode.encode(&mut block);
    let bs = u64::from(volume.block_size());
    file.write_all_at(&block, blkno * bs).unwrap();
}

fn mount_fails(options: &str, img: &Path, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let out = run(
        TANDEM,
        &[
            "mount",
            "-o",
            options,
            img.to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
    );
    let msg = text(&out);
    // Whatever happened, leave nothing mounted behind.
    let _ = Command::new("umount").arg("-l").arg(dir).output();
    assert_eq!(out.status.code(), Some(32), "mount did not fail: {msg}");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounted.contains(dir.to_str().unwrap()),
        "{} is mounted after a failed mount",
        dir.display()
    );
    msg
}

#[test]
fn volumes_it_cannot_serve_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");

    // An incompatible feature the reader does not know, and one it knows of
    // but must not mount through (a tunefs.ocfs2 operation left half done).
    let img = real_mkfs(
        tmp.path(),
        "feature.img",
        &["-M", "local", "--fs-feature-level=default"],
    );
    patch_inode(&img, "super", |sb| {
        if let ocfs2::dinode::Body::Super(s) = &mut sb.body {
            s.feature_incompat |= 0x0010_0000 | ocfs2::superblock::incompat::TUNEFS_INPROG;
        }
    });
    let msg = mount_fails("ro", &img, &mnt);
    assert!(
        msg.contains("features tandem cannot read")
            && msg.contains("tunefs-in-progress")
            && msg.contains("unknown-incompat-0x100000"),
        "{msg}"
    );

    // A journal left dirty by a node that crashed.
    let img = real_mkfs(
        tmp.path(),
        "dirty.img",
        &["-M", "local", "-N", "2", "--fs-feature-level=default"],
    );
    patch_inode(&img, "//journal:0001", |j| j.id1 |= 1);
    let msg = mount_fails("ro", &img, &mnt);
    assert!(msg.contains("journal of slot 1 needs recovery"), "{msg}");

    // Not OCFS2 at all.
    let junk = tmp.path().join("junk.img");
    std::fs::write(&junk, vec![0x5a; 1 << 20]).unwrap();
    let msg = mount_fails("ro", &junk, &mnt);
    assert!(msg.contains("not an OCFS2 volume"), "{msg}");

    // Read-write is not offered yet, and says so.
    let img = real_mkfs(tmp.path(), "rw.img", &["-M", "local"]);
    let msg = mount_fails("rw", &img, &mnt);
    assert!(
        msg.contains("read-write mounts are not available yet"),
        "{msg}"
    );
}
