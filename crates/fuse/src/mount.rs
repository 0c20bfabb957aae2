//! Mounting, serving and tearing down the FUSE device file.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use blockdev::BlockDevice;
use fuser::{Config, MountOption, Session, SessionACL};

use crate::{DeviceFs, OpenGate};

/// `prctl` option (linux/prctl.h; not in the libc crate yet).
const PR_SET_IO_FLUSHER: libc::c_int = 57;

/// How to serve a device.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Name of the device file in the mount's root.
    pub file_name: String,
    /// FUSE worker threads (at least 2: one may be blocked in a flush).
    pub threads: usize,
    /// Mark the serving threads `PR_SET_IO_FLUSHER`, so allocations they make
    /// never recurse into I/O that waits on them (needs `CAP_SYS_RESOURCE`).
    pub io_flusher: bool,
    /// In [`DeviceMount::shutdown`]: how long to wait for the threads to end
    /// after unmounting, and again after aborting, before giving up.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            file_name: "device".to_owned(),
            threads: 2,
            io_flusher: true,
            grace: Duration::from_secs(5),
        }
    }
}

/// What [`DeviceMount::shutdown`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// The mount was busy (the file still open, e.g. by a loop device) and was
    /// detached lazily.
    pub lazy_unmount: bool,
    /// The threads did not end in time and the connection was aborted.
    pub aborted: bool,
    /// The threads still had not ended after the abort (one is stuck inside
    /// the device); they were left behind. The kernel side is released anyway.
    pub threads_left: bool,
}

/// A served device: the FUSE mount and its worker threads. Dropping it shuts
/// it down like [`shutdown`](DeviceMount::shutdown).
#[derive(Debug)]
pub struct DeviceMount {
    mountpoint: PathBuf,
    file: PathBuf,
    connection: Option<u32>,
    io_flusher: bool,
    grace: Duration,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl DeviceMount {
    /// Mounts a FUSE filesystem on `mountpoint` (an existing directory) whose
    /// one file, `options.file_name`, is `device`, and serves it until shut down.
    pub fn serve(
        device: Arc<dyn BlockDevice>,
        mountpoint: &Path,
        gate: OpenGate,
        options: &ServeOptions,
    ) -> io::Result<DeviceMount> {
        let mountpoint = mountpoint.canonicalize()?;
        let fs = DeviceFs::new(device, gate, &options.file_name);
        let config = {
            let mut c = Config::default();
            c.mount_options = vec![
                MountOption::FSName("tandem".to_owned()),
                MountOption::Subtype("tandem-device".to_owned()),
                MountOption::NoDev,
                MountOption::NoSuid,
                MountOption::NoExec,
                MountOption::NoAtime,
                MountOption::DefaultPermissions,
            ];
            c.acl = SessionACL::Owner;
            c.n_threads = Some(options.threads.max(2));
            c.clone_fd = true;
            c
        };
        let want_flusher = options.io_flusher;
        let (tx, rx) = mpsc::channel::<io::Result<bool>>();
        let at = mountpoint.clone();
        // The session is created and run on a thread of its own: the
        // IO_FLUSHER mark is per thread and the workers it spawns inherit it.
        let thread = thread::Builder::new()
            .name("tandem-fuse".to_owned())
            .spawn(move || {
                let flusher = want_flusher && set_io_flusher().is_ok();
                let session = match Session::new(fs, &at, &config) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = tx.send(Ok(flusher));
                session.run()
            })?;
        let io_flusher = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(flusher)) => flusher,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("FUSE mount on {} did not come up", mountpoint.display()),
                ))
            }
        };
        let connection = fuse_connection_of(&mountpoint).ok().flatten();
        Ok(DeviceMount {
            file: mountpoint.join(&options.file_name),
            mountpoint,
            connection,
            io_flusher,
            grace: options.grace,
            thread: Some(thread),
        })
    }

    /// The device file (attach the loop device here).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the serving threads are marked `PR_SET_IO_FLUSHER`.
    pub fn io_flusher(&self) -> bool {
        self.io_flusher
    }

    /// The FUSE connection number (the directory under
    /// `/sys/fs/fuse/connections`), if it could be found.
    pub fn connection(&self) -> Option<u32> {
        self.connection
    }

    /// Aborts the FUSE connection: every pending and future request fails
    /// with `ENOTCONN`, the workers' reads from `/dev/fuse` end, nothing in
    /// the kernel waits on us any more.
    pub fn abort(&self) -> io::Result<()> {
        let n = self.connection.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "FUSE connection number unknown")
        })?;
        abort_connection(n)
    }

    /// Unmounts and stops the workers; never blocks for more than about twice
    /// the grace period. Detach any loop device from the file first, or the
    /// unmount can only be lazy and the abort will fail its I/O.
    pub fn shutdown(mut self) -> io::Result<ShutdownReport> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<ShutdownReport> {
        let mut report = ShutdownReport::default();
        let Some(thread) = self.thread.take() else {
            return Ok(report);
        };
        let mut unmount_error = None;
        match umount(&self.mountpoint, 0) {
            Ok(()) => {}
            // Already gone (unmounted by someone else, or the connection died).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            // Busy (the file is still open): detach it from the tree now; the
            // connection lives on until the last user closes the file.
            Err(_) => {
                report.lazy_unmount = true;
                if let Err(e) = umount(&self.mountpoint, libc::MNT_DETACH) {
                    unmount_error = Some(e);
                }
            }
        }
        // If it could not be unmounted at all, waiting is pointless: abort.
        let grace = if unmount_error.is_some() {
            Duration::ZERO
        } else {
            self.grace
        };
        if !wait_finished(&thread, grace) {
            report.aborted = true;
            let _ = self.abort();
            if !wait_finished(&thread, self.grace) {
                report.threads_left = true;
                return Ok(report);
            }
        }
        match thread.join() {
            // The workers end with ENODEV or similar when the connection goes;
            // that is the normal end, not a failure.
            Ok(_) => match unmount_error {
                Some(e) => Err(e),
                None => Ok(report),
            },
            Err(_) => Err(io::Error::other("FUSE worker thread panicked")),
        }
    }
}

