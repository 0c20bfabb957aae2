//! Our reader and our read-only FUSE mount against volumes the real kernel
//! wrote. The real mkfs.ocfs2 makes
//! local-mount volumes of three geometries; the stock Debian 6.1 ocfs2 driver,
//! booted under QEMU by `vmtest`, fills them (`guest/kernel_writes.sh`: a deep
//! tree, a 2100-entry directory with deleted entries, inline and extent-mapped
//! files, fragmented files whose extent lists overflow into extent blocks,
//! sparse and preallocated files, fast and slow symlinks, hard links, a FIFO,
//! owners, modes, set times, xattrs in every place OCFS2 keeps them) and lists
//! them in a manifest with `stat` (mode, owner, size, links, and mtime, atime
//! and ctime to the nanosecond), `sha256sum`, `readlink` and `getfattr`. Every
//! manifest entry must match what `Volume::lookup`, `read_range`,
//! `dir_entries` and `xattrs` return, and what `tandem mount -o ro` shows
//! through the kernel's VFS (`lstat`, file bytes, `readlink`, `readdir`,
//! `llistxattr`, `lgetxattr`). The shapes the test is about (extent blocks,
//! indexed and inline directories, inline data) must really be on disk, so a
//! kernel that wrote something else fails the test rather than passing it
//! trivially.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ocfs2::dinode::{dyn_features, mode, Body, Dinode};
use ocfs2::xattr::{XattrBlock, XattrBlockBody, XATTR_INLINE_SIZE};
use ocfs2::Volume;
use sha2::{Digest, Sha256};
use vmtest::{Guest, Outcome, Vm};

const GUEST_SCRIPT: &str = include_str!("guest/kernel_writes.sh");
const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
const MKFS: &str = "/usr/sbin/mkfs.ocfs2";

/// A sparse image of `size` bytes in `dir`.
fn sparse_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

/// Runs the real mkfs.ocfs2 (fails, never skips, when it is missing).
fn real_mkfs(image: &Path, args: &[&str]) {
    assert!(
        Path::new(MKFS).exists(),
        "{MKFS} is missing: scripts/install installs ocfs2-tools"
    );
    let out = Command::new("timeout")
        .args(["120", MKFS, "-F", "-q"])
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

/// A read-only FUSE mount that is undone even when the test fails.
struct Mounted(PathBuf);

impl Mounted {
    fn new(img: &Path, dir: PathBuf) -> Mounted {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("timeout")
            .arg("60")
            .arg(TANDEM)
            .args(["mount", "-o", "ro"])
            .arg(img)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tandem mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(dir)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Geometry {
    /// Volume and disk name.
    name: &'static str,
    mkfs: &'static [&'static str],
    cluster: u32,
    /// The volume has the xattr feature.
    xattrs: bool,
    /// The volume has sparse files (and unwritten extents).
    sparse: bool,
    /// Directories start inline (inline-data feature).
    inline: bool,
    /// Large directories get an index (indexed-dirs feature).
    indexed: bool,
}

const GEOMETRIES: &[Geometry] = &[
    // No incompat feature but xattr: 1 KiB blocks make buckets of four
    // blocks.
    Geometry {
        name: "compat-1k-32k",
        mkfs: &[
            "-b",
            "1K",
            "-C",
            "32K",
            "--fs-feature-level=max-compat",
            "--fs-features=xattr",
        ],
        cluster: 32 << 10,
        xattrs: true,
        sparse: false,
        inline: false,
        indexed: false,
    },
    Geometry {
        name: "default-4k-4k",
        mkfs: &["-b", "4K", "-C", "4K", "--fs-feature-level=default"],
        cluster: 4 << 10,
        xattrs: true,
        sparse: true,
        inline: true,
        indexed: true,
    },
    Geometry {
        name: "maxfeat-4k-64k",
        mkfs: &["-b", "4K", "-C", "64K", "--fs-feature-level=max-features"],
        cluster: 64 << 10,
        xattrs: true,
        sparse: true,
        inline: true,
        indexed: true,
    },
];

/// One `stat` line of the manifest.
#[derive(Debug)]
struct Entry {
    mode: u16,
    size: u64,
    uid: u32,
    gid: u32,
    links: u32,
    /// (seconds, nanoseconds) of mtime, atime, ctime.
    times: [(u64, u32); 3],
}

/// `./a/b` (find's spelling) as the reader's `/a/b`.
fn volume_path(find_path: &str) -> String {
    match find_path.strip_prefix('.') {
        Some("") => "/".to_string(),
        Some(rest) => rest.to_string(),
        None => panic!("find printed {find_path:?}, not a ./ path"),
    }
}

/// Seconds and, from stat's full form "YYYY-MM-DD HH:MM:SS.NNNNNNNNN +ZZZZ",
/// nanoseconds.
fn stat_time(secs: &str, full: &str) -> (u64, u32) {
    let nsec = full
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.split_once('.'))
        .map(|(_, n)| n.parse().unwrap())
        .unwrap_or(0);
    (secs.parse().unwrap(), nsec)
}

fn parse_stat(text: &str) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(12, '|').collect();
        assert_eq!(f.len(), 12, "bad manifest line {line:?}");
        out.insert(
            volume_path(f[11]),
            Entry {
                mode: u16::from_str_radix(f[0], 16).unwrap(),
                size: f[1].parse().unwrap(),
                uid: f[2].parse().unwrap(),
                gid: f[3].parse().unwrap(),
                links: f[4].parse().unwrap(),
                times: [
                    stat_time(f[5], f[6]),
                    stat_time(f[7], f[8]),
                    stat_time(f[9], f[10]),
                ],
            },
        );
    }
    out
}

