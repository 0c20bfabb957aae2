//! The FUSE filesystem: a root directory holding one regular file whose
//! content is the block device.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blockdev::BlockDevice;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::OpenGate;

/// Inode of the device file (the root is 1).
const DEVICE_INO: INodeNo = INodeNo(2);
/// The size never changes and nothing else changes attributes: cache them.
const TTL: Duration = Duration::from_secs(60);
/// Largest read or write the kernel sends us (and our per-thread buffer size).
pub(crate) const MAX_IO: u32 = 1 << 20;

thread_local! {
    /// Each worker's read buffer, allocated once: the read path allocates
    /// nothing per request (memory reclaim may be waiting on us).
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serves one [`BlockDevice`] as the file `name` in the root of the mount.
///
/// Choices for a loop device with `--direct-io=on` on top:
/// - every open is answered `FOPEN_DIRECT_IO`: no FUSE page cache for the file
///   (the block device above has its own; a second cache would double memory
///   and put dirty pages that only we can write back in the way of reclaim),
///   and so no `keep_cache`;
/// - `FOPEN_PARALLEL_DIRECT_WRITES`: the kernel does not serialize writes to
///   the file, so the loop driver's concurrent requests reach our threads;
/// - `FUSE_ASYNC_DIO`, `max_write` 1 MiB: large direct requests in one piece.
///
/// `fsync` and `flush` (close) are `BlockDevice::flush`; a write with `O_DSYNC`
/// or `O_SYNC` in its open flags is a FUA write; `fallocate` punch-hole and
/// zero-range are `discard`.
pub struct DeviceFs {
    device: Arc<dyn BlockDevice>,
    gate: OpenGate,
    name: String,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

impl DeviceFs {
    /// The filesystem serving `device` as `name`, gated by `gate`.
    pub fn new(device: Arc<dyn BlockDevice>, gate: OpenGate, name: &str) -> Self {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        DeviceFs {
            device,
            gate,
            name: name.to_owned(),
            uid,
            gid,
            started: SystemTime::now(),
        }
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o700, 0, 2),
            DEVICE_INO => (FileType::RegularFile, 0o600, self.device.size(), 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn refused(&self) -> bool {
        !self.gate.is_open()
    }
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Filesystem for DeviceFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        let _ = config.set_max_write(MAX_IO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == OsStr::new(&self.name) {
            if let Some(attr) = self.attr(DEVICE_INO) {
                return reply.entry(&TTL, &attr, Generation(0));
            }
        }
        reply.error(Errno::ENOENT);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(attr) = self.attr(ino) else {
            return reply.error(Errno::ENOENT);
        };
        // The size of a block device is fixed; an O_TRUNC or truncate to the
        // same size is harmless, anything else is refused. Other attribute
        // changes are accepted and forgotten.
        match size {
            Some(s) if s != attr.size => reply.error(Errno::EPERM),
            _ => reply.attr(&TTL, &attr),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != DEVICE_INO {
            return reply.error(Errno::EISDIR);
        }
        if self.refused() {
            return reply.error(Errno::from_i32(libc::EMEDIUMTYPE));
        }
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != DEVICE_INO {
            return reply.error(Errno::EISDIR);
        }
        if self.refused() {
            return reply.error(Errno::from_i32(libc::EMEDIUMTYPE));
        }
        // A file: reads at or past the end are short.
        let end = self.device.size();
        let len = u64::from(size.min(MAX_IO)).min(end.saturating_sub(offset)) as usize;
        READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < MAX_IO as usize {
                buf.resize(MAX_IO as usize, 0);
            }
            match self.device.read_at(&mut buf[..len], offset) {
                Ok(()) => reply.data(&buf[..len]),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != DEVICE_INO {
            return reply.error(Errno::EISDIR);
        }
        if self.refused() {
            return reply.error(Errno::from_i32(libc::EMEDIUMTYPE));
        }
        let end = self.device.size();
        if offset >= end && !data.is_empty() {
            return reply.error(Errno::ENOSPC);
        }
        let len = (data.len() as u64).min(end.saturating_sub(offset)) as usize;
        let fua = flags.0 & (libc::O_DSYNC | libc::O_SYNC) != 0;
        // Answered by whichever thread completes the write; this one goes
        // back to reading requests.
        self.device.write_then(
            &data[..len],
            offset,
            fua,
            Box::new(move |result| match result {
                Ok(()) => reply.written(len as u32),
                Err(e) => reply.error(errno(&e)),
            }),
        );
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close: a refused device has nothing to flush that could matter.
        if ino != DEVICE_INO || self.refused() {
            return reply.ok();
        }
        match self.device.flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if ino != DEVICE_INO {
            return reply.ok();
        }
        if self.refused() {
            return reply.error(Errno::from_i32(libc::EMEDIUMTYPE));
        }
        match self.device.flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if ino != DEVICE_INO {
            return reply.error(Errno::EISDIR);
        }
        if self.refused() {
            return reply.error(Errno::from_i32(libc::EMEDIUMTYPE));
        }
        let zeroing = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & zeroing == 0 {
            // Plain allocation: every byte of the device exists already, but
            // never past its end.
            return match blockdev::check_range(self.device.size(), offset, length) {
                Ok(()) => reply.ok(),
                Err(_) => reply.error(Errno::EFBIG),
            };
        }
        match self.device.discard(offset, length) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DEVICE_INO, FileType::RegularFile, self.name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
