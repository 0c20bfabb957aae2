//! The superblock: the `id2` body of the dinode at block 2.
//!
//! It is a dinode (signature `OCFSV2`, flags valid|system|superblock) whose `id2`
//! holds the volume's geometry (block and cluster size as shifts), feature masks,
//! where the root and system directories are, the slot count, label, UUID, the
//! cluster stack it belongs to and the seeds of the indexed-directory hash. Copies
//! live at 1 GiB, 4 GiB, 16 GiB, 64 GiB, 256 GiB and 1 TiB when the volume
//! reaches that far and `backup-super` is on.

use crate::codec::{c_string, put_bytes, put_le16, put_le32, put_le64, put_u8, Decoder};
use crate::error::DecodeResult;

/// Block number of the superblock (in blocks of the volume's block size).
pub const SUPER_BLOCK_BLKNO: u64 = 2;
/// Magic of the filesystem type.
pub const SUPER_MAGIC: u32 = 0x7461_636f;
/// Signature of the superblock dinode.
pub const SUPER_BLOCK_SIGNATURE: &[u8; 8] = b"OCFSV2\0\0";
/// Smallest and largest block sizes.
pub const MIN_BLOCKSIZE: u32 = 512;
/// Largest block size.
pub const MAX_BLOCKSIZE: u32 = 4096;
/// Smallest cluster size.
pub const MIN_CLUSTERSIZE: u32 = 4096;
/// Largest cluster size.
pub const MAX_CLUSTERSIZE: u32 = 1 << 20;
/// Most node slots.
pub const MAX_SLOTS: u16 = 255;
/// Byte offset of the first backup superblock; the next are 4x further each.
pub const BACKUP_SB_START: u64 = 1 << 30;
/// Number of backup superblock positions.
pub const MAX_BACKUP_SUPERBLOCKS: usize = 6;
/// Revision written by mkfs: 0.90.
pub const MAJOR_REV_LEVEL: u16 = 0;
/// Minor revision.
pub const MINOR_REV_LEVEL: u16 = 90;

/// Compat feature bits.
pub mod compat {
    /// Backup superblocks exist.
    pub const BACKUP_SB: u32 = 0x0001;
    /// The journal superblock's feature bits are honoured.
    pub const JBD2_SB: u32 = 0x0002;
}
/// Incompat feature bits.
pub mod incompat {
    /// Heartbeat-only device.
    pub const HEARTBEAT_DEV: u32 = 0x0002;
    /// Resize in progress.
    pub const RESIZE_INPROG: u32 = 0x0004;
    /// Local (non-clustered) mount.
    pub const LOCAL_MOUNT: u32 = 0x0008;
    /// Sparse files.
    pub const SPARSE_ALLOC: u32 = 0x0010;
    /// A tunefs operation is in progress.
    pub const TUNEFS_INPROG: u32 = 0x0020;
    /// Data stored in the inode block.
    pub const INLINE_DATA: u32 = 0x0040;
    /// A userspace cluster stack.
    pub const USERSPACE_STACK: u32 = 0x0080;
    /// Extended slot map.
    pub const EXTENDED_SLOT_MAP: u32 = 0x0100;
    /// Extended attributes.
    pub const XATTR: u32 = 0x0200;
    /// Indexed directories.
    pub const INDEXED_DIRS: u32 = 0x0400;
    /// Metadata checksums and ECC.
    pub const META_ECC: u32 = 0x0800;
    /// Refcount trees (reflink).
    pub const REFCOUNT_TREE: u32 = 0x1000;
    /// Discontiguous block groups.
    pub const DISCONTIG_BG: u32 = 0x2000;
    /// Cluster info valid for every stack.
    pub const CLUSTERINFO: u32 = 0x4000;
    /// Append direct I/O.
    pub const APPEND_DIO: u32 = 0x8000;
}
/// Read-only-compat feature bits.
pub mod ro_compat {
    /// Unwritten extents.
    pub const UNWRITTEN: u32 = 0x0001;
    /// User quotas.
    pub const USRQUOTA: u32 = 0x0002;
    /// Group quotas.
    pub const GRPQUOTA: u32 = 0x0004;
}

