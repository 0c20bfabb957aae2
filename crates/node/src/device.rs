//! The resource as a block device: a [`BlockDevice`] whose requests become engine
//! events, served through FUSE behind a loop device, and `/dev/drbdN`.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::mpsc;

use blockdev::{AlignedBuf, BlockDevice, WriteDone};
use bytes::Bytes;
use replication::{IoError, BLOCK_SIZE};

use crate::host::{Events, HostMsg, IoReply, IoRequest};

/// Device I/O as engine requests: each call hands its request to the engine on
/// the calling (FUSE) thread and waits for the answer, which comes from whichever
/// thread completes it.
pub struct EngineDevice {
    pub events: Events,
    pub size: u64,
}

fn to_io_error(e: IoError) -> io::Error {
    let errno = match e {
        // DRBD's answer to I/O on a Secondary: "Wrong medium type".
        IoError::NotPrimary => libc::EMEDIUMTYPE,
        IoError::NoUpToDateData => libc::ENODATA,
        IoError::OutOfRange => libc::EINVAL,
        IoError::Disk => libc::EIO,
    };
    io::Error::from_raw_os_error(errno)
}

impl EngineDevice {
    /// Hands `request` to the engine; `reply` gets the answer later.
    fn submit(&self, request: IoRequest, reply: IoReply) -> io::Result<()> {
        self.events
            .send(HostMsg::Io { request, reply })
            .map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// Hands `request` to the engine and waits for the answer.
    fn call(&self, request: IoRequest) -> io::Result<Option<Bytes>> {
        let (tx, answer) = mpsc::channel();
        self.submit(
            request,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )?;
        answer
            .recv()
            .map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?
            .map_err(to_io_error)
    }

    fn blocks(offset: u64, len: usize) -> io::Result<(u64, u64)> {
        let b = BLOCK_SIZE as u64;
        if !offset.is_multiple_of(b) || !len.is_multiple_of(BLOCK_SIZE) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok((offset / b, (len / BLOCK_SIZE) as u64))
    }
}

impl BlockDevice for EngineDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (block, count) = Self::blocks(offset, buf.len())?;
        let data = self
            .call(IoRequest::Read { block, count })?
            .unwrap_or_default();
        if data.len() != buf.len() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (block, _) = Self::blocks(offset, buf.len())?;
        self.call(IoRequest::Write {
            block,
            data: shared_copy(buf)?,
        })?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn write_then(&self, buf: &[u8], offset: u64, fua: bool, done: WriteDone) {
        if fua || buf.is_empty() {
            return done(self.write_at(buf, offset, fua));
        }
        let block = match Self::blocks(offset, buf.len()) {
            Ok((block, _)) => block,
            Err(e) => return done(Err(e)),
        };
        let data = match shared_copy(buf) {
            Ok(data) => data,
            Err(e) => return done(Err(e)),
        };
        let done = Answer(Some(done));
        let request = IoRequest::Write { block, data };
        // If the engine has stopped, the request and its answer are dropped:
        // `Answer` then fails the write.
        let _ = self.submit(
            request,
            Box::new(move |result| done.give(result.map(|_| ()).map_err(to_io_error))),
        );
    }

    fn flush(&self) -> io::Result<()> {
        self.call(IoRequest::Flush).map(|_| ())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        // Replicated as zeros: the peers must read what we read.
        let (block, count) = Self::blocks(offset, len as usize)?;
        let chunk = 256u64;
        let mut at = block;
        while at < block + count {
            let n = chunk.min(block + count - at);
            self.call(IoRequest::Write {
                block: at,
                data: Bytes::from(vec![0; n as usize * BLOCK_SIZE]),
            })?;
            at += n;
        }
        Ok(())
    }
}

/// The one copy of a write's data: aligned for direct I/O (4 KiB suits every
/// logical block size), so the backing disk's write needs no bounce copy, and
/// shared, not copied, with every peer's frame.
fn shared_copy(buf: &[u8]) -> io::Result<Bytes> {
    Ok(Bytes::from_owner(AlignedBuf::copy_of(buf, BLOCK_SIZE)?))
}

/// A write's `done`, called exactly once: with the engine's answer, or with
/// `ENODEV` if the engine stopped and dropped the request unanswered.
struct Answer(Option<WriteDone>);

impl Answer {
    fn give(mut self, result: io::Result<()>) {
        if let Some(done) = self.0.take() {
            done(result);
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(io::Error::from_raw_os_error(libc::ENODEV)));
        }
    }
}

/// Makes `path` (`/dev/drbdN`) a block device node with the numbers of `loop_path`.
pub fn make_device_node(path: &Path, loop_path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(loop_path)?;
    if !meta.file_type().is_block_device() {
        return Err(io::Error::other(format!(
            "{} is not a block device",
            loop_path.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c_path is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFBLK | 0o660, meta.rdev()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Drops the kernel's cached pages of a block device (`BLKFLSBUF`): after the
/// peer wrote through a promotion, what this node cached earlier is stale.
pub fn drop_cached_pages(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().read(true).open(path)?;
    // BLKFLSBUF = _IO(0x12, 97)
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    // SAFETY: BLKFLSBUF takes no argument; the descriptor is valid while `file`
    // lives.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKFLSBUF, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the block device with these numbers is mounted in this mount
/// namespace (what makes `secondary` and `down` refuse).
pub fn is_mounted(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let wanted = format!("{major}:{minor}");
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| {
            text.lines()
                .any(|l| l.split(' ').nth(2) == Some(wanted.as_str()))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What `done` is called with, each time, for a write of `len` bytes at 0
    /// to a device whose engine has stopped.
    fn answers_of_a_write(len: usize) -> Vec<Result<(), Option<i32>>> {
        let device = EngineDevice {
            events: Events::stopped(),
            size: 1 << 20,
        };
        let results = Arc::new(Mutex::new(Vec::new()));
        let seen = results.clone();
        device.write_then(
            &vec![0u8; len],
            0,
            false,
            Box::new(move |r| seen.lock().unwrap().push(r.map_err(|e| e.raw_os_error()))),
        );
        let answers = results.lock().unwrap().clone();
        answers
    }

    #[test]
    fn a_write_the_stopped_engine_never_answers_fails_once_with_enodev() {
        assert_eq!(
            answers_of_a_write(BLOCK_SIZE),
            vec![Err(Some(libc::ENODEV))]
        );
    }

    #[test]
    fn an_unaligned_write_fails_with_einval_without_reaching_the_engine() {
        assert_eq!(answers_of_a_write(512), vec![Err(Some(libc::EINVAL))]);
    }
}
