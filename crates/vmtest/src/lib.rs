//! `vmtest`: the real Linux kernel as a test fixture.
//!
//! Some judges of what tandem writes (and some writers of what it reads) exist
//! only in the kernel: the `ocfs2` filesystem driver, `drbd`. The machines the
//! tests run on cannot load them, so this crate boots the stock Debian 12 kernel
//! under QEMU's software emulation (`-accel tcg`, no KVM needed) from a small
//! initramfs built here per run, with the images under test attached as virtio
//! disks, runs a shell script inside and brings its results back.
//!
//! What a run is made of:
//! - the cache `scripts/vm-kernel` prepares (`/var/cache/tandem/vm`, or
//!   `$TANDEM_VM_CACHE`): the kernel, the modules in load order, busybox-static;
//! - an initramfs (a newc [`cpio`] archive, written in memory) holding busybox,
//!   the modules, `guest/init` as PID 1, the test script as `/test.sh`, and any
//!   host programs the script needs with their shared libraries;
//! - one virtio disk per image, named by its serial in the guest
//!   (`/dev/disk/by-serial/SERIAL`), and a scratch disk onto which the guest
//!   writes its `/out` directory as a tar archive, unpacked on the host into
//!   [`Outcome::out`].
//!
//! A run is bounded: QEMU runs under `timeout`, with no network and
//! `-no-reboot`, so a guest that panics or hangs ends the run with an error
//! carrying the console. Nothing is downloaded here: a missing cache or QEMU is
//! an error that says to run `scripts/install`.

pub mod cpio;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where `scripts/vm-kernel` leaves the kernel unless `$TANDEM_VM_CACHE` says
/// otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/tandem/vm";

const QEMU: &str = "qemu-system-x86_64";
const GUEST_INIT: &str = include_str!("../guest/init");
/// Serial of the disk the guest writes `/out` onto.
const OUT_SERIAL: &str = "out";
/// virtio-blk serials are at most 20 bytes.
const MAX_SERIAL: usize = 20;

/// What went wrong with a run (not with the script: its exit status is in
/// [`Outcome::exit`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Something the VM needs is not installed.
    #[error("{what} is missing: run scripts/install (as root), which installs qemu-system-x86 and busybox-static and runs scripts/vm-kernel")]
    NotInstalled {
        /// The missing file or program.
        what: String,
    },
    /// A file of the run could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A host command (QEMU, tar, ldd) failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// The guest did not finish within the timeout.
    #[error("the VM ran past its {secs} s timeout and was killed; console:\n{console}")]
    Timeout {
        /// The timeout.
        secs: u64,
        /// The end of the console.
        console: String,
    },
    /// The VM ended without the init's exit line (a kernel panic, a crash).
    #[error("the VM stopped before the test script finished; console:\n{console}")]
    NoExitStatus {
        /// The end of the console.
        console: String,
    },
    /// The run was described wrongly.
    #[error("invalid run: {0}")]
    Invalid(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The kernel and tools a run boots: the cache and QEMU, checked to be there.
#[derive(Debug, Clone)]
pub struct Vm {
    cache: PathBuf,
    modules: Vec<String>,
}

/// A disk image attached to the guest.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The image (raw).
    pub path: PathBuf,
    /// Its name in the guest: `/dev/disk/by-serial/SERIAL`.
    pub serial: String,
}

/// What to run in the guest.
#[derive(Debug, Clone)]
pub struct Guest {
    script: String,
    disks: Vec<Disk>,
    host_programs: Vec<PathBuf>,
    timeout: Duration,
    memory_mib: u32,
    out_size: u64,
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status of the test script.
    pub exit: i32,
    /// Everything the guest printed on its console (kernel messages and the
    /// script's stdout and stderr).
    pub console: String,
    /// The guest's `/out` directory, unpacked.
    pub out: tempfile::TempDir,
    /// Wall-clock time of the VM, boot to power-off.
    pub elapsed: Duration,
}

impl Outcome {
    /// A file the script left in `/out`.
    pub fn out_file(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    /// Panics (for tests) with the console unless the script exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.exit == 0,
            "the guest script exited {}; console:\n{}",
            self.exit,
            self.console
        );
    }
}

impl Guest {
    /// A guest that runs `script` (busybox `sh`; `/out` is its output
    /// directory, its working directory is a tmpfs).
    pub fn new(script: impl Into<String>) -> Guest {
        Guest {
            script: script.into(),
            disks: Vec::new(),
            host_programs: Vec::new(),
            timeout: Duration::from_secs(60),
            memory_mib: 512,
            out_size: 64 << 20,
        }
    }