/// Feature names as ocfs2-tools prints and parses them: (name, kind, bit) with
/// kind 0 = compat, 1 = incompat, 2 = ro_compat. Order is the tools' print order.
pub const FEATURE_NAMES: &[(&str, u8, u32)] = &[
    ("backup-super", 0, compat::BACKUP_SB),
    ("strict-journal-super", 0, compat::JBD2_SB),
    ("local", 1, incompat::LOCAL_MOUNT),
    ("sparse", 1, incompat::SPARSE_ALLOC),
    ("inline-data", 1, incompat::INLINE_DATA),
    ("extended-slotmap", 1, incompat::EXTENDED_SLOT_MAP),
    ("xattr", 1, incompat::XATTR),
    ("indexed-dirs", 1, incompat::INDEXED_DIRS),
    ("metaecc", 1, incompat::META_ECC),
    ("refcount", 1, incompat::REFCOUNT_TREE),
    ("discontig-bg", 1, incompat::DISCONTIG_BG),
    ("clusterinfo", 1, incompat::CLUSTERINFO),
    ("append-dio", 1, incompat::APPEND_DIO),
    ("unwritten", 2, ro_compat::UNWRITTEN),
    ("usrquota", 2, ro_compat::USRQUOTA),
    ("grpquota", 2, ro_compat::GRPQUOTA),
];

/// Incompat bits this code can read.
pub const INCOMPAT_SUPPORTED: u32 = incompat::LOCAL_MOUNT
    | incompat::SPARSE_ALLOC
    | incompat::INLINE_DATA
    | incompat::EXTENDED_SLOT_MAP
    | incompat::USERSPACE_STACK
    | incompat::XATTR
    | incompat::META_ECC
    | incompat::INDEXED_DIRS
    | incompat::REFCOUNT_TREE
    | incompat::DISCONTIG_BG
    | incompat::CLUSTERINFO
    | incompat::APPEND_DIO;

/// Offset of `id2` (the superblock body) in the dinode.
pub const SUPER_BODY_OFFSET: usize = 0xC0;

/// Cluster stack information (`ocfs2_cluster_info`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterInfo {
    /// Stack label, 4 bytes (`o2cb`, `pcmk`, ...).
    pub stack: [u8; 4],
    /// Stack flags (bit 0: o2cb global heartbeat).
    pub stackflags: u8,
    /// Cluster name, up to 16 bytes, not NUL-terminated when full.
    pub cluster: [u8; 16],
}

/// The superblock body (`ocfs2_super_block`), offsets relative to `id2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperBlock {
    /// Major revision (0).
    pub major_rev_level: u16,
    /// Minor revision (90).
    pub minor_rev_level: u16,
    /// Mounts since the last check.
    pub mnt_count: u16,
    /// Mounts allowed between checks.
    pub max_mnt_count: u16,
    /// State flags (bit 0: errors seen).
    pub state: u16,
    /// Behaviour on errors.
    pub errors: u16,
    /// Seconds between checks.
    pub checkinterval: u32,
    /// Time of the last check.
    pub lastcheck: u64,
    /// Creator OS (0 = Linux).
    pub creator_os: u32,
    /// Compat features.
    pub feature_compat: u32,
    /// Incompat features.
    pub feature_incompat: u32,
    /// Read-only-compat features.
    pub feature_ro_compat: u32,
    /// Block of the root directory's inode.
    pub root_blkno: u64,
    /// Block of the system directory's inode.
    pub system_dir_blkno: u64,
    /// log2 of the block size.
    pub blocksize_bits: u32,
    /// log2 of the cluster size.
    pub clustersize_bits: u32,
    /// Node slots.
    pub max_slots: u16,
    /// tunefs in-progress flags.
    pub tunefs_flag: u16,
    /// Hash of the UUID (seed of xattr and dx hashes).
    pub uuid_hash: u32,
    /// Block of the first cluster group descriptor.
    pub first_cluster_group: u64,
    /// Volume label (64 bytes).
    pub label: [u8; 64],
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Cluster stack.
    pub cluster_info: ClusterInfo,
    /// Inline xattr space per inode.
    pub xattr_inline_size: u16,
    /// Seeds of the indexed-directory hash.
    pub dx_seed: [u32; 3],
}