/// The fields both checks compare: (mode, size, uid, gid, links, [mtime,
/// atime, ctime]).
type Compared = (u16, u64, u32, u32, u32, [(u64, u32); 3]);

fn expected(want: &Entry) -> Compared {
    (
        want.mode, want.size, want.uid, want.gid, want.links, want.times,
    )
}

/// `sha256sum` lines: "HEX  ./path".
fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| {
            let (sum, path) = l.split_once("  ").unwrap();
            (volume_path(path), sum.to_string())
        })
        .collect()
}

fn parse_links(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| {
            let (path, target) = l.split_once('|').unwrap();
            (volume_path(path), target.to_string())
        })
        .collect()
}

fn parent_and_name(path: &str) -> Option<(String, String)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    let parent = if parent.is_empty() { "/" } else { parent };
    Some((parent.to_string(), name.to_string()))
}

/// Attributes by name.
type Xattrs = BTreeMap<String, Vec<u8>>;

/// getfattr's escapes in a file name: `\ooo` (octal byte) and `\\`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `getfattr -d -m - -e hex` output: "# file: PATH" then "name=0xHEX" lines
/// ("name" or "name=" alone for an empty value).
fn parse_xattrs(text: &str) -> BTreeMap<String, Xattrs> {
    let mut out: BTreeMap<String, Xattrs> = BTreeMap::new();
    let mut file: Option<String> = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            // getfattr drops find's leading "./".
            let p = unescape(p);
            file = Some(match p.as_str() {
                "." => "/".to_string(),
                p => format!("/{}", p.strip_prefix("./").unwrap_or(p)),
            });
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let hex = value.strip_prefix("0x").unwrap_or(value);
        assert!(hex.len() % 2 == 0, "bad getfattr line {line:?}");
        let value: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let f = file
            .clone()
            .expect("getfattr printed an attribute before a file");
        let dup = out.entry(f).or_default().insert(name.to_string(), value);
        assert!(dup.is_none(), "getfattr listed {name} twice");
    }
    out
}

