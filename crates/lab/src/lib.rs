//! The lab: several simulated machines ("nodes") on one Linux host.
//!
//! tandem is a two-machine system; the lab lets one machine play both. Each node is
//! a pair of persistent namespaces plus a few files, all kept under one directory
//! (the *lab directory*, `/var/lib/tandem/lab` unless `TANDEM_LAB_DIR` says
//! otherwise):
//!
//! - a UTS namespace, so `uname -n` (and therefore drbdadm's "this host") is the
//!   node's name, `nodo1`, `nodo2`, ...;
//! - a mount namespace in which `/etc` is an overlay over the host's (every write is
//!   private to the node; `/etc/drbd.d`, `/etc/drbd.conf`, `/etc/ocfs2` and
//!   `/etc/default/o2cb` start out as a fresh machine's), `/run` and `/mnt` are
//!   private tmpfs, and `/dev` is a private tmpfs holding the usual character
//!   devices plus the node's two disks `/dev/sdb` and `/dev/sdc`;
//! - two sparse 1 GiB image files attached to loop devices with direct I/O, so a
//!   disk has no page cache between it and its file, as a real disk has none
//!   (loop devices are global to the kernel; only their nodes in the private
//!   `/dev` make them "the node's");
//! - an address on the loopback range (127.0.0.11, 127.0.0.12, ...) on the
//!   loopback interface of a network namespace the lab's nodes share, so traffic
//!   between nodes never leaves the lab, each node finds its own address on "this
//!   host" (drbdadm checks that), and two labs never collide on a port.
//!
//! The namespaces outlive every process because their `/proc/PID/ns/*` files are
//! bind-mounted onto files in the lab directory (the `unshare --uts=FILE --mount=FILE`
//! technique); `exec` enters them with `setns(2)`. Everything the lab makes can be
//! found again from the lab directory alone, so `down` works after a half-failed
//! `up` and when run twice.
//!
//! Layout of the lab directory:
//! ```text
//! lab/bin/{tandem,drbdadm,...}      compatibility names, first on PATH in a node
//! lab/nodes/                         a private bind mount (needed for nsfs binds)
//! lab/nodes/net                      the lab's network namespace
//! lab/nodes/NAME/ns/{uts,mnt}        the node's namespaces
//! lab/nodes/NAME/address             its IPv4 address
//! lab/nodes/NAME/disks/{sdb,sdc}.img its disks' backing files
//! lab/nodes/NAME/etc/{upper,work}    the node's private layer of /etc
//! ```

pub mod mountinfo;
mod node_setup;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use mountinfo::MountEntry;
pub use node_setup::setup_node;

/// Where the lab lives unless `TANDEM_LAB_DIR` names another directory.
pub const DEFAULT_LAB_DIR: &str = "/var/lib/tandem/lab";

/// Size of each node disk, as in the seed (two empty 1 GiB disks per machine).
pub const DISK_SIZE: u64 = 1 << 30;

/// The disks each node gets, by their name inside the node.
pub const DISK_NAMES: [&str; 2] = ["sdb", "sdc"];

/// The names tandem answers to, linked in `lab/bin` so a node's PATH finds them
/// before the real tools. Only names tandem actually implements belong here.
pub const COMPAT_NAMES: [&str; 3] = ["drbdadm", "o2cb", "mkfs.ocfs2"];

/// The PATH a node's commands run with: the lab's compatibility names first.
fn node_path(bin: &Path) -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        bin.display()
    )
}

/// The name of node number `index` (1-based), as the seed names its machines.
pub fn node_name(index: usize) -> String {
    format!("nodo{index}")
}

/// The loopback address of node number `index` (1-based).
pub fn node_address(index: usize) -> String {
    format!("127.0.0.{}", 10 + index)
}

/// A lab rooted at one directory.
#[derive(Debug, Clone)]
pub struct Lab {
    dir: PathBuf,
}

/// One node as found in the lab directory.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: String,
    dir: PathBuf,
}

/// One of a node's disks: its name inside the node and the loop device behind it.
#[derive(Debug, Clone)]
pub struct Disk {
    pub name: String,
    pub image: PathBuf,
    pub loop_device: Option<String>,
    pub size: u64,
}

/// A process running inside a node.
#[derive(Debug, Clone)]
pub struct NodeProcess {
    pub pid: i32,
    pub command: String,
}

impl Node {
    fn ns_file(&self, kind: &str) -> PathBuf {
        self.dir.join("ns").join(kind)
    }

