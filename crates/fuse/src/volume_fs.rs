//! The read-only FUSE filesystem over an OCFS2 volume.
//!
//! Every request is answered from the volume through [`ocfs2::Volume`]: FUSE
//! node ids are the inodes' block numbers (OCFS2's own inode numbers, so `ls
//! -i` and `stat` show what the kernel driver would), except the root, which
//! FUSE calls 1. Nothing is cached here beyond the kernel's one-second
//! attribute and entry caches, so a volume that another node changes is seen
//! changed soon after; without the cluster's locks such a view is only
//! eventually consistent, which is what a read-only look at a live cluster
//! volume can honestly promise. Extended attributes are listed and read with
//! the names and values the kernel's ocfs2 shows.
//!
//! Before serving, [`VolumeFs::open`] refuses what it cannot read correctly,
//! the way the kernel does: incompatible features we do not understand (named),
//! and a journal that still needs replaying (named by slot), because metadata it
//! covers may be stale on disk.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request, Session, SessionACL,
};
use ocfs2::dinode::{mode, Dinode};
use ocfs2::superblock::feature_names;
use ocfs2::Volume;

/// How long the kernel may trust what we answered. Short: another node may be
/// writing the volume.
const TTL: Duration = Duration::from_secs(1);
/// `OCFS2_JOURNAL_DIRTY_FL` in a journal inode's `ij_flags`.
const JOURNAL_DIRTY: u32 = 0x1;
/// Longest name in an OCFS2 directory entry.
const NAME_MAX: u32 = 255;

/// Why a volume cannot be mounted.
#[derive(Debug)]
pub enum MountRefusal {
    /// The device could not be opened or is not an OCFS2 volume.
    Open(String),
    /// The volume uses incompatible features this reader does not handle.
    UnsupportedFeatures(Vec<String>),
    /// A slot's journal was not closed cleanly: its transactions must be
    /// replayed (by a read-write mount or `fsck.ocfs2 -y`) before the
    /// metadata on disk can be trusted.
    DirtyJournal(Vec<u16>),
}

