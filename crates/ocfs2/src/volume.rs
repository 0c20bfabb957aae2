//! Reading a volume: superblock, inodes, extent maps, file data, directories,
//! extended attributes.
//!
//! The only I/O is through [`BlockSource`] (positioned reads), implemented for
//! files and for byte vectors, so the reader runs the same on an image, a block
//! device or bytes in a test. Every metadata block read is checked against its
//! metaecc check when the volume has the feature; a single flipped bit is
//! corrected in memory, anything worse is an error naming the block.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;

use crate::blockcheck::{self, CheckOutcome};
use crate::codec::Decoder;
use crate::dinode::{dyn_features, ID2_OFFSET};
use crate::dinode::{Body, Dinode, DINODE_CHECK_OFFSET};
use crate::dir::{
    decode_entries, DirEntry, DIR_TRAILER_CHECK_OFFSET, DIR_TRAILER_SIGNATURE, DIR_TRAILER_SIZE,
};
use crate::error::{DecodeError, Error, Result};
use crate::extent::{ExtentBlock, ExtentList, ExtentRec, EXTENT_BLOCK_CHECK_OFFSET};
use crate::superblock::{SuperBlock, INCOMPAT_SUPPORTED, SUPER_BLOCK_BLKNO};
use crate::xattr::{
    self, namespace, XattrBlock, XattrBlockBody, XattrItem, XattrValue, XATTR_BLOCK_ATTRS_OFFSET,
    XATTR_BLOCK_CHECK_OFFSET, XATTR_BUCKET_SIZE, XATTR_HEADER_CHECK_OFFSET,
};

/// Positioned reads from a device, an image or memory.
pub trait BlockSource {
    /// Fills `buf` from byte `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl BlockSource for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl BlockSource for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl BlockSource for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_at(offset, buf)
    }
}

/// The deepest extent tree read (a bound for damaged trees; mkfs and the
/// kernel build trees of at most 5 levels).
const MAX_TREE_DEPTH: u16 = 8;

/// Linux's PATH_MAX: the longest symbolic link target, its NUL included.
const PATH_MAX: u64 = 4096;

/// A volume opened for reading.
pub struct Volume<S> {
    src: S,
    sb: SuperBlock,
    sb_inode: Dinode,
}

/// Which directory a path starts from.
fn split_path(path: &str) -> (bool, Vec<&str>) {
    let system = path.starts_with("//");
    (system, path.split('/').filter(|c| !c.is_empty()).collect())
}

impl<S: BlockSource> Volume<S> {
    /// Finds the superblock (trying every block size) and opens the volume.
    pub fn open(src: S) -> Result<Volume<S>> {
        let mut last: Option<Error> = None;
        for bits in 9..=12u32 {
            let bs = 1usize << bits;
            let mut buf = vec![0u8; bs];
            if let Err(e) = src.read_at(SUPER_BLOCK_BLKNO << bits, &mut buf) {
                last = Some(Error::Io {
                    offset: SUPER_BLOCK_BLKNO << bits,
                    source: e,
                });
                continue;
            }
            if &buf[..6] != b"OCFSV2" {
                continue;
            }
            let inode = match Dinode::decode(&buf, SUPER_BLOCK_BLKNO) {
                Ok(i) => i,
                Err(e) => {
                    last = Some(e.into());
                    continue;
                }
            };
            let Body::Super(sb) = inode.body.clone() else {
                continue;
            };
            if sb.blocksize_bits != bits {
                continue;
            }
            if sb.meta_ecc() {
                check_block(
                    &mut buf,
                    DINODE_CHECK_OFFSET,
                    SUPER_BLOCK_BLKNO,
                    "super_block",
                )?;
            }
            return Ok(Volume {
                src,
                sb,
                sb_inode: inode,
            });
        }
        Err(last.unwrap_or_else(|| Error::Invalid("no OCFS2 superblock found".into())))
    }

    /// The superblock.
    pub fn superblock(&self) -> &SuperBlock {
        &self.sb
    }
    /// The superblock's dinode.
    pub fn superblock_inode(&self) -> &Dinode {
        &self.sb_inode
    }
    /// Block size.
    pub fn block_size(&self) -> u32 {
        self.sb.block_size()
    }
    /// Incompat features this reader does not understand, by bit.
    pub fn unsupported_incompat(&self) -> u32 {
        self.sb.feature_incompat & !INCOMPAT_SUPPORTED
    }