/// The kernel's attributes of every file, from the manifest (none at all on a
/// volume without the xattr feature).
fn kernel_xattrs(g: &Geometry, outcome: &Outcome) -> BTreeMap<String, Xattrs> {
    if !g.xattrs {
        return BTreeMap::new();
    }
    let text = std::fs::read_to_string(outcome.out_file(&format!("{}.xattrs", g.name)))
        .unwrap_or_else(|e| panic!("{}: no .xattrs manifest ({e})", g.name));
    let x = parse_xattrs(&text);
    assert!(
        x.values().map(BTreeMap::len).sum::<usize>() > 240,
        "{}: xattr manifest too short",
        g.name
    );
    x
}

/// Compares one file's attributes; `got` may hold a name twice.
fn compare_xattrs(got: Vec<(String, Vec<u8>)>, want: Option<&Xattrs>) -> Result<(), String> {
    let empty = Xattrs::new();
    let want = want.unwrap_or(&empty);
    let mut map = Xattrs::new();
    for (name, value) in got {
        if map.insert(name.clone(), value).is_some() {
            return Err(format!("xattr {name} listed twice"));
        }
    }
    if &map == want {
        return Ok(());
    }
    let show = |m: &Xattrs| -> Vec<String> {
        m.iter()
            .map(|(n, v)| format!("{n}={} bytes {:02x?}", v.len(), &v[..v.len().min(8)]))
            .collect()
    };
    let only_us: Xattrs = map
        .iter()
        .filter(|(n, v)| want.get(*n) != Some(v))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let only_kernel: Xattrs = want
        .iter()
        .filter(|(n, v)| map.get(*n) != Some(v))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    Err(format!(
        "xattrs differ: ours {:?}; the kernel's {:?}",
        show(&only_us),
        show(&only_kernel)
    ))
}

/// A C path for the xattr calls.
fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `llistxattr` + `lgetxattr` of every name, each sized by a probe first.
fn mount_xattrs(p: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let c = c_path(p);
    // SAFETY: `c` is a NUL-terminated path; a null buffer of size 0 asks only
    // for the list's size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut list = vec![0u8; n as usize];
    // SAFETY: the buffer is `list.len()` writable bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    list.truncate(n as usize);
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            mount_getxattr(&c, &cname)?,
        ));
    }
    Ok(out)
}

/// One value by `lgetxattr`: a size probe, then the value.
fn mount_getxattr(path: &CString, name: &CString) -> std::io::Result<Vec<u8>> {
    // SAFETY: NUL-terminated path and name; a null buffer of size 0 asks only
    // for the value's size.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut v = vec![0u8; n as usize];
    // SAFETY: the buffer is `v.len()` writable bytes.
    let n =
        unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    v.truncate(n as usize);
    Ok(v)
}

/// The error cases of getxattr/listxattr through the mount: a buffer one byte
/// short is `ERANGE` (for values of 2 bytes or more), a missing name
/// `ENODATA`.
fn check_xattr_errors(p: &Path, name: &str, len: usize) -> Result<(), String> {
    let c = c_path(p);
    let cname = CString::new(name).unwrap();
    let mut buf = vec![0u8; len.saturating_sub(1)];
    // SAFETY: the buffer is `buf.len()` writable bytes.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let e = std::io::Error::last_os_error().raw_os_error();
    // (A size-0 buffer is the size probe, not a short buffer.)
    if len > 1 && (n >= 0 || e != Some(libc::ERANGE)) {
        return Err(format!(
            "getxattr {name} into {} bytes: {n}, {e:?}, not ERANGE",
            buf.len()
        ));
    }
    let missing = CString::new("user.no-such-attribute").unwrap();
    // SAFETY: as above.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            missing.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let e = std::io::Error::last_os_error().raw_os_error();
    if n >= 0 || e != Some(libc::ENODATA) {
        return Err(format!(
            "getxattr of a missing name: {n}, {e:?}, not ENODATA"
        ));
    }
    let mut one = [0u8; 1];
    // SAFETY: a 1-byte buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), one.as_mut_ptr().cast(), 1) };
    let e = std::io::Error::last_os_error().raw_os_error();
    if n >= 0 || e != Some(libc::ERANGE) {
        return Err(format!("listxattr into 1 byte: {n}, {e:?}, not ERANGE"));
    }
    Ok(())
}

