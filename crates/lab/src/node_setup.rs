//! What runs inside a node's fresh namespaces, once, to make it look like a machine
//! of its own: hostname, a private `/etc`, `/run`, `/mnt` and `/dev`.
//!
//! `Lab::up` starts this through `unshare --uts=FILE --mount=FILE --propagation
//! private -- tandem lab setup-node ...`, so every mount made here stays in the node.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, umask, Mode, SFlag};

/// The drbd-utils layout of a freshly installed machine: one file that includes
/// the common settings and every resource file.
const DRBD_CONF: &str = "\
# tandem lab: the top-level DRBD configuration, as a fresh install has it.
include \"drbd.d/global_common.conf\";
include \"drbd.d/*.res\";
";

const GLOBAL_COMMON_CONF: &str = "\
global {
\tusage-count no;
}

common {
}
";

/// Character devices every node has: (name, major, minor, mode).
const CHAR_DEVICES: [(&str, u64, u64, u32); 9] = [
    ("null", 1, 3, 0o666),
    ("zero", 1, 5, 0o666),
    ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666),
    ("tty", 5, 0, 0o666),
    ("ptmx", 5, 2, 0o666),
    ("fuse", 10, 229, 0o600),
    ("loop-control", 10, 237, 0o600),
];

/// Makes the current (fresh) namespaces into node `name`.
///
/// `node_dir` is the node's directory in the lab; `hosts` the name and address of
/// every node (for `/etc/hosts`); `disks` the node's disk names and the host loop
/// devices behind them.
pub fn setup_node(
    name: &str,
    node_dir: &Path,
    hosts: &[(String, String)],
    disks: &[(String, String)],
) -> Result<()> {
    nix::unistd::sethostname(name).context("setting the hostname")?;
    umask(Mode::empty());

    private_etc(name, node_dir, hosts)?;
    for dir in ["/run", "/mnt"] {
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755"),
        )
        .with_context(|| format!("mounting a private {dir}"))?;
    }
    // What a booted machine has in /run (/var/lock points here; drbdmeta locks
    // devices in it).
    fs::create_dir("/run/lock").context("creating /run/lock")?;
    fs::set_permissions(
        "/run/lock",
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )?;
    private_dev(node_dir, disks)?;
    Ok(())
}

/// `/etc` becomes an overlay over the host's: the node reads the host's files but
/// every change lands in its own upper layer. The DRBD and OCFS2 entries start as
/// on a freshly installed machine, whatever the host has.
fn private_etc(name: &str, node_dir: &Path, hosts: &[(String, String)]) -> Result<()> {
    let options = format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        node_dir.join("etc/upper").display(),
        node_dir.join("etc/work").display()
    );
    mount(
        Some("overlay"),
        "/etc",
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .context("mounting the node's /etc overlay")?;

    for path in ["/etc/drbd.d", "/etc/ocfs2"] {
        remove_if_present(Path::new(path))?;
        fs::create_dir(path).with_context(|| format!("creating {path}"))?;
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    remove_if_present(Path::new("/etc/default/o2cb"))?;
    fs::write("/etc/drbd.conf", DRBD_CONF)?;
    fs::write("/etc/drbd.d/global_common.conf", GLOBAL_COMMON_CONF)?;
    fs::write("/etc/hostname", format!("{name}\n"))?;
    let mut etc_hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, address) in hosts {
        etc_hosts.push_str(&format!("{address}\t{host}\n"));
    }
    fs::write("/etc/hosts", etc_hosts)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.with_context(|| format!("removing the host's {}", path.display()))
}

/// A private `/dev`: a tmpfs with the usual character devices, the host's
/// terminals, and the node's disks under their names in the node.
fn private_dev(node_dir: &Path, disks: &[(String, String)]) -> Result<()> {
    // Built aside, then moved over /dev in one step, so the host's device nodes
    // (the loop devices we copy) stay reachable while building.
    let staging = node_dir.join("dev");
    mount(
        Some("tmpfs"),
        &staging,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755"),
    )
    .context("mounting the node's /dev")?;

    for (dev, major, minor, mode) in CHAR_DEVICES {
        mknod(
            &staging.join(dev),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        )
        .with_context(|| format!("creating /dev/{dev}"))?;
    }
    for (disk, loop_device) in disks {
        let meta = fs::metadata(loop_device).with_context(|| format!("reading {loop_device}"))?;
        if !meta.file_type().is_block_device() {
            bail!("{loop_device} is not a block device");
        }
        mknod(
            &staging.join(disk),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            meta.rdev(),
        )
        .with_context(|| format!("creating /dev/{disk}"))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, staging.join(link))?;
    }
    for (dir, mode) in [("pts", 0o755), ("shm", 0o1777)] {
        fs::create_dir(staging.join(dir))?;
        fs::set_permissions(
            staging.join(dir),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )?;
        let host = Path::new("/dev").join(dir);
        if host.is_dir() {
            mount(
                Some(&host),
                &staging.join(dir),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("binding {}", host.display()))?;
        }
    }
    mount(
        Some(&staging),
        "/dev",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .context("moving the node's /dev into place")?;
    Ok(())
}