    /// Reads one block.
    pub fn read_block(&self, blkno: u64) -> Result<Vec<u8>> {
        let bs = self.block_size() as usize;
        let mut buf = vec![0u8; bs];
        let offset = blkno
            .checked_mul(bs as u64)
            .ok_or_else(|| Error::Invalid(format!("block {blkno} out of range")))?;
        self.src
            .read_at(offset, &mut buf)
            .map_err(|e| Error::Io { offset, source: e })?;
        Ok(buf)
    }

    fn read_checked(&self, blkno: u64, check_off: usize, what: &'static str) -> Result<Vec<u8>> {
        let mut buf = self.read_block(blkno)?;
        if self.sb.meta_ecc() {
            check_block(&mut buf, check_off, blkno, what)?;
        }
        Ok(buf)
    }

    /// Reads and decodes the inode at `blkno`.
    pub fn read_inode(&self, blkno: u64) -> Result<Dinode> {
        let buf = self.read_checked(blkno, DINODE_CHECK_OFFSET, "dinode")?;
        Ok(Dinode::decode(&buf, blkno)?)
    }

    /// Reads and decodes the extent block at `blkno`.
    pub fn read_extent_block(&self, blkno: u64) -> Result<ExtentBlock> {
        let buf = self.read_checked(blkno, EXTENT_BLOCK_CHECK_OFFSET, "extent_block")?;
        Ok(ExtentBlock::decode(&buf, blkno)?)
    }

    /// The leaf extents of an inode, in file order.
    pub fn extents(&self, inode: &Dinode) -> Result<Vec<ExtentRec>> {
        let Body::Extents(list) = &inode.body else {
            return Ok(Vec::new());
        };
        self.leaves(list, inode.blkno, "dinode")
    }

    /// The leaf records of the extent tree rooted at `list`, in the
    /// `structure` of block `owner`.
    fn leaves(
        &self,
        list: &ExtentList,
        owner: u64,
        structure: &'static str,
    ) -> Result<Vec<ExtentRec>> {
        // Each level down is one less deep (checked on the way), so this
        // bounds the walk's recursion.
        if list.tree_depth > MAX_TREE_DEPTH {
            return Err(DecodeError {
                block: owner,
                structure,
                field: "l_tree_depth",
                problem: format!("{} levels, more than {MAX_TREE_DEPTH}", list.tree_depth),
            }
            .into());
        }
        let mut out = Vec::new();
        self.collect_leaves(list.tree_depth, &list.recs, &mut out, &mut HashSet::new())?;
        Ok(out)
    }

    /// The leaf records under `recs`, a node of `depth`. Each extent block
    /// belongs to one place in one tree: a damaged tree that points to one
    /// twice (which could make the walk read a block per path, exponentially
    /// many) is refused.
    fn collect_leaves(
        &self,
        depth: u16,
        recs: &[ExtentRec],
        out: &mut Vec<ExtentRec>,
        seen: &mut HashSet<u64>,
    ) -> Result<()> {
        if depth == 0 {
            out.extend_from_slice(recs);
            return Ok(());
        }
        for r in recs {
            if !seen.insert(r.blkno) {
                return Err(DecodeError {
                    block: r.blkno,
                    structure: "extent_rec",
                    field: "e_blkno",
                    problem: "an extent block reached twice in one tree".into(),
                }
                .into());
            }
            let eb = self.read_extent_block(r.blkno)?;
            if eb.list.tree_depth + 1 != depth {
                return Err(DecodeError {
                    block: r.blkno,
                    structure: "extent_block",
                    field: "l_tree_depth",
                    problem: format!("{} under a node of depth {depth}", eb.list.tree_depth),
                }
                .into());
            }
            self.collect_leaves(eb.list.tree_depth, &eb.list.recs, out, seen)?;
        }
        Ok(())
    }

