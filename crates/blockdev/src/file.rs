//! A file or a block device as a [`BlockDevice`]: positioned `pread`/`pwrite`
//! on one descriptor shared by every thread, `fdatasync` for flush and FUA,
//! `fallocate(PUNCH_HOLE)` for discard. With `direct`, the file is opened
//! `O_DIRECT` and every transfer goes through a buffer aligned to `alignment`;
//! requests that are not aligned are done as read-modify-write of the aligned
//! blocks around them, serialized among themselves.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{check_range, BlockDevice};

/// How to open a [`FileDevice`].
#[derive(Debug, Clone)]
pub struct FileDeviceOptions {
    /// Open with `O_DIRECT` (bypass the page cache).
    pub direct: bool,
    /// Transfer alignment in direct mode (a power of two, at least the
    /// device's logical block size). The device size must be a multiple of it.
    pub alignment: usize,
    /// Open read-only: writes and discards then fail (`EBADF` from the kernel).
    pub read_only: bool,
}

impl Default for FileDeviceOptions {
    fn default() -> Self {
        FileDeviceOptions {
            direct: false,
            alignment: 4096,
            read_only: false,
        }
    }
}

/// A regular file or block device.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: u64,
    direct: bool,
    alignment: usize,
    /// Serializes the read-modify-write of unaligned direct requests.
    rmw: Mutex<()>,
}

impl FileDevice {
    /// Opens an existing file or block device; its size is the device's size.
    pub fn open(path: impl AsRef<Path>, options: &FileDeviceOptions) -> io::Result<Self> {
        let path = path.as_ref();
        let mut open = OpenOptions::new();
        open.read(true).write(!options.read_only);
        if options.direct {
            open.custom_flags(libc::O_DIRECT);
        }
        let mut file = open.open(path)?;
        // Seeking to the end gives the size of regular files and block devices alike.
        let size = file.seek(SeekFrom::End(0))?;
        if options.direct {
            let a = options.alignment;
            if a == 0 || !a.is_power_of_two() || !size.is_multiple_of(a as u64) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: size {size} is not a multiple of the direct I/O alignment {a}",
                        path.display()
                    ),
                ));
            }
        }
        Ok(FileDevice {
            file,
            path: path.to_owned(),
            size,
            direct: options.direct,
            alignment: options.alignment,
            rmw: Mutex::new(()),
        })
    }

    /// Creates (or truncates) a sparse regular file of `size` bytes and opens it.
    pub fn create(
        path: impl AsRef<Path>,
        size: u64,
        options: &FileDeviceOptions,
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path.as_ref())?;
        file.set_len(size)?;
        drop(file);
        FileDevice::open(path, options)
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn aligned(&self, offset: u64, len: usize) -> bool {
        let a = self.alignment as u64;
        offset.is_multiple_of(a) && (len as u64).is_multiple_of(a)
    }

    /// The aligned window `[start, start + len)` around a request.
    fn window(&self, offset: u64, len: usize) -> (u64, usize) {
        let a = self.alignment as u64;
        let start = offset / a * a;
        let end = (offset + len as u64).div_ceil(a) * a;
        (start, (end - start) as usize)
    }

    fn read_direct(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (start, len) = self.window(offset, buf.len());
        let mut bounce = AlignedBuf::new(len, self.alignment)?;
        self.file.read_exact_at(bounce.as_mut_slice(), start)?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&bounce.as_slice()[at..at + buf.len()]);
        Ok(())
    }

    fn write_direct(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (start, len) = self.window(offset, buf.len());
        let mut bounce = AlignedBuf::new(len, self.alignment)?;
        if self.aligned(offset, buf.len()) {
            bounce.as_mut_slice().copy_from_slice(buf);
            return self.file.write_all_at(bounce.as_slice(), start);
        }
        let _rmw = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        self.file.read_exact_at(bounce.as_mut_slice(), start)?;
        let at = (offset - start) as usize;
        bounce.as_mut_slice()[at..at + buf.len()].copy_from_slice(buf);
        self.file.write_all_at(bounce.as_slice(), start)
    }

    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        const PIECE: u64 = 1 << 20;
        let zeros = vec![0u8; PIECE.min(len) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let n = PIECE.min(offset + len - pos) as usize;
            self.write_at(&zeros[..n], pos, false)?;
            pos += n as u64;
        }
        Ok(())
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.direct {
            self.read_direct(buf, offset)
        } else {
            self.file.read_exact_at(buf, offset)
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        if !buf.is_empty() {
            if self.direct {
                self.write_direct(buf, offset)?;
            } else {
                self.file.write_all_at(buf, offset)?;
            }
        }
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate on a descriptor we own, with plain integer arguments;
        // it touches no memory of ours.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                n,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // No hole punching here (or not at this alignment): zeros do the same.
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENODEV) => {
                self.write_zeros(offset, len)
            }
            _ => Err(err),
        }
    }
}

/// A zeroed heap buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (len.max(1)).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(AlignedBuf { ptr, layout })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to layout.size() initialized (zeroed) bytes that we
        // own for our lifetime; the borrow of self keeps them from being freed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated by alloc_zeroed with this very layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let opts = FileDeviceOptions {
            direct,
            ..Default::default()
        };
        let dev = FileDevice::create(dir.path().join("disk"), 1 << 20, &opts).unwrap();
        assert_eq!(dev.size(), 1 << 20);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        dev.write_at(&data, 4095, false).unwrap();
        dev.write_at(&data[..4096], 16384, true).unwrap();
        let mut back = vec![0; data.len()];
        dev.read_at(&mut back, 4095).unwrap();
        assert!(back == data);
        dev.flush().unwrap();
        dev.discard(4000, 5000).unwrap();
        let mut all = vec![0; 20_000];
        dev.read_at(&mut all, 0).unwrap();
        assert!(all[4000..9000].iter().all(|&b| b == 0));
        assert_eq!(all[9000], data[9000 - 4095]);
        assert!(dev.write_at(&[0; 1], 1 << 20, false).is_err());
    }

    #[test]
    fn buffered_roundtrip() {
        roundtrip(false);
    }

    #[test]
    fn direct_roundtrip() {
        roundtrip(true);
    }

    #[test]
    fn direct_refuses_unaligned_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, [0u8; 1000]).unwrap();
        let opts = FileDeviceOptions {
            direct: true,
            ..Default::default()
        };
        assert!(FileDevice::open(&path, &opts).is_err());
    }
}