impl Default for SuperBlock {
    fn default() -> Self {
        SuperBlock {
            major_rev_level: 0,
            minor_rev_level: 0,
            mnt_count: 0,
            max_mnt_count: 0,
            state: 0,
            errors: 0,
            checkinterval: 0,
            lastcheck: 0,
            creator_os: 0,
            feature_compat: 0,
            feature_incompat: 0,
            feature_ro_compat: 0,
            root_blkno: 0,
            system_dir_blkno: 0,
            blocksize_bits: 12,
            clustersize_bits: 12,
            max_slots: 0,
            tunefs_flag: 0,
            uuid_hash: 0,
            first_cluster_group: 0,
            label: [0; 64],
            uuid: [0; 16],
            cluster_info: ClusterInfo::default(),
            xattr_inline_size: 0,
            dx_seed: [0; 3],
        }
    }
}

impl SuperBlock {
    /// Decodes the body at `d` (which starts at `id2`).
    pub fn decode(d: &Decoder<'_>) -> DecodeResult<SuperBlock> {
        let blocksize_bits = d.le32(0x38, "s_blocksize_bits")?;
        if !(9..=12).contains(&blocksize_bits) {
            return Err(d.err(
                "s_blocksize_bits",
                format!("{blocksize_bits} is not 9..=12"),
            ));
        }
        let clustersize_bits = d.le32(0x3C, "s_clustersize_bits")?;
        if !(12..=20).contains(&clustersize_bits) {
            return Err(d.err(
                "s_clustersize_bits",
                format!("{clustersize_bits} is not 12..=20"),
            ));
        }
        Ok(SuperBlock {
            major_rev_level: d.le16(0x00, "s_major_rev_level")?,
            minor_rev_level: d.le16(0x02, "s_minor_rev_level")?,
            mnt_count: d.le16(0x04, "s_mnt_count")?,
            max_mnt_count: d.le16(0x06, "s_max_mnt_count")?,
            state: d.le16(0x08, "s_state")?,
            errors: d.le16(0x0A, "s_errors")?,
            checkinterval: d.le32(0x0C, "s_checkinterval")?,
            lastcheck: d.le64(0x10, "s_lastcheck")?,
            creator_os: d.le32(0x18, "s_creator_os")?,
            feature_compat: d.le32(0x1C, "s_feature_compat")?,
            feature_incompat: d.le32(0x20, "s_feature_incompat")?,
            feature_ro_compat: d.le32(0x24, "s_feature_ro_compat")?,
            root_blkno: d.le64(0x28, "s_root_blkno")?,
            system_dir_blkno: d.le64(0x30, "s_system_dir_blkno")?,
            blocksize_bits,
            clustersize_bits,
            max_slots: d.le16(0x40, "s_max_slots")?,
            tunefs_flag: d.le16(0x42, "s_tunefs_flag")?,
            uuid_hash: d.le32(0x44, "s_uuid_hash")?,
            first_cluster_group: d.le64(0x48, "s_first_cluster_group")?,
            label: d.fixed(0x50, "s_label")?,
            uuid: d.fixed(0x90, "s_uuid")?,
            cluster_info: ClusterInfo {
                stack: d.fixed(0xA0, "ci_stack")?,
                stackflags: d.u8(0xA4, "ci_stackflags")?,
                cluster: d.fixed(0xA8, "ci_cluster")?,
            },
            xattr_inline_size: d.le16(0xB8, "s_xattr_inline_size")?,
            dx_seed: [
                d.le32(0xBC, "s_dx_seed")?,
                d.le32(0xC0, "s_dx_seed")?,
                d.le32(0xC4, "s_dx_seed")?,
            ],
        })
    }

