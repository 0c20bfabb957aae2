//! `tandem mount -o ro DEVICE DIR`: an OCFS2 volume mounted read-only through
//! FUSE.
//!
//! Like `mount`, the command returns once the filesystem is mounted: it starts
//! itself again as a detached server (`--foreground`, in a new session) and
//! waits until the mount appears in its mount table or the server exits with an
//! error, which it then reports. The server lives until `umount DIR`. Its later
//! messages (I/O errors while serving) go to `/run/tandem/mount.log`.

use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

/// Where a detached server's messages go once it is serving.
const LOG: &str = "/run/tandem/mount.log";
/// How long the server may take to come up (opening and checking the volume).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The FUSE mount's type in the mount table (`fuse`, or `fuse.SUBTYPE` when
/// mounted through fusermount).
const FS_TYPE: &str = "fuse";

#[derive(Args)]
pub struct MountArgs {
    /// Mount options, comma separated. Only read-only mounts exist so far: `ro` is required.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Option<String>,
    /// Filesystem type (only `ocfs2`).
    #[arg(short = 't', value_name = "TYPE")]
    fs_type: Option<String>,
    /// Serve in the foreground instead of returning once mounted.
    #[arg(long)]
    foreground: bool,
    /// Serve, sending messages to the log once mounted (how the detached
    /// server is started).
    #[arg(long, hide = true)]
    detached_server: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4, hide = true)]
    threads: usize,
    /// The volume: a block device or an image file.
    device: PathBuf,
    /// The directory to mount it on.
    dir: PathBuf,
}

pub fn main(args: MountArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem mount: {e:#}");
            // mount(8)'s status for a failed mount.
            ExitCode::from(32)
        }
    }
}

fn run(args: MountArgs) -> Result<()> {
    if let Some(t) = &args.fs_type {
        if t != "ocfs2" {
            bail!("unknown filesystem type '{t}' (tandem mounts ocfs2)");
        }
    }
    let options: Vec<&str> = args
        .options
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|o| !o.is_empty())
        .collect();
    if !options.contains(&"ro") {
        bail!(
            "read-write mounts are not available yet; mount read-only with -o ro \
             ({} on {})",
            args.device.display(),
            args.dir.display()
        );
    }
    if let Some(bad) = options.iter().find(|o| !matches!(**o, "ro" | "defaults")) {
        bail!("unknown mount option '{bad}' (known: ro)");
    }
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("mount point {}", args.dir.display()))?;
    if !dir.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    if args.foreground || args.detached_server {
        return serve(&args.device, &dir, args.threads, args.detached_server);
    }
    start_detached(&args, &dir)
}

/// Opens, checks and serves the volume until it is unmounted.
fn serve(device: &Path, dir: &Path, threads: usize, detached: bool) -> Result<()> {
    let fs = fuse::VolumeFs::open(device).map_err(anyhow::Error::msg)?;
    let session = fuse::mount_read_only(fs, dir, threads)
        .with_context(|| format!("mounting {} on {}", device.display(), dir.display()))?;
    if detached {
        redirect_output_to_log();
    }
    session
        .run()
        .with_context(|| format!("serving {} on {}", device.display(), dir.display()))
}

/// Starts the server in a new session and waits until its mount appears.
fn start_detached(args: &MountArgs, dir: &Path) -> Result<()> {
    // Absolute, as the mount table then shows it (the server names the
    // mount's source after the path it is given).
    let device = args
        .device
        .canonicalize()
        .with_context(|| format!("{}", args.device.display()))?;
    let before = fuse_mounts_on(dir, &device)?;
    let exe = std::env::current_exe().context("finding the tandem binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg("--detached-server")
        .arg("-o")
        .arg("ro")
        .arg("--threads")
        .arg(args.threads.to_string())
        .arg(&device)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; the
    // server must not die with the caller's terminal or process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the FUSE server")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            // Its error message went to our stderr already.
            bail!(
                "{} was not mounted (server exited: {status})",
                dir.display()
            );
        }
        if fuse_mounts_on(dir, &device)? > before {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            // Ours, by its id; it has not mounted anything.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} was not mounted within {}s",
                dir.display(),
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fuse_mounts_on(dir: &Path, device: &Path) -> Result<usize> {
    Ok(lab::mountinfo::read_self()?
        .iter()
        .filter(|m| {
            m.mount_point == dir
                && m.fs_type.split('.').next() == Some(FS_TYPE)
                && Path::new(&m.source) == device
        })
        .count())
}

/// Once serving, messages go to the log rather than to the terminal of
/// whoever ran `mount`.
fn redirect_output_to_log() {
    let _ = std::fs::create_dir_all("/run/tandem");
    if let Ok(log) = OpenOptions::new().create(true).append(true).open(LOG) {
        // SAFETY: dup2 onto stderr with a valid descriptor we own; the old
        // stderr is simply closed by it.
        unsafe {
            libc::dup2(log.as_raw_fd(), libc::STDERR_FILENO);
        }
    }
}