    /// Reads `len` bytes of a file from byte `offset` (holes read as zeros; the
    /// result stops at the file's size).
    pub fn read_range(&self, inode: &Dinode, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = inode.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let want = (end - offset) as usize;
        match &inode.body {
            Body::Inline(d) => {
                let s = (offset as usize).min(d.data.len());
                let e = (end as usize).min(d.data.len());
                let mut v = d.data[s..e].to_vec();
                v.resize(want, 0);
                Ok(v)
            }
            Body::FastSymlink(t) => {
                let s = (offset as usize).min(t.len());
                let e = (end as usize).min(t.len());
                Ok(t[s..e].to_vec())
            }
            Body::Extents(_) => {
                let mut out = vec![0u8; want];
                let cs = u64::from(self.sb.cluster_size());
                for r in self.extents(inode)? {
                    let ext_start = u64::from(r.cpos) * cs;
                    let ext_end = ext_start + u64::from(r.leaf_clusters()) * cs;
                    let s = ext_start.max(offset);
                    let e = ext_end.min(end);
                    if s >= e || r.flags() & crate::extent::EXT_UNWRITTEN != 0 {
                        continue;
                    }
                    let disk = self.byte_offset(r.blkno)? + (s - ext_start);
                    let dst = &mut out[(s - offset) as usize..(e - offset) as usize];
                    self.src.read_at(disk, dst).map_err(|e| Error::Io {
                        offset: disk,
                        source: e,
                    })?;
                }
                Ok(out)
            }
            _ => Ok(vec![0u8; want]),
        }
    }

    /// The target of a symbolic link.
    pub fn symlink_target(&self, inode: &Dinode) -> Result<Vec<u8>> {
        // A target is shorter than PATH_MAX (the kernel's bound, its NUL
        // included; a slow link may span blocks): a damaged size must not make
        // the read allocate whatever it says.
        if inode.size >= PATH_MAX {
            return Err(DecodeError {
                block: inode.blkno,
                structure: "dinode",
                field: "i_size",
                problem: format!("{} bytes for a symbolic link's target", inode.size),
            }
            .into());
        }
        self.read_range(inode, 0, inode.size as usize)
    }

    /// The entries of a directory, in on-disk order.
    pub fn dir_entries(&self, inode: &Dinode) -> Result<Vec<DirEntry>> {
        if !inode.is_dir() {
            return Err(Error::NotADirectory(format!("inode {}", inode.blkno)));
        }
        if let Body::Inline(d) = &inode.body {
            let n = (inode.size as usize).min(d.data.len());
            return Ok(decode_entries(&d.data[..n], inode.blkno)?);
        }
        let bs = u64::from(self.block_size());
        let mut out = Vec::new();
        for r in self.extents(inode)? {
            let blocks = u64::from(r.leaf_clusters()) * u64::from(self.sb.cluster_size()) / bs;
            for i in 0..blocks {
                let logical = u64::from(r.cpos) * u64::from(self.sb.cluster_size()) / bs + i;
                if logical * bs >= inode.size {
                    break;
                }
                let blkno = r
                    .blkno
                    .checked_add(i)
                    .ok_or_else(|| Error::Invalid(format!("block {} out of range", r.blkno)))?;
                let mut buf = self.read_block(blkno)?;
                let has_trailer = buf.len() >= DIR_TRAILER_SIZE
                    && buf
                        [buf.len() - DIR_TRAILER_SIZE + 0x10..buf.len() - DIR_TRAILER_SIZE + 0x17]
                        == DIR_TRAILER_SIGNATURE[..7];
                let data_len = if has_trailer {
                    if self.sb.meta_ecc() {
                        let off = buf.len() - DIR_TRAILER_SIZE + DIR_TRAILER_CHECK_OFFSET;
                        check_block(&mut buf, off, blkno, "dir_block")?;
                    }
                    buf.len() - DIR_TRAILER_SIZE
                } else {
                    buf.len()
                };
                out.extend(decode_entries(&buf[..data_len], blkno)?);
            }
        }
        Ok(out)
    }