    /// Encodes into `b` (which starts at `id2`, at least 0x140 bytes).
    pub fn encode(&self, b: &mut [u8]) {
        put_le16(b, 0x00, self.major_rev_level);
        put_le16(b, 0x02, self.minor_rev_level);
        put_le16(b, 0x04, self.mnt_count);
        put_le16(b, 0x06, self.max_mnt_count);
        put_le16(b, 0x08, self.state);
        put_le16(b, 0x0A, self.errors);
        put_le32(b, 0x0C, self.checkinterval);
        put_le64(b, 0x10, self.lastcheck);
        put_le32(b, 0x18, self.creator_os);
        put_le32(b, 0x1C, self.feature_compat);
        put_le32(b, 0x20, self.feature_incompat);
        put_le32(b, 0x24, self.feature_ro_compat);
        put_le64(b, 0x28, self.root_blkno);
        put_le64(b, 0x30, self.system_dir_blkno);
        put_le32(b, 0x38, self.blocksize_bits);
        put_le32(b, 0x3C, self.clustersize_bits);
        put_le16(b, 0x40, self.max_slots);
        put_le16(b, 0x42, self.tunefs_flag);
        put_le32(b, 0x44, self.uuid_hash);
        put_le64(b, 0x48, self.first_cluster_group);
        put_bytes(b, 0x50, &self.label);
        put_bytes(b, 0x90, &self.uuid);
        put_bytes(b, 0xA0, &self.cluster_info.stack);
        put_u8(b, 0xA4, self.cluster_info.stackflags);
        put_bytes(b, 0xA8, &self.cluster_info.cluster);
        put_le16(b, 0xB8, self.xattr_inline_size);
        put_le32(b, 0xBC, self.dx_seed[0]);
        put_le32(b, 0xC0, self.dx_seed[1]);
        put_le32(b, 0xC4, self.dx_seed[2]);
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.blocksize_bits
    }
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u32 {
        1 << self.clustersize_bits
    }
    /// Label as text.
    pub fn label_str(&self) -> String {
        c_string(&self.label)
    }
    /// Whether an incompat feature is on.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }
    /// Whether a read-only-compat feature is on.
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }
    /// Whether metaecc checks are kept.
    pub fn meta_ecc(&self) -> bool {
        self.has_incompat(incompat::META_ECC)
    }
    /// Whether directory blocks end in a trailer (with metaecc or indexed dirs).
    pub fn dir_trailers(&self) -> bool {
        self.has_incompat(incompat::META_ECC) || self.has_incompat(incompat::INDEXED_DIRS)
    }
    /// UUID as 32 upper-case hex digits, as the tools print it.
    pub fn uuid_hex(&self) -> String {
        self.uuid.iter().map(|b| format!("{b:02X}")).collect()
    }
    /// Names of the features that are on, in the tools' order.
    pub fn feature_names(&self) -> Vec<&'static str> {
        feature_names(
            self.feature_compat,
            self.feature_incompat,
            self.feature_ro_compat,
        )
    }
}

/// Names of the set feature bits, in the tools' order.
pub fn feature_names(compat: u32, incompat: u32, ro_compat: u32) -> Vec<&'static str> {
    FEATURE_NAMES
        .iter()
        .filter(|(_, kind, bit)| match kind {
            0 => compat & bit != 0,
            1 => incompat & bit != 0,
            _ => ro_compat & bit != 0,
        })
        .map(|(n, _, _)| *n)
        .collect()
}

/// Block numbers of the backup superblocks that fit in `total_blocks`.
pub fn backup_blocks(block_size: u32, total_blocks: u64) -> Vec<u64> {
    (0..MAX_BACKUP_SUPERBLOCKS)
        .map(|i| (BACKUP_SB_START << (2 * i)) / u64::from(block_size))
        .take_while(|&b| b < total_blocks)
        .collect()
}

/// The UUID hash ocfs2 keeps in `s_uuid_hash` (Bob Jenkins' one-at-a-time style
/// hash used by the xattr code, over the 16 UUID bytes).
pub fn uuid_hash(uuid: &[u8; 16]) -> u32 {
    let mut hash: u32 = 0;
    for &b in uuid {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(b);
    }
    hash
}