/// Shapes seen while checking a volume.
#[derive(Default, Debug)]
struct Seen {
    extent_blocks: bool,
    indexed_dir: bool,
    inline_dir: bool,
    inline_file: bool,
    slow_symlink: bool,
    fast_symlink: bool,
    inline_xattrs: bool,
    xattr_block: bool,
    xattr_tree: bool,
    xattr_value_outside: bool,
}

/// What the guest recorded of one volume, and the comparisons both checks
/// make against it: each returns the mismatch, if any, as a message.
struct Manifest {
    stats: BTreeMap<String, Entry>,
    sums: BTreeMap<String, String>,
    links: BTreeMap<String, String>,
    xattrs: BTreeMap<String, Xattrs>,
    children: BTreeMap<String, BTreeSet<String>>,
}

impl Manifest {
    fn load(g: &Geometry, outcome: &Outcome) -> Manifest {
        let read = |ext: &str| {
            std::fs::read_to_string(outcome.out_file(&format!("{}.{ext}", g.name)))
                .unwrap_or_else(|e| panic!("{}: no .{ext} manifest ({e})", g.name))
        };
        let stats = parse_stat(&read("stat"));
        assert!(stats.len() > 2000, "{}: manifest too short", g.name);
        let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in stats.keys() {
            if let Some((parent, name)) = parent_and_name(path) {
                children.entry(parent).or_default().insert(name);
            }
        }
        Manifest {
            stats,
            sums: parse_sums(&read("sha256")),
            links: parse_links(&read("links")),
            xattrs: kernel_xattrs(g, outcome),
            children,
        }
    }

    fn attributes(&self, path: &str, got: Compared) -> Option<String> {
        let want = expected(&self.stats[path]);
        (got != want).then(|| {
            format!("(mode, size, uid, gid, links, [mtime, atime, ctime]) {got:?}, kernel says {want:?}")
        })
    }

    fn contents(&self, path: &str, data: &[u8]) -> Option<String> {
        let sum = format!("{:x}", Sha256::digest(data));
        (self.sums.get(path) != Some(&sum))
            .then(|| format!("sha256 {sum}, kernel says {:?}", self.sums.get(path)))
    }

    fn target(&self, path: &str, target: &str) -> Option<String> {
        (self.links.get(path).map(String::as_str) != Some(target))
            .then(|| format!("target {target:?}, kernel says {:?}", self.links.get(path)))
    }

    fn names(&self, path: &str, names: &BTreeSet<String>) -> Option<String> {
        let want = self.children.get(path).cloned().unwrap_or_default();
        (*names != want).then(|| {
            format!(
                "names only we list: {:?}; only the kernel lists: {:?}",
                names.difference(&want).collect::<Vec<_>>(),
                want.difference(names).collect::<Vec<_>>()
            )
        })
    }

    fn xattrs(&self, path: &str, got: Vec<(String, Vec<u8>)>) -> Option<String> {
        compare_xattrs(got, self.xattrs.get(path)).err()
    }
}