impl fmt::Display for MountRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountRefusal::Open(e) => write!(f, "{e}"),
            MountRefusal::UnsupportedFeatures(names) => write!(
                f,
                "the volume uses features tandem cannot read: {}",
                names.join(" ")
            ),
            MountRefusal::DirtyJournal(slots) => {
                let slots: Vec<String> = slots.iter().map(u16::to_string).collect();
                write!(
                    f,
                    "the journal of slot {} needs recovery (the volume was not unmounted \
                     cleanly); a read-only mount cannot replay it: mount it read-write on a \
                     cluster node or run fsck.ocfs2 -fy first",
                    slots.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for MountRefusal {}

/// An OCFS2 volume served read-only.
pub struct VolumeFs {
    volume: Volume<File>,
    device: PathBuf,
}

impl VolumeFs {
    /// Opens the volume on `device` (an image or a block device) and checks that
    /// it can be served.
    pub fn open(device: &Path) -> Result<VolumeFs, MountRefusal> {
        let file = File::open(device)
            .map_err(|e| MountRefusal::Open(format!("{}: {e}", device.display())))?;
        let volume = Volume::open(file).map_err(|e| {
            MountRefusal::Open(format!("{}: not an OCFS2 volume: {e}", device.display()))
        })?;
        let unknown = volume.unsupported_incompat();
        if unknown != 0 {
            return Err(MountRefusal::UnsupportedFeatures(incompat_names(unknown)));
        }
        let sb = volume.superblock();
        let mut dirty = Vec::new();
        for slot in 0..sb.max_slots {
            let path = format!("//journal:{slot:04}");
            let (_, journal) = volume
                .lookup(&path)
                .map_err(|e| MountRefusal::Open(format!("{}: {path}: {e}", device.display())))?;
            if journal.journal_flags() & JOURNAL_DIRTY != 0 {
                dirty.push(slot);
            }
        }
        if !dirty.is_empty() {
            return Err(MountRefusal::DirtyJournal(dirty));
        }
        Ok(VolumeFs {
            volume,
            device: device.to_owned(),
        })
    }

    /// The volume being served.
    pub fn volume(&self) -> &Volume<File> {
        &self.volume
    }

    /// The block of the inode FUSE calls `ino`.
    fn blkno(&self, ino: INodeNo) -> u64 {
        if ino == INodeNo::ROOT {
            self.volume.superblock().root_blkno
        } else {
            ino.0
        }
    }

    /// The FUSE node id of the inode at `blkno`.
    fn node_id(&self, blkno: u64) -> INodeNo {
        if blkno == self.volume.superblock().root_blkno {
            INodeNo::ROOT
        } else {
            INodeNo(blkno)
        }
    }

    fn inode(&self, ino: INodeNo) -> Result<Dinode, Errno> {
        let blkno = self.blkno(ino);
        // Block numbers below the superblock's are never inodes; the volume
        // would otherwise happily decode whatever is there and fail later.
        if blkno <= ocfs2::superblock::SUPER_BLOCK_BLKNO {
            return Err(Errno::ENOENT);
        }
        self.volume.read_inode(blkno).map_err(|e| self.fail(&e))
    }

    /// Logs a volume error and turns it into the errno the caller sees.
    fn fail(&self, e: &ocfs2::Error) -> Errno {
        match e {
            ocfs2::Error::NotFound(_) => Errno::ENOENT,
            ocfs2::Error::NotADirectory(_) => Errno::ENOTDIR,
            _ => {
                eprintln!("tandem mount {}: {e}", self.device.display());
                Errno::EIO
            }
        }
    }

    fn attr(&self, inode: &Dinode) -> FileAttr {
        let bits = self.volume.superblock().clustersize_bits;
        FileAttr {
            // The inode number OCFS2 itself reports.
            ino: INodeNo(inode.blkno),
            size: inode.size,
            // As the kernel counts: allocated clusters in 512-byte sectors.
            blocks: u64::from(inode.clusters) << bits.saturating_sub(9),
            atime: time(inode.atime, inode.atime_nsec),
            mtime: time(inode.mtime, inode.mtime_nsec),
            ctime: time(inode.ctime, inode.ctime_nsec),
            crtime: time(inode.ctime, inode.ctime_nsec),
            kind: file_type(inode.mode),
            perm: inode.mode & 0o7777,
            nlink: inode.links(),
            uid: inode.uid,
            gid: inode.gid,
            // id1 of a device inode is its device number in the kernel's
            // "huge" encoding, whose low 32 bits are the new encoding FUSE uses.
            rdev: match inode.mode & mode::S_IFMT {
                mode::S_IFCHR | mode::S_IFBLK => inode.id1 as u32,
                _ => 0,
            },
            blksize: self.volume.block_size(),
            flags: 0,
        }
    }

    /// The extended attributes of `ino` as (full name, value), or the errno
    /// the kernel's ocfs2 gives: `EOPNOTSUPP` on a volume without the xattr
    /// feature.
    fn xattrs(&self, ino: INodeNo) -> Result<Vec<(String, Vec<u8>)>, Errno> {
        let sb = self.volume.superblock();
        if sb.feature_incompat & ocfs2::superblock::incompat::XATTR == 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let inode = self.inode(ino)?;
        self.volume.xattrs(&inode).map_err(|e| self.fail(&e))
    }

    /// Free and total clusters from the global bitmap, if it can be read.
    fn cluster_counts(&self) -> Option<(u64, u64)> {
        let (_, bitmap) = self.volume.lookup("//global_bitmap").ok()?;
        let (used, total) = bitmap.bitmap_counts();
        Some((u64::from(total), u64::from(total.saturating_sub(used))))
    }
}

/// Answers an xattr request with `data`: its size when the caller asked with
/// size 0 (to size its buffer), the data when it fits, else `ERANGE`.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    let Ok(len) = u32::try_from(data.len()) else {
        return reply.error(Errno::E2BIG);
    };
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(data);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// Mounts `fs` read-only on `mountpoint`; [`Session::run`] then serves it until
/// it is unmounted.
pub fn mount_read_only(
    fs: VolumeFs,
    mountpoint: &Path,
    threads: usize,
) -> io::Result<Session<VolumeFs>> {
    let fsname = fs.device.display().to_string();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::Subtype("ocfs2".to_owned()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    // Everyone may look, as on a kernel mount; permissions are the inodes'.
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.max(1));
    Session::new(fs, mountpoint, &config)
}

/// Names of incompat feature bits: the tools' names, the kernel's meaning for
/// the bits the tools leave unnamed, and the number of any other bit.
fn incompat_names(bits: u32) -> Vec<String> {
    use ocfs2::superblock::incompat;
    (0..32)
        .map(|i| 1u32 << i)
        .filter(|bit| bits & bit != 0)
        .map(|bit| match feature_names(0, bit, 0).first() {
            Some(name) => (*name).to_owned(),
            None => match bit {
                incompat::HEARTBEAT_DEV => "heartbeat-device".to_owned(),
                incompat::RESIZE_INPROG => "resize-in-progress".to_owned(),
                incompat::TUNEFS_INPROG => "tunefs-in-progress".to_owned(),
                _ => format!("unknown-incompat-{bit:#x}"),
            },
        })
        .collect()
}

fn time(secs: u64, nsec: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nsec.min(999_999_999))
}