    /// The inode number of the node's mount namespace, if the namespace exists.
    pub fn mount_namespace_id(&self) -> Option<u64> {
        let meta = fs::metadata(self.ns_file("mnt")).ok()?;
        // An unmounted placeholder is a regular empty file on the lab's filesystem;
        // a bound namespace lives on nsfs and has a different device.
        let dir_dev = fs::metadata(self.dir.join("ns")).ok()?.dev();
        (meta.dev() != dir_dev).then_some(meta.ino())
    }

    /// The node's disks and the loop devices currently attached to them.
    pub fn disks(&self) -> Vec<Disk> {
        let attached = attached_loop_devices();
        DISK_NAMES
            .iter()
            .map(|name| {
                let image = self.dir.join("disks").join(format!("{name}.img"));
                let loop_device = attached
                    .iter()
                    .find(|(_, backing)| backing == &image)
                    .map(|(dev, _)| dev.clone());
                let size = fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
                Disk {
                    name: name.to_string(),
                    image,
                    loop_device,
                    size,
                }
            })
            .collect()
    }

    /// Processes whose mount namespace is the node's.
    pub fn processes(&self) -> Vec<NodeProcess> {
        let Some(ns) = self.mount_namespace_id() else {
            return Vec::new();
        };
        processes_in_mount_namespace(ns)
    }
}

/// Every process on the host whose mount namespace has inode `ns`.
fn processes_in_mount_namespace(ns: u64) -> Vec<NodeProcess> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(meta) = fs::metadata(entry.path().join("ns/mnt")) else {
            continue;
        };
        if meta.ino() != ns {
            continue;
        }
        let command = fs::read(entry.path().join("cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        found.push(NodeProcess { pid, command });
    }
    found
}

/// Loop devices attached now, with their backing files, read from sysfs.
///
/// sysfs rather than `losetup`: listing through `losetup` opens every loop device,
/// which blocks when one of them is backed by a file whose server has stopped
/// answering; sysfs never touches the device.
pub fn attached_loop_devices() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        found.push((format!("/dev/{name}"), PathBuf::from(backing)));
    }
    found.sort();
    found
}