fn check_volume(g: &Geometry, img: &Path, outcome: &Outcome, failures: &mut Vec<String>) {
    let m = Manifest::load(g, outcome);
    let mut fail = |path: &str, what: String| failures.push(format!("{} {path}: {what}", g.name));

    let vol = Volume::open(File::open(img).unwrap()).unwrap();
    let mut seen = Seen::default();
    for (path, want) in &m.stats {
        let inode: Dinode = match vol.lookup(path) {
            Ok((_, i)) => i,
            Err(e) => {
                fail(path, format!("lookup: {e}"));
                continue;
            }
        };
        let got: Compared = (
            inode.mode,
            inode.size,
            inode.uid,
            inode.gid,
            inode.links(),
            [
                (inode.mtime, inode.mtime_nsec),
                (inode.atime, inode.atime_nsec),
                (inode.ctime, inode.ctime_nsec),
            ],
        );
        let mut problems = vec![m.attributes(path, got)];
        if let Body::Extents(list) = &inode.body {
            seen.extent_blocks |= list.tree_depth > 0;
        }
        match vol.xattrs(&inode) {
            Ok(got) => {
                seen.xattr_value_outside |=
                    got.iter().any(|(_, v)| v.len() as u64 > XATTR_INLINE_SIZE);
                problems.push(m.xattrs(path, got));
            }
            Err(e) => problems.push(Some(format!("xattrs: {e}"))),
        }
        seen.inline_xattrs |= inode.dyn_features & dyn_features::INLINE_XATTR != 0;
        if inode.xattr_loc != 0 {
            seen.xattr_block = true;
            let xb = vol
                .read_block(inode.xattr_loc)
                .ok()
                .and_then(|b| XattrBlock::decode(&b, inode.xattr_loc).ok());
            seen.xattr_tree |= matches!(
                xb,
                Some(XattrBlock {
                    body: XattrBlockBody::Tree { .. },
                    ..
                })
            );
        }
        match want.mode & mode::S_IFMT {
            mode::S_IFREG => {
                seen.inline_file |= matches!(inode.body, Body::Inline(_));
                problems.push(match vol.read_range(&inode, 0, want.size as usize) {
                    Ok(data) => m.contents(path, &data),
                    Err(e) => Some(format!("read_range: {e}")),
                });
            }
            mode::S_IFLNK => {
                seen.fast_symlink |= matches!(inode.body, Body::FastSymlink(_));
                seen.slow_symlink |= matches!(inode.body, Body::Extents(_));
                problems.push(match vol.read_range(&inode, 0, want.size as usize) {
                    Ok(t) => m.target(path, &String::from_utf8_lossy(&t)),
                    Err(e) => Some(format!("read_range: {e}")),
                });
            }
            mode::S_IFDIR => {
                seen.inline_dir |= matches!(inode.body, Body::Inline(_));
                seen.indexed_dir |= inode.dyn_features & dyn_features::INDEXED_DIR != 0;
                problems.push(match vol.dir_entries(&inode) {
                    Ok(entries) => {
                        let mut names = BTreeSet::new();
                        for e in entries {
                            let n = e.name_str();
                            if n != "." && n != ".." && !names.insert(n.clone()) {
                                fail(path, format!("{n:?} listed twice"));
                            }
                        }
                        m.names(path, &names)
                    }
                    Err(e) => Some(format!("dir_entries: {e}")),
                });
            }
            _ => {}
        }
        for problem in problems.into_iter().flatten() {
            fail(path, problem);
        }
    }
    eprintln!(
        "{}: {} entries checked, shapes {seen:?}",
        g.name,
        m.stats.len()
    );

    // The shapes this geometry must have produced.
    let mut shape = |ok: bool, what: &str| {
        if !ok {
            failures.push(format!("{}: no {what} on the volume", g.name));
        }
    };
    shape(seen.extent_blocks, "extent tree of depth > 0");
    shape(seen.slow_symlink, "slow symlink");
    shape(seen.fast_symlink, "fast symlink");
    shape(
        seen.indexed_dir == g.indexed,
        "indexed directory (or one unexpected)",
    );
    shape(
        seen.inline_dir == g.inline,
        "inline directory (or one unexpected)",
    );
    shape(
        seen.inline_file == g.inline,
        "inline file (or one unexpected)",
    );
    shape(
        seen.inline_xattrs == g.xattrs,
        "xattrs in an inode (or some unexpected)",
    );
    shape(
        seen.xattr_block == g.xattrs,
        "xattr block (or one unexpected)",
    );
    shape(
        seen.xattr_tree == g.xattrs,
        "xattr tree of buckets (or one unexpected)",
    );
    shape(
        seen.xattr_value_outside == g.xattrs,
        "xattr value outside its entry (or one unexpected)",
    );
}

