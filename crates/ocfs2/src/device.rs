//! The edge where the format meets a real device: [`FileDevice`] reads and
//! writes an image file or a block device with positioned I/O, and turns "write
//! zeros" into a hole punch (regular files) or a zero-out (block devices) when
//! the kernel can, so formatting a large sparse image stays cheap.

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::mkfs::BlockSink;

/// `BLKZEROOUT`, `_IO(0x12, 127)`: zero a byte range of a block device.
const BLKZEROOUT: libc::c_ulong = 0x127f;
use crate::volume::BlockSource;

/// An image file or block device.
pub struct FileDevice {
    file: File,
    block_device: bool,
}

impl FileDevice {
    /// Opens `path` for reading and writing.
    pub fn open_rw(path: &Path) -> std::io::Result<FileDevice> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let block_device = file.metadata()?.file_type().is_block_device();
        Ok(FileDevice { file, block_device })
    }

    /// Size in bytes (block devices: by seeking to the end).
    pub fn size(&self) -> std::io::Result<u64> {
        if self.block_device {
            use std::io::{Seek, SeekFrom};
            let mut f = &self.file;
            let end = f.seek(SeekFrom::End(0))?;
            f.seek(SeekFrom::Start(0))?;
            Ok(end)
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl BlockSource for FileDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

impl BlockSink for FileDevice {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        if self.block_device {
            let range: [u64; 2] = [offset, len];
            // SAFETY: BLKZEROOUT reads a two-u64 array that lives for the call.
            let rc = unsafe { libc::ioctl(fd, BLKZEROOUT, range.as_ptr()) };
            if rc == 0 {
                return Ok(());
            }
        } else {
            let (Ok(o), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
                return write_zero_chunks(self, offset, len);
            };
            // SAFETY: fallocate on an owned, open descriptor; no memory is passed.
            let rc = unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    o,
                    l,
                )
            };
            if rc == 0 {
                return Ok(());
            }
        }
        write_zero_chunks(self, offset, len)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

fn write_zero_chunks(dev: &mut FileDevice, offset: u64, len: u64) -> std::io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        dev.file.write_all_at(&chunk[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}