impl Lab {
    /// The lab at `TANDEM_LAB_DIR`, or at [`DEFAULT_LAB_DIR`].
    pub fn from_env() -> Lab {
        let dir = std::env::var_os("TANDEM_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LAB_DIR));
        Lab::at(dir)
    }

    pub fn at(dir: impl Into<PathBuf>) -> Lab {
        Lab { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The network namespace every node of the lab shares.
    fn net_file(&self) -> PathBuf {
        self.nodes_dir().join("net")
    }

    /// Whether a lab exists at this directory (even a half-made one).
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// The nodes found in the lab directory, in name order.
    pub fn nodes(&self) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        let entries = match fs::read_dir(self.nodes_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(nodes),
            Err(e) => return Err(e).context("reading the lab's nodes"),
        };
        for entry in entries.flatten() {
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let address = fs::read_to_string(entry.path().join("address"))
                .map(|a| a.trim().to_string())
                .unwrap_or_default();
            nodes.push(Node {
                name,
                address,
                dir: entry.path(),
            });
        }
        nodes.sort_by_key(|n| node_sort_key(&n.name));
        Ok(nodes)
    }

    /// The node called `name`, which must exist and have its namespaces.
    pub fn node(&self, name: &str) -> Result<Node> {
        let nodes = self.nodes()?;
        let Some(node) = nodes.into_iter().find(|n| n.name == name) else {
            bail!(
                "no node {name:?} in the lab at {} (is the lab up? `tandem lab status`)",
                self.dir.display()
            );
        };
        if node.mount_namespace_id().is_none() {
            bail!(
                "node {name} has no namespaces (a half-made lab? run `tandem lab down` then `tandem lab up`)"
            );
        }
        Ok(node)
    }

    /// Creates the lab: `nodes` nodes with their namespaces, disks and addresses.
    ///
    /// `tandem_binary` is linked under the compatibility names and runs each node's
    /// setup inside its fresh namespaces. On failure everything made so far is taken
    /// down again.
    pub fn up(&self, nodes: usize, tandem_binary: &Path) -> Result<()> {
        if !(1..=9).contains(&nodes) {
            bail!("--nodes must be between 1 and 9, not {nodes}");
        }
        if self.nodes_dir().exists() {
            bail!(
                "a lab already exists at {} (`tandem lab down` removes it)",
                self.dir.display()
            );
        }
        let result = self.build(nodes, tandem_binary);
        if result.is_err() {
            // Leave nothing half-made behind; the original error is what matters.
            let _ = self.down();
        }
        result
    }

    fn build(&self, nodes: usize, tandem_binary: &Path) -> Result<()> {
        let nodes_dir = self.nodes_dir();
        fs::create_dir_all(&nodes_dir)
            .with_context(|| format!("creating {}", nodes_dir.display()))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;

        // Namespace files may only be bind-mounted on a private mount, or the new
        // mount namespace would receive (and pin) a copy of its own file.
        run(Command::new("mount")
            .arg("--bind")
            .arg(&nodes_dir)
            .arg(&nodes_dir))?;
        run(Command::new("mount").arg("--make-private").arg(&nodes_dir))?;

        let bin = self.bin_dir();
        fs::create_dir_all(&bin)?;
        let tandem = fs::canonicalize(tandem_binary)
            .with_context(|| format!("finding {}", tandem_binary.display()))?;
        for name in std::iter::once("tandem").chain(COMPAT_NAMES) {
            std::os::unix::fs::symlink(&tandem, bin.join(name))
                .with_context(|| format!("linking {name} in {}", bin.display()))?;
        }

        // One network namespace for the whole lab: its loopback carries every
        // node's address.
        let net = self.net_file();
        fs::File::create(&net)?;
        run(Command::new("unshare")
            .arg(format!("--net={}", net.display()))
            .arg("true"))?;
        let in_net = |args: &[&str]| {
            run(Command::new("nsenter")
                .arg(format!("--net={}", net.display()))
                .arg("--")
                .args(args))
        };
        in_net(&["ip", "link", "set", "lo", "up"])?;
        for i in 1..=nodes {
            in_net(&[
                "ip",
                "address",
                "add",
                &format!("{}/8", node_address(i)),
                "dev",
                "lo",
            ])?;
        }

        let names: Vec<String> = (1..=nodes).map(node_name).collect();
        let hosts: Vec<(String, String)> = (1..=nodes)
            .map(|i| (node_name(i), node_address(i)))
            .collect();
        for (i, name) in names.iter().enumerate() {
            self.build_node(name, &node_address(i + 1), &hosts, &tandem)
                .with_context(|| format!("creating node {name}"))?;
        }
        Ok(())
    }

    fn build_node(
        &self,
        name: &str,
        address: &str,
        hosts: &[(String, String)],
        tandem: &Path,
    ) -> Result<()> {
        let dir = self.nodes_dir().join(name);
        for sub in ["ns", "disks", "etc/upper", "etc/work", "dev"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("address"), format!("{address}\n"))?;

        let mut disks = Vec::new();
        for disk in DISK_NAMES {
            let image = dir.join("disks").join(format!("{disk}.img"));
            let file = fs::File::create(&image)?;
            file.set_len(DISK_SIZE)?;
            drop(file);
            let out = run(Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(&image))?;
            let device = out.trim().to_string();
            disks.push(format!("{disk}={device}"));
        }

        for kind in ["uts", "mnt"] {
            fs::File::create(dir.join("ns").join(kind))?;
        }
        let hosts_arg: Vec<String> = hosts.iter().map(|(n, a)| format!("{n}={a}")).collect();
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.net_file().display()))
            .args(["--", "unshare"])
            .arg(format!("--uts={}", dir.join("ns/uts").display()))
            .arg(format!("--mount={}", dir.join("ns/mnt").display()))
            .args(["--propagation", "private", "--"])
            .arg(tandem)
            .args(["lab", "setup-node", "--name", name, "--dir"])
            .arg(&dir)
            .arg("--hosts")
            .arg(hosts_arg.join(","))
            .arg("--disks")
            .arg(disks.join(",")))?;
        Ok(())
    }

    /// Replaces the current process with `argv` run inside node `name`.
    ///
    /// Must be called while the process has a single thread (entering a mount
    /// namespace is refused otherwise). Returns only on error.
    pub fn exec(&self, name: &str, argv: &[OsString]) -> Result<std::convert::Infallible> {
        let node = self.node(name)?;
        let Some((program, args)) = argv.split_first() else {
            bail!("no command given: tandem lab exec {name} -- COMMAND [ARG...]");
        };
        enter_namespaces(&self.net_file(), &node.ns_file("uts"), &node.ns_file("mnt"))
            .with_context(|| format!("entering node {name}"))?;
        let err = Command::new(program)
            .args(args)
            .env("PATH", node_path(&self.bin_dir()))
            .env("TANDEM_LAB_NODE", &node.name)
            .exec();
        Err(err).with_context(|| format!("running {} in {name}", program.to_string_lossy()))
    }

    /// Runs `argv` inside node `name` and returns its output, without replacing
    /// this process (a child enters the namespaces).
    pub fn output(&self, name: &str, argv: &[&str]) -> Result<std::process::Output> {
        let node = self.node(name)?;
        let net = fs::File::open(self.net_file())?;
        let uts = fs::File::open(node.ns_file("uts"))?;
        let mnt = fs::File::open(node.ns_file("mnt"))?;
        let path = node_path(&self.bin_dir());
        let (program, args) = argv.split_first().context("no command given")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir("/")
            .env("PATH", path)
            .env("TANDEM_LAB_NODE", &node.name);
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe system calls (setns, chdir) on descriptors opened
        // before the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                setns(&net, CloneFlags::CLONE_NEWNET)?;
                setns(&uts, CloneFlags::CLONE_NEWUTS)?;
                setns(&mnt, CloneFlags::CLONE_NEWNS)?;
                nix::unistd::chdir(c"/")?;
                Ok(())
            });
        }
        command
            .output()
            .with_context(|| format!("running {program} in {name}"))
    }

    /// Takes the lab down: every process in a node, the namespaces (and with them
    /// every mount made inside), the loop devices, the files. Safe to repeat.
    pub fn down(&self) -> Result<DownReport> {
        let mut report = DownReport::default();
        if !self.dir.exists() {
            return Ok(report);
        }
        let nodes = self.nodes()?;

        // 1. Processes: ask, then insist. Aborting the nodes' FUSE connections
        //    lets a process stuck on its own device (a loop device over a FUSE
        //    file it serves) finish dying.
        let namespaces: Vec<u64> = nodes.iter().filter_map(Node::mount_namespace_id).collect();
        let fuse_devices: Vec<(u32, u32)> = nodes
            .iter()
            .filter(|n| n.mount_namespace_id().is_some())
            .flat_map(|n| self.fuse_mounts(&n.name))
            .collect();
        report.processes_killed = stop_processes(&namespaces, || abort_fuse(&fuse_devices));

        // Loop devices the nodes' daemons attached to their FUSE files: a daemon
        // that did not clean up (killed) leaves them behind.
        for (device, _) in attached_loop_devices() {
            let Some(number) = device
                .strip_prefix("/dev/loop")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(backing) = fuse::backing_device(number) else {
                continue;
            };
            if fuse_devices
                .iter()
                .any(|&(major, minor)| encode_dev(major, minor) == backing)
            {
                fuse::detach_number(number).with_context(|| format!("detaching {device}"))?;
                report.loop_devices_detached += 1;
            }
        }

        // 2. Namespaces: dropping the bind mounts frees them (no process is left to
        //    hold them), and with them every mount inside the node.
        for node in &nodes {
            for kind in ["mnt", "uts"] {
                let file = node.ns_file(kind);
                if is_mount_point(&file) {
                    umount_lazy(&file)?;
                    report.namespaces_removed += 1;
                }
            }
        }

        let net = self.net_file();
        if is_mount_point(&net) {
            umount_lazy(&net)?;
            report.namespaces_removed += 1;
        }

        // 3. Loop devices backed by anything under the lab directory.
        for (device, backing) in attached_loop_devices() {
            if backing.starts_with(&self.dir) {
                run(Command::new("losetup").arg("-d").arg(&device))
                    .with_context(|| format!("detaching {device}"))?;
                report.loop_devices_detached += 1;
            }
        }

        // 4. Any mount left under the lab directory (the private bind of nodes/),
        //    deepest first.
        let mut mounts: Vec<PathBuf> = mountinfo::read_self()?
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.dir))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        mounts.dedup();
        for mount in mounts {
            umount_lazy(&mount)?;
        }

        // 5. Files. Nothing under the directory is mounted any more, so this removes
        //    only the lab's own files.
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        if let Some(parent) = self.dir.parent() {
            if self.dir == Path::new(DEFAULT_LAB_DIR) {
                // /var/lib/tandem was made for the lab; leave it only if it holds more.
                let _ = fs::remove_dir(parent);
            }
        }
        report.removed_dir = true;
        Ok(report)
    }

    /// Mounts inside node `name` that the lab itself did not make and the host
    /// does not have: what the node's users mounted.
    pub fn node_mounts(&self, name: &str) -> Result<Vec<MountEntry>> {
        let out = self.output(name, &["cat", "/proc/self/mountinfo"])?;
        let node_mounts = mountinfo::parse(&String::from_utf8_lossy(&out.stdout));
        let host: HashSet<(PathBuf, String)> = mountinfo::read_self()?
            .into_iter()
            .map(|m| (m.mount_point, m.source))
            .collect();
        // What node_setup mounted: (mount point, source). /dev/pts and /dev/shm
        // are binds of the host's and drop out with the host's mounts.
        let lab_made = [
            ("/etc", "overlay"),
            ("/run", "tmpfs"),
            ("/mnt", "tmpfs"),
            ("/dev", "tmpfs"),
        ];
        Ok(node_mounts
            .into_iter()
            .filter(|m| {
                !lab_made
                    .iter()
                    .any(|(p, s)| m.mount_point == Path::new(p) && m.source == *s)
            })
            .filter(|m| !host.contains(&(m.mount_point.clone(), m.source.clone())))
            .collect())
    }
}

