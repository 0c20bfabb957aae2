//! Attaching a loop device to the served file, with the kernel's loop ioctls
//! (`LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE`, `LOOP_CLR_FD`): what `losetup --find
//! --show --direct-io=on --sector-size 4096 FILE` and `losetup -d` do.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

// linux/loop.h
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// How to attach.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Ask for the loop driver's direct I/O (no page cache of the backing file).
    pub direct_io: bool,
    /// Logical sector size of the loop device (512, 1024, 2048 or 4096).
    pub sector_size: u32,
    /// Attach read-only.
    pub read_only: bool,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            direct_io: true,
            sector_size: 4096,
            read_only: false,
        }
    }
}

/// An attached loop device; detached when dropped (lazily if it is in use).
#[derive(Debug)]
pub struct LoopDevice {
    number: u32,
    path: PathBuf,
    attached: bool,
}

fn ioctl(fd: &File, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: every request used here takes an integer or a pointer to a
    // properly sized, live struct passed as `arg` by the caller.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl LoopDevice {
    /// Attaches a free loop device to `backing`. Opening `backing` is what the
    /// open gate refuses: then this fails with `EMEDIUMTYPE`.
    pub fn attach(backing: &Path, options: &LoopOptions) -> io::Result<LoopDevice> {
        let backing_file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .open(backing)?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        let name = fs::canonicalize(backing).unwrap_or_else(|_| backing.to_owned());
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        let bytes = name.as_os_str().as_bytes();
        let n = bytes.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..n].copy_from_slice(&bytes[..n]);
        if options.direct_io {
            info.lo_flags |= LO_FLAGS_DIRECT_IO;
        }
        if options.read_only {
            info.lo_flags |= LO_FLAGS_READ_ONLY;
        }
        let mut config = LoopConfig {
            fd: backing_file.as_raw_fd() as u32,
            block_size: options.sector_size,
            info,
            reserved: [0; 8],
        };
        // Another process may take the free device between GET_FREE and
        // CONFIGURE: then it is busy and we ask again.
        for _ in 0..16 {
            let number = ioctl(&control, LOOP_CTL_GET_FREE, 0)? as u32;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let dev = open_node(&path, options.read_only)?;
            let arg = &mut config as *mut LoopConfig as libc::c_ulong;
            match ioctl(&dev, LOOP_CONFIGURE, arg) {
                Ok(_) => {
                    return Ok(LoopDevice {
                        number,
                        path,
                        attached: true,
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "no free loop device could be configured",
        ))
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// N.
    pub fn number(&self) -> u32 {
        self.number
    }

    fn sys(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/sys/block/loop{}/loop/{file}", self.number))
    }

    /// Whether the driver really uses direct I/O on the backing file (it
    /// silently falls back to buffered I/O when it cannot).
    pub fn direct_io(&self) -> bool {
        fs::read_to_string(self.sys("dio")).is_ok_and(|s| s.trim() == "1")
    }

    /// Detaches (`LOOP_CLR_FD`); if the device is still open (mounted), the
    /// kernel detaches it when the last user closes it. Waits up to `wait` for
    /// the backing file to be released, and says whether it was.
    pub fn detach_wait(mut self, wait: Duration) -> io::Result<bool> {
        self.clear()?;
        let deadline = Instant::now() + wait;
        while self.sys("backing_file").exists() {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(true)
    }

    /// Detaches, waiting up to 5 s for the backing file to be released.
    pub fn detach(self) -> io::Result<bool> {
        self.detach_wait(Duration::from_secs(5))
    }

    fn clear(&mut self) -> io::Result<()> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        let dev = open_node(&self.path, true)?;
        match ioctl(&dev, LOOP_CLR_FD, 0) {
            // ENXIO: already detached.
            Err(e) if e.raw_os_error() != Some(libc::ENXIO) => Err(e),
            _ => Ok(()),
        }
    }
}

fn open_node(path: &Path, read_only: bool) -> io::Result<File> {
    // The node may appear a moment after LOOP_CTL_GET_FREE creates the device;
    // in a private /dev (a lab node) nobody creates it, so make it from sysfs.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match OpenOptions::new().read(true).write(!read_only).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                if make_node(path).is_err() {
                    thread::sleep(Duration::from_millis(10));
                }
            }
            other => return other,
        }
    }
}

/// The device number (`st_dev`) of the file behind loop device `number`, read
/// with `LOOP_GET_STATUS64` (which, unlike `stat` on the backing path, never
/// waits on a FUSE server that stopped answering).
pub fn backing_device(number: u32) -> io::Result<u64> {
    let path = PathBuf::from(format!("/dev/loop{number}"));
    if !path.exists() {
        make_node(&path)?;
    }
    let dev = OpenOptions::new().read(true).open(&path)?;
    // SAFETY: LoopInfo64 is plain old data; all-zero is a valid value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    ioctl(
        &dev,
        LOOP_GET_STATUS64,
        &mut info as *mut LoopInfo64 as libc::c_ulong,
    )?;
    Ok(info.lo_device)
}

/// Detaches loop device `number` (`LOOP_CLR_FD`; lazily if it is still open).
pub fn detach_number(number: u32) -> io::Result<()> {
    let path = PathBuf::from(format!("/dev/loop{number}"));
    if !path.exists() {
        make_node(&path)?;
    }
    let dev = OpenOptions::new().read(true).open(&path)?;
    ioctl(&dev, LOOP_CLR_FD, 0).map(|_| ())
}

/// Creates the block device node `path` (`/dev/loopN`) with the numbers sysfs
/// gives for `loopN`.
pub fn make_node(path: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let numbers = fs::read_to_string(Path::new("/sys/block").join(name).join("dev"))?;
    let (major, minor) = numbers
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad sysfs dev numbers"))?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the
    // call; mknod only reads it.
    let rc = unsafe {
        libc::mknod(
            c_path.as_ptr(),
            libc::S_IFBLK | 0o660,
            libc::makedev(major, minor),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = self.clear();
    }
}