/// Every manifest entry through the read-only FUSE mount of the volume.
fn check_mount(g: &Geometry, img: &Path, outcome: &Outcome, failures: &mut Vec<String>) {
    let m = Manifest::load(g, outcome);
    let mut fail =
        |path: &str, what: String| failures.push(format!("{} (mount) {path}: {what}", g.name));
    let mnt = Mounted::new(img, img.with_extension("mnt"));
    for (path, want) in &m.stats {
        let p = mnt.0.join(path.trim_start_matches('/'));
        let md = match std::fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) => {
                fail(path, format!("lstat: {e}"));
                continue;
            }
        };
        let got: Compared = (
            md.mode() as u16,
            md.size(),
            md.uid(),
            md.gid(),
            md.nlink() as u32,
            [
                (md.mtime() as u64, md.mtime_nsec() as u32),
                (md.atime() as u64, md.atime_nsec() as u32),
                (md.ctime() as u64, md.ctime_nsec() as u32),
            ],
        );
        let mut problems = vec![m.attributes(path, got)];
        problems.push(match mount_xattrs(&p) {
            Ok(got) => m.xattrs(path, got),
            Err(e) => Some(format!("listxattr/getxattr: {e}")),
        });
        if let Some((name, value)) = m
            .xattrs
            .get(path)
            .and_then(|x| x.iter().max_by_key(|(_, v)| v.len()))
        {
            problems.push(check_xattr_errors(&p, name, value.len()).err());
        }
        problems.push(match want.mode & mode::S_IFMT {
            mode::S_IFREG => match std::fs::read(&p) {
                Ok(data) => m.contents(path, &data),
                Err(e) => Some(format!("read: {e}")),
            },
            mode::S_IFLNK => match std::fs::read_link(&p) {
                Ok(t) => m.target(path, &t.to_string_lossy()),
                Err(e) => Some(format!("readlink: {e}")),
            },
            mode::S_IFDIR => match std::fs::read_dir(&p) {
                Ok(entries) => {
                    let names: BTreeSet<String> = entries
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect();
                    m.names(path, &names)
                }
                Err(e) => Some(format!("readdir: {e}")),
            },
            _ => None,
        });
        for problem in problems.into_iter().flatten() {
            fail(path, problem);
        }
    }
    eprintln!(
        "{}: {} entries checked through the mount",
        g.name,
        m.stats.len()
    );
}

#[test]
fn reader_and_mount_match_what_the_kernel_wrote() {
    let vm = Vm::locate().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut script = GUEST_SCRIPT.to_string();
    let mut images = Vec::new();
    for g in GEOMETRIES {
        let img = sparse_image(dir.path(), g.name, 1 << 30);
        let mut args = g.mkfs.to_vec();
        args.extend(["-M", "local", "-L", g.name]);
        real_mkfs(&img, &args);
        let yn = |b: bool| if b { "yes" } else { "no" };
        script.push_str(&format!(
            "fill {} {} {} {}\n",
            g.name,
            g.cluster,
            yn(g.xattrs),
            yn(g.sparse)
        ));
        images.push(img);
    }
    let guest = Guest::new(script)
        .host_program("/usr/bin/setfattr")
        .host_program("/usr/bin/getfattr")
        .timeout(Duration::from_secs(180));
    let guest = images
        .iter()
        .zip(GEOMETRIES)
        .fold(guest, |gu, (img, g)| gu.disk(img, g.name));
    let outcome = vm.run(&guest).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("VM run took {:?}", outcome.elapsed);
    outcome.assert_success();

    let mut failures = Vec::new();
    for (g, img) in GEOMETRIES.iter().zip(&images) {
        check_volume(g, img, &outcome, &mut failures);
        check_mount(g, img, &outcome, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches between our reader or mount and the kernel:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
