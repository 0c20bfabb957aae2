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
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
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

    /// Opens a replicated resource's backing disk. A block device is opened
    /// `O_DIRECT`, aligned to its logical block size: like DRBD's bios, our
    /// writes then reach the device without a second copy in its page cache
    /// (buffered, every later 4 KiB write walked the large folios a resync left
    /// there, and the cache hid what the disk really held). A regular file
    /// stays buffered: its cache belongs to its file system.
    pub fn open_backing(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let is_block = std::fs::metadata(path)?.file_type().is_block_device();
        if !is_block {
            return FileDevice::open(path, &FileDeviceOptions::default());
        }
        let probe = File::open(path)?;
        let options = FileDeviceOptions {
            direct: true,
            alignment: logical_block_size(&probe),
            read_only: false,
        };
        drop(probe);
        FileDevice::open(path, &options)
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

    /// The alignment its transfers need (offset, length and memory), if it
    /// was opened `O_DIRECT`.
    pub fn direct_alignment(&self) -> Option<usize> {
        self.direct.then_some(self.alignment)
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
        if self.aligned(offset, buf.len()) && (buf.as_ptr() as usize).is_multiple_of(self.alignment)
        {
            // Already aligned in memory too: no bounce copy.
            return self.file.write_all_at(buf, offset);
        }
        if self.aligned(offset, buf.len()) {
            let bounce = AlignedBuf::copy_of(buf, self.alignment)?;
            return self.file.write_all_at(bounce.as_slice(), offset);
        }
        let (start, len) = self.window(offset, buf.len());
        let mut bounce = AlignedBuf::new(len, self.alignment)?;
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

impl AsRawFd for FileDevice {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
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

/// The logical block size of a block device (`BLKSSZGET`), the smallest
/// unit of its direct I/O; 512 for anything else or an answer out of range.
pub fn logical_block_size(file: &File) -> usize {
    const FALLBACK: usize = 512;
    let is_block = file
        .metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    if !is_block {
        return FALLBACK;
    }
    // BLKSSZGET = _IO(0x12, 104): the logical block size, as an int.
    const BLKSSZGET: libc::c_ulong = 0x1268;
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the valid pointer we pass.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut size) };
    match usize::try_from(size) {
        Ok(s) if rc == 0 && s.is_power_of_two() && (512..=4096).contains(&s) => s,
        _ => FALLBACK,
    }
}

/// A heap buffer aligned for `O_DIRECT`.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    /// `len` zeroed bytes aligned to `align` (a power of two).
    pub fn new(len: usize, align: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (len.max(1)).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(AlignedBuf { ptr, layout })
    }

    /// A copy of `data` aligned to `align` (a power of two), without zeroing
    /// it first: the bounce buffer of a direct write.
    pub fn copy_of(data: &[u8], align: usize) -> io::Result<Self> {
        if data.is_empty() {
            return AlignedBuf::new(0, align);
        }
        let layout = Layout::from_size_align(data.len(), align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (data is not empty).
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = std::ptr::NonNull::new(raw)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: the new allocation holds data.len() bytes and cannot overlap
        // data; after the copy every byte of it is initialized.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), raw, data.len()) };
        Ok(AlignedBuf { ptr, layout })
    }

    /// `len` bytes aligned to `align` (a power of two): `prefix`, then what
    /// reads from `fd` bring until it is full, filled in place without being
    /// zeroed first (a received frame's block data goes from the socket
    /// straight to memory the disk's direct I/O takes as it is). End of file
    /// before it is full is `UnexpectedEof`.
    pub fn read_after(
        prefix: &[u8],
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
        align: usize,
    ) -> io::Result<Self> {
        if prefix.len() > len || len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a prefix of {} bytes in a buffer of {len}", prefix.len()),
            ));
        }
        let layout = Layout::from_size_align(len, align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (len > 0).
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = std::ptr::NonNull::new(raw)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // Owned from here on, so every error below frees it. Its bytes are not
        // read (as_slice) before all of them are written.
        let buf = AlignedBuf { ptr, layout };
        // SAFETY: the allocation holds len >= prefix.len() bytes and cannot
        // overlap prefix.
        unsafe { std::ptr::copy_nonoverlapping(prefix.as_ptr(), raw, prefix.len()) };
        let mut filled = prefix.len();
        while filled < len {
            // SAFETY: read(2) writes at most len - filled bytes at raw + filled,
            // inside the allocation; no reference to the unwritten bytes exists.
            let n = unsafe { libc::read(fd.as_raw_fd(), raw.add(filled).cast(), len - filled) };
            match n {
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                n => filled += n as usize,
            }
        }
        Ok(buf)
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to layout.size() initialized (zeroed or copied) bytes that we
        // own for our lifetime; the borrow of self keeps them from being freed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// Its bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated by alloc_zeroed or alloc with this very layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_after_is_the_prefix_then_what_was_read() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        let sent: Vec<u8> = (0..20_000u32).map(|i| (i * 13) as u8).collect();
        let writer = std::thread::spawn(move || {
            // In pieces, so the reads come back short.
            for piece in sent.chunks(3_000) {
                tx.write_all(piece).unwrap();
            }
            sent
        });
        let buf = AlignedBuf::read_after(b"head", rx.as_fd(), 20_004, 4096).unwrap();
        let sent = writer.join().unwrap();
        assert_eq!(buf.as_slice().as_ptr() as usize % 4096, 0);
        assert_eq!(&buf.as_slice()[..4], b"head");
        assert_eq!(&buf.as_slice()[4..], &sent[..]);
        // The peer closing early is an error, not a short buffer.
        let eof = AlignedBuf::read_after(b"", rx.as_fd(), 10, 4096).err();
        assert_eq!(eof.map(|e| e.kind()), Some(io::ErrorKind::UnexpectedEof));
        assert!(AlignedBuf::read_after(b"long", rx.as_fd(), 2, 4096).is_err());
    }

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
    fn direct_writes_from_aligned_memory_without_a_bounce_land_too() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FileDeviceOptions {
            direct: true,
            ..Default::default()
        };
        let dev = FileDevice::create(dir.path().join("disk"), 1 << 20, &opts).unwrap();
        let mut aligned = AlignedBuf::new(8192, 4096).unwrap();
        aligned.as_mut_slice().fill(0xa5);
        dev.write_at(aligned.as_slice(), 8192, false).unwrap();
        let mut back = vec![0; 8192];
        dev.read_at(&mut back, 8192).unwrap();
        assert!(back.iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn a_regular_file_as_backing_disk_stays_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        // 1000 bytes: no direct I/O alignment would accept this size.
        std::fs::write(&path, [7u8; 1000]).unwrap();
        let dev = FileDevice::open_backing(&path).unwrap();
        assert!(!dev.direct);
        assert_eq!(dev.size(), 1000);
        let mut back = [0u8; 3];
        dev.read_at(&mut back, 997).unwrap();
        assert_eq!(back, [7, 7, 7]);
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