/// Moves the calling (single-threaded) process into a node's namespaces.
fn enter_namespaces(net: &Path, uts: &Path, mnt: &Path) -> std::io::Result<()> {
    let net = fs::File::open(net)?;
    let uts = fs::File::open(uts)?;
    let mnt = fs::File::open(mnt)?;
    setns(&net, CloneFlags::CLONE_NEWNET)?;
    setns(&uts, CloneFlags::CLONE_NEWUTS)?;
    setns(&mnt, CloneFlags::CLONE_NEWNS)?;
    // The old working directory may not exist in the node's view; keep it if it does.
    if std::env::current_dir().is_err() {
        std::env::set_current_dir("/")?;
    }
    Ok(())
}

impl Lab {
    /// `(major, minor)` of the FUSE filesystems mounted inside node `name`.
    fn fuse_mounts(&self, name: &str) -> Vec<(u32, u32)> {
        let Ok(out) = self.output(name, &["cat", "/proc/self/mountinfo"]) else {
            return Vec::new();
        };
        mountinfo::parse(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .filter(|m| m.fs_type.starts_with("fuse"))
            .filter_map(|m| {
                let (a, b) = m.device.split_once(':')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect()
    }
}

/// The kernel's 64-bit encoding of a device number (`huge_encode_dev`), as
/// `LOOP_GET_STATUS64` reports the backing file's device.
fn encode_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Aborts FUSE connections (their number is the mount's minor): every request
/// waiting on a dead or stuck server fails at once.
fn abort_fuse(devices: &[(u32, u32)]) {
    for (_, minor) in devices {
        let _ = fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
    }
}

/// What `down` removed, for its report.
#[derive(Debug, Default)]
pub struct DownReport {
    pub processes_killed: usize,
    pub namespaces_removed: usize,
    pub loop_devices_detached: usize,
    pub removed_dir: bool,
}

/// Stops every process in the given mount namespaces: SIGTERM, a grace period,
/// FUSE connections aborted, then SIGKILL. Returns how many processes there were.
fn stop_processes(namespaces: &[u64], before_kill: impl FnOnce()) -> usize {
    let find = || -> Vec<i32> {
        namespaces
            .iter()
            .flat_map(|ns| processes_in_mount_namespace(*ns))
            .map(|p| p.pid)
            .filter(|pid| *pid != std::process::id() as i32)
            .collect()
    };
    let first = find();
    if first.is_empty() {
        return 0;
    }
    for pid in &first {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    if wait_until(Duration::from_secs(5), || find().is_empty()) {
        return first.len();
    }
    before_kill();
    for pid in find() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    wait_until(Duration::from_secs(5), || find().is_empty());
    first.len()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn is_mount_point(path: &Path) -> bool {
    mountinfo::read_self()
        .map(|mounts| mounts.iter().any(|m| m.mount_point == path))
        .unwrap_or(false)
}

fn umount_lazy(path: &Path) -> Result<()> {
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
        .with_context(|| format!("unmounting {}", path.display()))
}

/// Runs a helper command; its stderr becomes the error if it fails.
fn run(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sorts nodo2 before nodo10.
fn node_sort_key(name: &str) -> (usize, String) {
    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
    (digits.parse().unwrap_or(usize::MAX), name.to_string())
}