    /// Attaches `path` as a virtio disk named `serial` in the guest.
    pub fn disk(mut self, path: impl Into<PathBuf>, serial: &str) -> Guest {
        self.disks.push(Disk {
            path: path.into(),
            serial: serial.to_string(),
        });
        self
    }

    /// Copies a host program (and the shared libraries `ldd` lists for it) into
    /// the guest at the same path: for tools busybox lacks (e.g. `setfattr`).
    pub fn host_program(mut self, path: impl Into<PathBuf>) -> Guest {
        self.host_programs.push(path.into());
        self
    }

    /// Kills the VM after `timeout` (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Guest {
        self.timeout = timeout;
        self
    }

    /// Guest memory (default 512 MiB).
    pub fn memory_mib(mut self, mib: u32) -> Guest {
        self.memory_mib = mib;
        self
    }

    /// Size of the disk `/out` is written to (default 64 MiB).
    pub fn out_size(mut self, bytes: u64) -> Guest {
        self.out_size = bytes;
        self
    }
}

/// Runs `program args` under `timeout`, so no host command can hang a test.
pub fn run_bounded(secs: u64, program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(secs.to_string())
        .arg(program)
        .args(args)
        .output()
        .map_err(io(format!("starting {program}")))?;
    Ok(out)
}

fn command_error(program: &str, args: &[&str], out: &Output) -> Error {
    Error::Command {
        command: format!("{program} {}", args.join(" ")),
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

fn in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The last `n` lines of `text`: what a panic message can show.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Vm {
    /// Finds the cache and QEMU; an error names what is missing.
    pub fn locate() -> Result<Vm> {
        let cache = std::env::var_os("TANDEM_VM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
        for f in ["vmlinuz", "busybox", "modules.load"] {
            if !cache.join(f).is_file() {
                return Err(Error::NotInstalled {
                    what: cache.join(f).display().to_string(),
                });
            }
        }
        if in_path(QEMU).is_none() {
            return Err(Error::NotInstalled {
                what: QEMU.to_string(),
            });
        }
        let list = std::fs::read_to_string(cache.join("modules.load"))
            .map_err(io("reading modules.load"))?;
        let modules: Vec<String> = list
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        for m in &modules {
            if !cache.join("modules").join(m).is_file() {
                return Err(Error::NotInstalled {
                    what: format!("module {m} in {}", cache.display()),
                });
            }
        }
        Ok(Vm { cache, modules })
    }

    /// Boots the kernel with `guest`'s script and disks, waits for it to power
    /// off, and collects its console and `/out`.
    pub fn run(&self, guest: &Guest) -> Result<Outcome> {
        let work = tempfile::tempdir().map_err(io("creating a work directory"))?;
        let initramfs = work.path().join("initramfs.cpio");
        std::fs::write(&initramfs, self.initramfs(guest)?).map_err(io("writing the initramfs"))?;
        let out_img = work.path().join("out.img");
        std::fs::File::create(&out_img)
            .and_then(|f| f.set_len(guest.out_size))
            .map_err(io("creating the output disk"))?;
        let console = work.path().join("console.log");

        let mut args: Vec<String> = vec![
            "-accel".into(),
            "tcg".into(),
            // "max" has SSE4.2, so crc32c-intel (a dependency of jbd2's crc32c)
            // loads instead of failing.
            "-cpu".into(),
            "max".into(),
            "-m".into(),
            guest.memory_mib.to_string(),
            "-smp".into(),
            "1".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-nic".into(),
            "none".into(),
            "-no-reboot".into(),
            "-serial".into(),
            format!("file:{}", console.display()),
            "-kernel".into(),
            self.cache.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            initramfs.display().to_string(),
            // panic=-1 reboots at once on a panic, and -no-reboot turns the
            // reboot into QEMU exiting.
            "-append".into(),
            "console=ttyS0 panic=-1 quiet rdinit=/init".into(),
        ];
        let out_disk = Disk {
            path: out_img.clone(),
            serial: OUT_SERIAL.into(),
        };
        for (i, d) in guest.disks.iter().chain([&out_disk]).enumerate() {
            if d.serial.is_empty()
                || d.serial.len() > MAX_SERIAL
                || !d
                    .serial
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(Error::Invalid(format!(
                    "disk serial {:?} must be 1-{MAX_SERIAL} letters, digits or '-'",
                    d.serial
                )));
            }
            if d.path.display().to_string().contains(',') {
                return Err(Error::Invalid(format!(
                    "QEMU cannot take a comma in a disk path: {}",
                    d.path.display()
                )));
            }
            args.push("-drive".into());
            args.push(format!(
                "file={},format=raw,if=none,id=d{i}",
                d.path.display()
            ));
            args.push("-device".into());
            args.push(format!("virtio-blk-pci,drive=d{i},serial={}", d.serial));
        }

        let secs = guest.timeout.as_secs().max(1);
        let started = Instant::now();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_bounded(secs, QEMU, &argv)?;
        let elapsed = started.elapsed();
        let console_text = std::fs::read(&console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        // timeout(1) exits 124 when it had to stop the command.
        if out.status.code() == Some(124) || out.status.code() == Some(137) {
            return Err(Error::Timeout {
                secs,
                console: tail(&console_text, 60),
            });
        }
        if !out.status.success() {
            return Err(command_error(QEMU, &argv, &out));
        }
        let exit = console_text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("vmtest: exit "))
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| Error::NoExitStatus {
                console: tail(&console_text, 60),
            })?;

        let out_dir = tempfile::tempdir().map_err(io("creating the output directory"))?;
        let img = out_img.display().to_string();
        let dest = out_dir.path().display().to_string();
        let tar_args = ["-xf", img.as_str(), "-C", dest.as_str()];
        let tar = run_bounded(60, "tar", &tar_args)?;
        if !tar.status.success() {
            return Err(command_error("tar", &tar_args, &tar));
        }
        Ok(Outcome {
            exit,
            console: console_text,
            out: out_dir,
            elapsed,
        })
    }

    /// The whole initramfs of a run: a fixed base and the run's own files.
    fn initramfs(&self, guest: &Guest) -> Result<Vec<u8>> {
        let mut a = cpio::Archive::new();
        let mut dirs = BTreeSet::new();
        for d in [
            "bin",
            "dev",
            "lib/modules",
            "mnt",
            "out",
            "proc",
            "sys",
            "tmp",
        ] {
            add_dir(&mut a, &mut dirs, d);
        }
        // The kernel opens /dev/console for init before anything mounts /dev.
        a.char_device("dev/console", 5, 1);
        a.file("init", 0o755, GUEST_INIT.as_bytes());
        let read = |p: &Path| std::fs::read(p).map_err(io(format!("reading {}", p.display())));
        a.file("bin/busybox", 0o755, &read(&self.cache.join("busybox"))?);
        a.symlink("bin/sh", "busybox");
        for m in &self.modules {
            let data = read(&self.cache.join("modules").join(m))?;
            a.file(&format!("lib/modules/{m}"), 0o644, &data);
        }
        a.file(
            "lib/modules/modules.load",
            0o644,
            self.modules.join("\n").as_bytes(),
        );
        // The init waits for this many virtio disks (the images and /out's).
        a.file(
            "disks",
            0o644,
            format!("{}\n", guest.disks.len() + 1).as_bytes(),
        );
        a.file("test.sh", 0o755, guest.script.as_bytes());

        let mut copied = BTreeSet::new();
        for prog in &guest.host_programs {
            for file in std::iter::once(prog.clone()).chain(shared_libraries(prog)?) {
                if !copied.insert(file.clone()) {
                    continue;
                }
                let rel = file
                    .strip_prefix("/")
                    .map_err(|_| Error::Invalid(format!("{} is not absolute", file.display())))?
                    .display()
                    .to_string();
                if let Some(parent) = Path::new(&rel).parent() {
                    add_dir(&mut a, &mut dirs, &parent.display().to_string());
                }
                a.file(&rel, 0o755, &read(&file)?);
            }
        }
        Ok(a.finish())
    }
}

/// Adds `path` and its parents once each.
fn add_dir(a: &mut cpio::Archive, dirs: &mut BTreeSet<String>, path: &str) {
    let mut so_far = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(part);
        if dirs.insert(so_far.clone()) {
            a.dir(&so_far);
        }
    }
}

/// The shared libraries (and the loader) `ldd` lists for `prog`.
fn shared_libraries(prog: &Path) -> Result<Vec<PathBuf>> {
    if !prog.is_file() {
        return Err(Error::NotInstalled {
            what: prog.display().to_string(),
        });
    }
    let p = prog.display().to_string();
    let out = run_bounded(30, "ldd", &[p.as_str()])?;
    // A static program makes ldd fail with "not a dynamic executable": it
    // needs nothing else.
    if !out.status.success() {
        return Ok(Vec::new());
    }
    // Lines are "name => /path (0x...)" or "/path (0x...)"; the vDSO has no path.
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn dirs_are_added_once_parents_first() {
        let mut a = cpio::Archive::new();
        let mut dirs = BTreeSet::new();
        add_dir(&mut a, &mut dirs, "usr/lib/x");
        add_dir(&mut a, &mut dirs, "usr/bin");
        let v: Vec<&str> = dirs.iter().map(String::as_str).collect();
        assert_eq!(v, ["usr", "usr/bin", "usr/lib", "usr/lib/x"]);
    }
}