impl Drop for DeviceMount {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn wait_finished<T>(thread: &JoinHandle<T>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

fn set_io_flusher() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; affects this thread (and
    // threads it creates later).
    let rc = unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn umount(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The FUSE connection number of the mount on `mountpoint`, from
/// `/proc/self/mountinfo` (no request to the filesystem, so safe even when it
/// hangs): the kernel names the connection after the superblock's device
/// number, `major << 20 | minor` (major is 0 for FUSE, so it is the minor).
pub fn fuse_connection_of(mountpoint: &Path) -> io::Result<Option<u32>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let want = mountpoint.as_os_str().as_bytes();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(devno), Some(point), Some(fstype)) =
            (fields.get(2), fields.get(4), fields.get(dash + 1))
        else {
            continue;
        };
        if !(fstype.starts_with("fuse.") || *fstype == "fuse") || unescape(point) != want {
            continue;
        }
        let mut parts = devno.split(':');
        if let (Some(Ok(major)), Some(Ok(minor))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u32>),
        ) {
            // The last match is the mount on top.
            found = Some((major << 20) | minor);
        }
    }
    Ok(found)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Writes to `/sys/fs/fuse/connections/N/abort`, mounting `fusectl` there
/// first if it is not (and unmounting it again after).
pub(crate) fn abort_connection(n: u32) -> io::Result<()> {
    let abort = Path::new(FUSECTL).join(n.to_string()).join("abort");
    if abort.exists() {
        return fs::write(&abort, b"1");
    }
    let target = CString::new(FUSECTL)?;
    let kind = CString::new("fusectl")?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the
    // call; data is null, which fusectl accepts.
    let rc = unsafe {
        libc::mount(
            kind.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let result = fs::write(&abort, b"1");
    let _ = umount(Path::new(FUSECTL), libc::MNT_DETACH);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/tmp/a\040b"), b"/tmp/a b");
        assert_eq!(unescape(r"/x\134"), b"/x\\");
        assert_eq!(unescape(r"/x\1"), b"/x\\1");
    }
}
