//! The backing device of a volume, for the meta-data verbs: opened exclusively
//! (a block device that is mounted or in use elsewhere is refused with `EBUSY`,
//! as drbdmeta refuses it), sized with `BLKGETSIZE64`, read and written with
//! `pread`/`pwrite` of whole 4 KiB blocks. Plain files work too (drbdmeta
//! refuses them; we allow them for tests and images).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use drbd_meta::MetaDevice;

/// `BLKGETSIZE64`: `_IOR(0x12, 114, size_t)`, the size of a block device in bytes.
/// (The libc crate does not export it.)
const BLKGETSIZE64: u64 =
    (2 << 30) | ((std::mem::size_of::<usize>() as u64) << 16) | (0x12 << 8) | 114;

/// An open backing device.
pub struct BackingDevice {
    file: File,
    size: u64,
}

impl BackingDevice {
    /// Opens `path` for reading and writing (`O_EXCL` for block devices).
    pub fn open(path: &Path) -> io::Result<BackingDevice> {
        let is_block = std::fs::metadata(path)?.file_type().is_block_device();
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if is_block {
            options.custom_flags(libc::O_EXCL);
        }
        let file = options.open(path)?;
        let size = if is_block {
            block_device_size(&file)?
        } else {
            file.metadata()?.len()
        };
        Ok(BackingDevice { file, size })
    }
}

fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a
    // live, properly aligned u64 on our stack; the fd is open for the whole call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

impl MetaDevice for BackingDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}
