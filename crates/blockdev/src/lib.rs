//! The one block-device interface of tandem.
//!
//! Everything that stores or serves blocks (the replication engine, the OCFS2
//! engine, the FUSE and NBD frontends) talks to a [`BlockDevice`]: a fixed-size
//! array of bytes with positioned reads and writes, a write barrier (`flush`),
//! per-write durability (`fua`) and `discard`. Errors are `std::io::Error`, so an
//! errno reaches the kernel or an NBD client unchanged.
//!
//! Implementations:
//! - [`FileDevice`]: a regular file or a block device (`pread`/`pwrite`, optional
//!   `O_DIRECT` through aligned bounce buffers);
//! - [`MemoryDevice`]: sparse, in memory, for tests and simulation;
//! - [`FaultyDevice`]: wraps another device for tests: injects `EIO` on chosen
//!   ranges and keeps writes that were never flushed apart, so a simulated crash
//!   loses exactly those.
//!
//! Contract shared by every implementation (and checked by the property tests):
//! a request must lie inside `0..size()` (else `InvalidInput`, nothing done); a
//! read returns what the last write or discard of each byte left (discarded bytes
//! read as zeros); a write is durable once `flush` returns after it, or at once
//! when written with `fua`.

mod faulty;
mod file;
mod memory;

use std::io;
use std::sync::Arc;

pub use faulty::{FaultyDevice, IoKind};
pub use file::{logical_block_size, AlignedBuf, FileDevice, FileDeviceOptions};
pub use memory::MemoryDevice;

/// A block device: `size()` bytes with positioned I/O. `Send + Sync`: requests
/// may come from several threads at once; requests to overlapping ranges that
/// race have no defined order.
pub trait BlockDevice: Send + Sync {
    /// Size in bytes; fixed for the life of the value.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes `buf` at `offset`; with `fua` the data is durable when this
    /// returns (Force Unit Access), otherwise only after the next `flush`.
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()>;

    /// Writes like [`write_at`](Self::write_at) and hands the result to `done`:
    /// at once by default. A device whose writes complete on another thread
    /// calls `done` there, so the calling thread need not wait (the FUSE
    /// frontend then answers the kernel from the thread that completes).
    fn write_then(&self, buf: &[u8], offset: u64, fua: bool, done: WriteDone) {
        done(self.write_at(buf, offset, fua));
    }

    /// Makes every completed write durable (a write barrier and cache flush).
    fn flush(&self) -> io::Result<()>;

    /// Gives the range back; it reads as zeros afterwards. Durable like a write
    /// without `fua`.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// What [`BlockDevice::write_then`] calls with a write's result.
pub type WriteDone = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Checks that `len` bytes at `offset` lie inside a device of `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("request of {len} bytes at offset {offset} is beyond the device's end ({size} bytes)"),
        )),
    }
}

macro_rules! forward_block_device {
    ($($ty:ty),*) => {$(
        impl<T: BlockDevice + ?Sized> BlockDevice for $ty {
            fn size(&self) -> u64 {
                (**self).size()
            }
            fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
                (**self).read_at(buf, offset)
            }
            fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
                (**self).write_at(buf, offset, fua)
            }
            fn write_then(&self, buf: &[u8], offset: u64, fua: bool, done: WriteDone) {
                (**self).write_then(buf, offset, fua, done)
            }
            fn flush(&self) -> io::Result<()> {
                (**self).flush()
            }
            fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
                (**self).discard(offset, len)
            }
        }
    )*};
}

forward_block_device!(&T, Box<T>, Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks() {
        assert!(check_range(10, 0, 10).is_ok());
        assert!(check_range(10, 10, 0).is_ok());
        assert!(check_range(10, 5, 6).is_err());
        assert!(check_range(10, u64::MAX, 2).is_err());
        let e = check_range(10, 11, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