fn file_type(m: u16) -> FileType {
    match m & mode::S_IFMT {
        mode::S_IFDIR => FileType::Directory,
        mode::S_IFLNK => FileType::Symlink,
        mode::S_IFCHR => FileType::CharDevice,
        mode::S_IFBLK => FileType::BlockDevice,
        mode::S_IFIFO => FileType::NamedPipe,
        mode::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// A directory entry's `file_type` byte (OCFS2 uses the ext2 codes).
fn entry_type(t: u8) -> FileType {
    match t {
        2 => FileType::Directory,
        3 => FileType::CharDevice,
        4 => FileType::BlockDevice,
        5 => FileType::NamedPipe,
        6 => FileType::Socket,
        7 => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

impl Filesystem for VolumeFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let dir = match self.inode(parent) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        if !dir.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = match self.volume.dir_entries(&dir) {
            Ok(e) => e,
            Err(e) => return reply.error(self.fail(&e)),
        };
        let Some(entry) = entries.iter().find(|e| e.name == name.as_bytes()) else {
            return reply.error(Errno::ENOENT);
        };
        match self.volume.read_inode(entry.inode) {
            Ok(inode) => {
                let mut attr = self.attr(&inode);
                // The entry's node id is what later requests name it by.
                attr.ino = self.node_id(entry.inode);
                reply.entry(&TTL, &attr, Generation(u64::from(inode.generation)));
            }
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino) {
            Ok(inode) => reply.attr(&TTL, &self.attr(&inode)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if !inode.is_symlink() {
            return reply.error(Errno::EINVAL);
        }
        match self.volume.symlink_target(&inode) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.inode(ino) {
            Ok(inode) if inode.is_dir() => reply.error(Errno::EISDIR),
            // Another node may change the file: no page cache kept across opens.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
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
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self.volume.read_range(&inode, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.inode(ino) {
            Ok(inode) if inode.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
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
        let dir = match self.inode(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let entries = match self.volume.dir_entries(&dir) {
            Ok(e) => e,
            Err(e) => return reply.error(self.fail(&e)),
        };
        // The offset handed back is the index of the next entry: directories
        // do not change under a read-only mount of an idle volume, and on a
        // live one an index is as good a cursor as any we could offer.
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let name = OsStr::from_bytes(&e.name);
            if reply.add(
                INodeNo(e.inode),
                (i + 1) as u64,
                entry_type(e.file_type),
                name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let attrs = match self.xattrs(ino) {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        match attrs.iter().find(|(n, _)| n.as_bytes() == name.as_bytes()) {
            Some((_, value)) => reply_sized(reply, size, value),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let attrs = match self.xattrs(ino) {
            Ok(a) => a,
            // As the kernel: nothing to list on a volume without xattrs.
            Err(e) if e == Errno::EOPNOTSUPP => Vec::new(),
            Err(e) => return reply.error(e),
        };
        // Names, each ended by a NUL.
        let mut list = Vec::new();
        for (name, _) in &attrs {
            list.extend_from_slice(name.as_bytes());
            list.push(0);
        }
        reply_sized(reply, size, &list);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let block = self.volume.block_size();
        let per_cluster = u64::from(self.volume.superblock().cluster_size() / block);
        let (total, free) = self.cluster_counts().unwrap_or((0, 0));
        // As the kernel reports it: sizes in blocks, and as many "inodes"
        // as clusters, since inodes are allocated from free space on demand.
        reply.statfs(
            total * per_cluster,
            free * per_cluster,
            free * per_cluster,
            total,
            free,
            block,
            NAME_MAX,
            block,
        );
    }
}