    /// Resolves a path: `/a/b` from the root, `//name` in the system directory.
    /// Returns the inode's block and the inode.
    pub fn lookup(&self, path: &str) -> Result<(u64, Dinode)> {
        let (system, parts) = split_path(path);
        let mut blkno = if system {
            self.sb.system_dir_blkno
        } else {
            self.sb.root_blkno
        };
        let mut inode = self.read_inode(blkno)?;
        let mut walked = String::from(if system { "/" } else { "" });
        for part in parts {
            walked.push('/');
            walked.push_str(part);
            if !inode.is_dir() {
                return Err(Error::NotADirectory(walked));
            }
            let entry = self
                .dir_entries(&inode)?
                .into_iter()
                .find(|e| e.name == part.as_bytes())
                .ok_or_else(|| Error::NotFound(walked.clone()))?;
            blkno = entry.inode;
            inode = self.read_inode(blkno)?;
        }
        Ok((blkno, inode))
    }
}

impl<S: BlockSource> Volume<S> {
    /// The extended attributes of an inode, as `getfattr` shows them: full
    /// names (namespace prefix + stored name) and values (POSIX ACLs turned
    /// into the VFS form), those in the inode block first, then those of its
    /// xattr block or of the buckets of its xattr tree, in stored order.
    /// Entries of a namespace no kernel handler knows are left out, as the
    /// kernel leaves them out of `listxattr`.
    pub fn xattrs(&self, inode: &Dinode) -> Result<Vec<(String, Vec<u8>)>> {
        if inode.dyn_features & dyn_features::HAS_XATTR == 0 {
            return Ok(Vec::new());
        }
        let mut items = Vec::new();
        if inode.dyn_features & dyn_features::INLINE_XATTR != 0 {
            items.extend(self.inline_xattrs(inode)?);
        }
        if inode.xattr_loc != 0 {
            items.extend(self.block_xattrs(inode.xattr_loc)?);
        }
        let mut out = Vec::with_capacity(items.len());
        for (block, item) in items {
            let Some(name) = item.full_name() else {
                continue;
            };
            let value = match &item.value {
                XattrValue::Local(v) => v.clone(),
                XattrValue::Outside { size, root } => {
                    let leaves = self.leaves(&root.list, block, "xattr_value_root")?;
                    self.read_mapped(&leaves, *size, block)?
                }
            };
            let value = match item.namespace {
                namespace::POSIX_ACL_ACCESS | namespace::POSIX_ACL_DEFAULT => {
                    xattr::acl_to_vfs(&value)
                }
                _ => value,
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// The attributes in the last `i_xattr_inline_size` bytes of the inode
    /// block, each with the block it came from.
    fn inline_xattrs(&self, inode: &Dinode) -> Result<Vec<(u64, XattrItem)>> {
        let buf = self.read_checked(inode.blkno, DINODE_CHECK_OFFSET, "dinode")?;
        let size = usize::from(inode.xattr_inline_size);
        if size == 0 || size > buf.len() - ID2_OFFSET {
            return Err(DecodeError {
                block: inode.blkno,
                structure: "dinode",
                field: "i_xattr_inline_size",
                problem: format!(
                    "{size} bytes of inline xattrs in a {}-byte inode",
                    buf.len()
                ),
            }
            .into());
        }
        let d = Decoder::new(&buf[buf.len() - size..], inode.blkno, "xattr_ibody");
        Ok(xattr::decode_area(&d)?
            .into_iter()
            .map(|i| (inode.blkno, i))
            .collect())
    }

    /// The attributes of the xattr block at `blkno`: in the block itself, or
    /// in the buckets of the tree it roots.
    fn block_xattrs(&self, blkno: u64) -> Result<Vec<(u64, XattrItem)>> {
        let buf = self.read_checked(blkno, XATTR_BLOCK_CHECK_OFFSET, "xattr_block")?;
        let xb = XattrBlock::decode(&buf, blkno)?;
        if xb.blkno != blkno {
            return Err(DecodeError {
                block: blkno,
                structure: "xattr_block",
                field: "xb_blkno",
                problem: format!("says block {}", xb.blkno),
            }
            .into());
        }
        let list = match xb.body {
            XattrBlockBody::Header(_) => {
                let d = Decoder::new(&buf[XATTR_BLOCK_ATTRS_OFFSET..], blkno, "xattr_block");
                return Ok(xattr::decode_area(&d)?
                    .into_iter()
                    .map(|i| (blkno, i))
                    .collect());
            }
            XattrBlockBody::Tree { list, .. } => list,
        };
        let leaves = self.leaves(&list, blkno, "xattr_tree_root")?;
        let bs = self.block_size() as usize;
        let per_bucket = (XATTR_BUCKET_SIZE / bs).max(1) as u64;
        let buckets_per_cluster = self.sb.cluster_size() as usize / XATTR_BUCKET_SIZE;
        let mut out = Vec::new();
        for r in leaves {
            // The first bucket of each extent says how many of the extent's
            // buckets are in use.
            let first = self.read_bucket(r.blkno, per_bucket)?;
            let used = Decoder::new(&first, r.blkno, "xattr_bucket").le16(6, "xh_num_buckets")?;
            let room = r.leaf_clusters() as usize * buckets_per_cluster;
            if usize::from(used) > room {
                return Err(DecodeError {
                    block: r.blkno,
                    structure: "xattr_bucket",
                    field: "xh_num_buckets",
                    problem: format!(
                        "{used} buckets in an extent of {} clusters ({room} buckets)",
                        r.leaf_clusters()
                    ),
                }
                .into());
            }
            for i in 0..u64::from(used) {
                let start = r.blkno.saturating_add(i * per_bucket);
                let bucket = if i == 0 {
                    first.clone()
                } else {
                    self.read_bucket(start, per_bucket)?
                };
                let d = Decoder::new(&bucket, start, "xattr_bucket");
                out.extend(xattr::decode_area(&d)?.into_iter().map(|x| (start, x)));
            }
        }
        Ok(out)
    }

    /// Reads the bucket starting at `blkno` (`per_bucket` blocks) and checks
    /// its metaecc, which covers all its blocks and sits in its header.
    fn read_bucket(&self, blkno: u64, per_bucket: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(XATTR_BUCKET_SIZE);
        for i in 0..per_bucket {
            buf.extend(self.read_block(blkno.saturating_add(i))?);
        }
        if self.sb.meta_ecc() {
            check_block(&mut buf, XATTR_HEADER_CHECK_OFFSET, blkno, "xattr_bucket")?;
        }
        Ok(buf)
    }

    /// Where block `blkno` starts on the device (an error for a block number
    /// no device has).
    fn byte_offset(&self, blkno: u64) -> Result<u64> {
        blkno
            .checked_mul(u64::from(self.block_size()))
            .ok_or_else(|| Error::Invalid(format!("block {blkno} out of range")))
    }

    /// `size` bytes mapped by leaf extents counted in clusters from 0 (a
    /// value kept outside its entry); `owner` is the block of the entry.
    fn read_mapped(&self, leaves: &[ExtentRec], size: u64, owner: u64) -> Result<Vec<u8>> {
        let cs = u64::from(self.sb.cluster_size());
        let mut out = vec![0u8; size as usize];
        let mut covered = 0u64;
        for r in leaves {
            let start = u64::from(r.cpos) * cs;
            let end = (start + u64::from(r.leaf_clusters()) * cs).min(size);
            if start >= end {
                continue;
            }
            let disk = self.byte_offset(r.blkno)?;
            self.src
                .read_at(disk, &mut out[start as usize..end as usize])
                .map_err(|e| Error::Io {
                    offset: disk,
                    source: e,
                })?;
            covered += end - start;
        }
        if covered < size {
            return Err(DecodeError {
                block: owner,
                structure: "xattr_value_root",
                field: "xr_list",
                problem: format!("extents cover {covered} of the value's {size} bytes"),
            }
            .into());
        }
        Ok(out)
    }
}

/// Verifies (and corrects one bit of) the check at `off` of a block.
pub fn check_block(
    buf: &mut [u8],
    off: usize,
    blkno: u64,
    structure: &'static str,
) -> std::result::Result<CheckOutcome, DecodeError> {
    blockcheck::verify_and_correct(buf, off).map_err(|stored| DecodeError {
        block: blkno,
        structure,
        field: "check",
        problem: format!(
            "CRC32 {:08x} / ECC {:04x} do not match the block, even with one bit corrected",
            stored.crc32e, stored.ecc
        ),
    })
}
