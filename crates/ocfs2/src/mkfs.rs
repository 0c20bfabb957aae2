//! mkfs: lays out a new volume the way `mkfs.ocfs2` 1.8.7 does.
//!
//! [`Plan::new`] turns options and a device size into the geometry (block and
//! cluster size, cluster groups, slots, journal and extent allocator sizes) with
//! the real tool's defaults; [`format`] then builds every metadata block in memory
//! and writes them through [`BlockSink`]. The allocation order is the real
//! tool's, so the same options give the same inode numbers and the same layout:
//! the global bitmap's groups; the system inode group; root and system
//! directories; the system files; heartbeat; orphan directories; then backup
//! superblocks, journals, extent allocator groups, slot map, quota files and
//! `lost+found`.

use std::collections::BTreeMap;

use crate::alloc::{ChainList, ChainRec, GroupDesc, GROUP_CHECK_OFFSET, MAX_BG_BITMAP_SIZE};
use crate::blockcheck;
use crate::codec::{put_bytes, put_le32, set_bit, test_bit};
use crate::dinode::{
    self, flags, mode, Body, Dinode, InlineData, LocalAlloc, TruncateLog, DINODE_CHECK_OFFSET,
};
use crate::dir::{self, file_type, DirTrailer, DIR_TRAILER_CHECK_OFFSET, DIR_TRAILER_SIZE};
use crate::error::{Error, Result};
use crate::extent::{ExtentList, ExtentRec};
use crate::jbd2::{JournalSuperblock, SUPERBLOCK_V2};
use crate::quota;
use crate::superblock::{
    self, compat, incompat, ro_compat, ClusterInfo, SuperBlock, SUPER_BLOCK_BLKNO,
};

/// Where mkfs writes.
pub trait BlockSink {
    /// Writes `buf` at byte `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()>;
    /// Makes `len` bytes at `offset` read as zeros.
    fn write_zeros(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let chunk = vec![0u8; 1 << 20];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64) as usize;
            self.write_at(offset + done, &chunk[..n])?;
            done += n as u64;
        }
        Ok(())
    }
    /// Makes the writes durable.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BlockSink for Vec<u8> {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        let start = offset as usize;
        let end = start + buf.len();
        if end > self.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn write_zeros(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let start = offset as usize;
        let end = start + len as usize;
        if end > self.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self[start..end].fill(0);
        Ok(())
    }
}

/// `-T`: what the volume will hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsType {
    /// No `-T`.
    #[default]
    Default,
    /// Few large files.
    Datafiles,
    /// Many small files.
    Mail,
    /// Virtual machine images.
    Vmstore,
}

impl FsType {
    /// Parses `-T` values.
    pub fn parse(s: &str) -> Option<FsType> {
        Some(match s {
            "datafiles" => FsType::Datafiles,
            "mail" => FsType::Mail,
            "vmstore" => FsType::Vmstore,
            _ => return None,
        })
    }
    /// Name as printed.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Default => "default",
            FsType::Datafiles => "datafiles",
            FsType::Mail => "mail",
            FsType::Vmstore => "vmstore",
        }
    }
}

/// `--fs-feature-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureLevel {
    /// The tools' default set.
    #[default]
    Default,
    /// No incompat features.
    MaxCompat,
    /// Everything.
    MaxFeatures,
}

impl FeatureLevel {
    /// Parses level names.
    pub fn parse(s: &str) -> Option<FeatureLevel> {
        Some(match s {
            "default" => FeatureLevel::Default,
            "max-compat" => FeatureLevel::MaxCompat,
            "max-features" => FeatureLevel::MaxFeatures,
            _ => return None,
        })
    }
    /// (compat, incompat, ro_compat) of the level.
    pub fn features(self) -> (u32, u32, u32) {
        let c = compat::BACKUP_SB | compat::JBD2_SB;
        let def = incompat::SPARSE_ALLOC
            | incompat::EXTENDED_SLOT_MAP
            | incompat::INLINE_DATA
            | incompat::XATTR
            | incompat::REFCOUNT_TREE
            | incompat::INDEXED_DIRS
            | incompat::DISCONTIG_BG
            | incompat::APPEND_DIO;
        match self {
            FeatureLevel::Default => (c, def, ro_compat::UNWRITTEN),
            FeatureLevel::MaxCompat => (c, 0, 0),
            FeatureLevel::MaxFeatures => (
                c,
                def | incompat::META_ECC,
                ro_compat::UNWRITTEN | ro_compat::USRQUOTA | ro_compat::GRPQUOTA,
            ),
        }
    }
}

/// Feature masks (compat, incompat, ro_compat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Compat.
    pub compat: u32,
    /// Incompat.
    pub incompat: u32,
    /// Read-only-compat.
    pub ro_compat: u32,
}

impl Features {
    fn add(&mut self, kind: u8, bit: u32) {
        match kind {
            0 => self.compat |= bit,
            1 => self.incompat |= bit,
            _ => self.ro_compat |= bit,
        }
    }
    /// Names in the tools' print order.
    pub fn names(&self) -> Vec<&'static str> {
        superblock::feature_names(self.compat, self.incompat, self.ro_compat)
    }
}

/// Parses `--fs-features=a,nob,...` into (set, clear), with the dependencies
/// the tools apply (unwritten needs sparse).
pub fn parse_features(s: &str) -> std::result::Result<(Features, Features), String> {
    let mut set = Features::default();
    let mut clear = Features::default();
    for tok in s.split(',').filter(|t| !t.is_empty()) {
        let (neg, name) = match tok.strip_prefix("no") {
            Some(rest) if superblock::FEATURE_NAMES.iter().any(|(n, _, _)| *n == rest) => {
                (true, rest)
            }
            _ => (false, tok),
        };
        let (_, kind, bit) = superblock::FEATURE_NAMES
            .iter()
            .find(|(n, _, _)| *n == name && *n != "strict-journal-super")
            .ok_or_else(|| format!("unknown feature '{name}'"))?;
        if neg {
            clear.add(*kind, *bit);
            if name == "sparse" {
                clear.ro_compat |= ro_compat::UNWRITTEN;
            }
        } else {
            set.add(*kind, *bit);
            if name == "unwritten" {
                set.incompat |= incompat::SPARSE_ALLOC;
            }
        }
    }
    if set.compat & clear.compat != 0
        || set.incompat & clear.incompat != 0
        || set.ro_compat & clear.ro_compat != 0
    {
        return Err("a feature is both set and cleared".into());
    }
    Ok((set, clear))
}

/// Mount type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// Single node.
    Local,
    /// Cluster.
    Cluster,
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-b`.
    pub block_size: Option<u32>,
    /// `-C`.
    pub cluster_size: Option<u32>,
    /// `-N`.
    pub slots: Option<u16>,
    /// `-J size=`.
    pub journal_size: Option<u64>,
    /// `-L`.
    pub label: String,
    /// `-T`.
    pub fs_type: FsType,
    /// `-M`.
    pub mount: Option<MountType>,
    /// `--fs-feature-level`.
    pub level: FeatureLevel,
    /// `--fs-features` to set.
    pub set: Features,
    /// `--fs-features` to clear.
    pub clear: Features,
    /// `--cluster-stack`.
    pub cluster_stack: Option<String>,
    /// `--cluster-name`.
    pub cluster_name: Option<String>,
    /// `-U`.
    pub uuid: Option<[u8; 16]>,
    /// `--no-backup-super`.
    pub no_backup_super: bool,
}

/// Per-run randomness and time, passed in so that the core stays pure.
#[derive(Debug, Clone, Copy)]
pub struct Entropy {
    /// Volume generation.
    pub generation: u32,
    /// UUID when `-U` is not given.
    pub uuid: [u8; 16],
    /// Seeds of the indexed-directory hash.
    pub dx_seed: [u32; 3],
    /// Format time (seconds since the epoch).
    pub now: u64,
}

/// The computed geometry.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Block size.
    pub block_size: u32,
    /// log2 of it.
    pub block_bits: u32,
    /// Cluster size.
    pub cluster_size: u32,
    /// log2 of it.
    pub cluster_bits: u32,
    /// Volume bytes (cluster aligned).
    pub volume_bytes: u64,
    /// Clusters.
    pub clusters: u32,
    /// Blocks.
    pub blocks: u64,
    /// Clusters per global bitmap group.
    pub global_cpg: u32,
    /// Number of cluster groups.
    pub cluster_groups: u32,
    /// Clusters in the last group.
    pub tail_group_bits: u32,
    /// Slots.
    pub slots: u16,
    /// Journal bytes per slot.
    pub journal_bytes: u64,
    /// Extent allocator clusters per slot.
    pub extent_alloc_clusters: u32,
    /// Features (before mkfs adds clusterinfo / local).
    pub features: Features,
    /// Mount type.
    pub mount: MountType,
    /// Label.
    pub label: String,
    /// `-T`.
    pub fs_type: FsType,
    /// Cluster stack and name.
    pub cluster: Option<(String, String)>,
    /// Write backup superblocks.
    pub backup_super: bool,
    /// UUID given with `-U`.
    pub uuid: Option<[u8; 16]>,
}

const MB: u64 = 1 << 20;

fn clusters_per_group(block_size: u32, cluster_bits: u32) -> u32 {
    let megabytes: u64 = match block_size {
        4096 | 2048 => 4,
        1024 => 2,
        _ => 1,
    };
    ((megabytes << 20) >> cluster_bits) as u32
}

impl Plan {
    /// Computes the geometry of a volume of `device_bytes` with `opts`, with the
    /// real tool's defaults and refusals.
    pub fn new(opts: &Options, device_bytes: u64) -> Result<Plan> {
        let (c, i, r) = opts.level.features();
        let mut level = Features {
            compat: c,
            incompat: i,
            ro_compat: r,
        };
        level.compat |= opts.set.compat;
        level.incompat |= opts.set.incompat;
        level.ro_compat |= opts.set.ro_compat;
        level.compat &= !opts.clear.compat;
        level.incompat &= !opts.clear.incompat;
        level.ro_compat &= !opts.clear.ro_compat;
        let features = level;
        let mut mount = if features.incompat & incompat::LOCAL_MOUNT != 0 {
            MountType::Local
        } else {
            MountType::Cluster
        };
        if let Some(m) = opts.mount {
            mount = m;
        }
        let cluster = match (&opts.cluster_stack, &opts.cluster_name) {
            (None, None) => None,
            _ if mount == MountType::Local => {
                return Err(Error::Invalid(
                    "Invalid cluster stack name; local mount is incompatible with the specified cluster attribute".into(),
                ))
            }
            (None, _) => return Err(Error::Invalid("Invalid cluster stack name; missing cluster stack".into())),
            (Some(_), None) => return Err(Error::Invalid("Invalid cluster name; missing cluster name".into())),
            (Some(s), Some(n)) => {
                if !["o2cb", "pcmk", "cman"].contains(&s.as_str()) {
                    return Err(Error::Invalid(format!("Invalid cluster stack name; unknown cluster stack '{s}'")));
                }
                if n.is_empty() || n.len() > 16 || (s == "o2cb" && !n.chars().all(|c| c.is_ascii_alphanumeric())) {
                    return Err(Error::Invalid("Invalid cluster name; max 16 alpha-numeric characters".into()));
                }
                Some((s.clone(), n.clone()))
            }
        };
        if features.incompat & incompat::INDEXED_DIRS != 0
            && features.incompat & incompat::INLINE_DATA == 0
        {
            return Err(Error::Unsupported(
                "indexed-dirs without inline-data (the system directories would have to be indexed)".into(),
            ));
        }

        let bs_for_size = opts.block_size.unwrap_or(superblock::MAX_BLOCKSIZE);
        let mut volume_bytes = device_bytes / u64::from(bs_for_size) * u64::from(bs_for_size);
        let block_size = match opts.block_size {
            Some(b) => b,
            None => {
                let b = if volume_bytes <= 3 * MB {
                    superblock::MIN_BLOCKSIZE
                } else {
                    let mut b = superblock::MAX_BLOCKSIZE;
                    let mut shift = 30;
                    while b > 1024 {
                        if volume_bytes >= 1u64 << shift {
                            break;
                        }
                        b >>= 1;
                        shift -= 1;
                    }
                    b
                };
                volume_bytes = device_bytes / u64::from(b) * u64::from(b);
                b
            }
        };
        let block_bits = block_size.trailing_zeros();
        let cluster_size = match opts.cluster_size {
            Some(c) => c,
            None => match opts.fs_type {
                FsType::Datafiles | FsType::Vmstore => {
                    let gigs = volume_bytes >> 30;
                    if gigs < 2 {
                        return Err(Error::Invalid(
                            "Selected file system type requires a device of at least 2 gigabytes"
                                .into(),
                        ));
                    }
                    (if gigs < 64 {
                        128
                    } else if gigs < 96 {
                        256
                    } else if gigs < 128 {
                        512
                    } else {
                        1024
                    }) * 1024
                }
                _ => {
                    let mut c = superblock::MIN_CLUSTERSIZE;
                    while c < superblock::MAX_CLUSTERSIZE
                        && (volume_bytes >> c.trailing_zeros()) > u64::from(u32::MAX - 1)
                    {
                        c <<= 1;
                    }
                    c
                }
            },
        };
        if cluster_size < block_size {
            return Err(Error::Invalid(
                "the cluster size must be at least the block size".into(),
            ));
        }
        let cluster_bits = cluster_size.trailing_zeros();
        let clusters64 = volume_bytes >> cluster_bits;
        if clusters64 > u64::from(u32::MAX) {
            return Err(Error::Invalid(format!(
                "The ocfs2 filesystem cannot be larger than {} clusters",
                u32::MAX
            )));
        }
        let clusters = clusters64 as u32;
        volume_bytes = clusters64 << cluster_bits;
        let blocks = volume_bytes >> block_bits;

        let bitmap_cpg = (block_size - 64) * 8;
        let cluster_groups = clusters.div_ceil(bitmap_cpg).max(1);
        // With a single group the tools report (and use) the whole volume.
        let global_cpg = if cluster_groups == 1 {
            clusters
        } else {
            bitmap_cpg
        };
        let tail_group_bits = clusters - (cluster_groups - 1) * global_cpg;

        let slots = match opts.slots {
            Some(s) => s,
            None if mount == MountType::Local => 1,
            None => match volume_bytes >> 30 {
                0..=1 => 2,
                2..=9 => 4,
                10..=1023 => 8,
                _ => 16,
            },
        };

        // Journal size (figure_journal_size).
        if blocks < 2048 {
            return Err(Error::Invalid("Filesystem too small for a journal".into()));
        }
        let align = |bytes: u64| bytes.div_ceil(u64::from(cluster_size)) * u64::from(cluster_size);
        let min_journal = (u64::from(cluster_size) << 3) + u64::from(cluster_size);
        let valid = |jblocks: u64| jblocks * u64::from(slots) + 1024 <= blocks;
        let journal_bytes = if let Some(size) = opts.journal_size {
            if !valid(size >> block_bits) {
                return Err(Error::Invalid(
                    "Journal size too big for filesystem.".into(),
                ));
            }
            let j = align(size);
            if j < min_journal {
                return Err(Error::Invalid(
                    "Journal size too small for filesystem.".into(),
                ));
            }
            j
        } else {
            let jblocks: u64 = match opts.fs_type {
                FsType::Datafiles => 8192,
                FsType::Mail => {
                    if blocks < 262_144 {
                        16384
                    } else if blocks < 524_288 {
                        32768
                    } else {
                        65536
                    }
                }
                FsType::Vmstore => {
                    if blocks < 262_144 {
                        8192
                    } else if blocks < 524_288 {
                        16384
                    } else {
                        32768
                    }
                }
                FsType::Default => {
                    if blocks < 32768 {
                        (4 * MB) / u64::from(block_size)
                    } else if blocks < 262_144 {
                        4096
                    } else {
                        (blocks / 160).clamp(16384, 65536)
                    }
                }
            };
            let mut j = align(jblocks << block_bits);
            if j < min_journal {
                j = min_journal;
                if !valid(j >> block_bits) {
                    return Err(Error::Invalid(
                        "Volume size too small for required configuration.\nIncrease volume size or reduce cluster size"
                            .into(),
                    ));
                }
            }
            j
        };
        if blocks > u64::from(u32::MAX) {
            return Err(Error::Invalid(format!(
                "jbd can only store block numbers in 32 bits; the device holds {blocks} blocks"
            )));
        }

        // Extent allocator (figure_extent_alloc_size).
        let cpg = clusters_per_group(block_size, cluster_bits);
        let target = match opts.fs_type {
            FsType::Datafiles | FsType::Vmstore => 0.3,
            _ => 0.1,
        };
        let unit = u64::from(cpg) * u64::from(cluster_size) * u64::from(slots);
        let mut total = unit;
        let mut groups: u32 = 1;
        let mut pct;
        loop {
            pct = total as f64 * 100.0 / volume_bytes as f64;
            if pct >= target {
                break;
            }
            total += unit;
            groups += 1;
        }
        if pct > 5.0 {
            groups -= 1;
        }
        let extent_alloc_clusters = cpg * groups;

        let backup_super = features.compat & compat::BACKUP_SB != 0 && !opts.no_backup_super;
        Ok(Plan {
            block_size,
            block_bits,
            cluster_size,
            cluster_bits,
            volume_bytes,
            clusters,
            blocks,
            global_cpg,
            cluster_groups,
            tail_group_bits,
            slots,
            journal_bytes,
            extent_alloc_clusters,
            features,
            mount,
            label: opts.label.clone(),
            fs_type: opts.fs_type,
            cluster: cluster.clone(),
            backup_super,
            uuid: opts.uuid,
        })
    }

    /// The lines the real tool prints before formatting.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if self.fs_type != FsType::Default {
            s += &format!("Filesystem Type of {}\n", self.fs_type.name());
        }
        let cpg = clusters_per_group(self.block_size, self.cluster_bits);
        let f = self.features;
        s += &format!("Label: {}\n", self.label);
        s += &format!("Features: {}\n", print_order_names(&f).join(" "));
        s += &format!(
            "Block size: {} ({} bits)\n",
            self.block_size, self.block_bits
        );
        s += &format!(
            "Cluster size: {} ({} bits)\n",
            self.cluster_size, self.cluster_bits
        );
        s += &format!(
            "Volume size: {} ({} clusters) ({} blocks)\n",
            self.volume_bytes, self.clusters, self.blocks
        );
        s += &format!(
            "Cluster groups: {} (tail covers {} clusters, rest cover {} clusters)\n",
            self.cluster_groups, self.tail_group_bits, self.global_cpg
        );
        s += &format!(
            "Extent allocator size: {} ({} groups)\n",
            u64::from(self.extent_alloc_clusters) * u64::from(self.cluster_size),
            self.extent_alloc_clusters / cpg
        );
        s += &format!("Journal size: {}\n", self.journal_bytes);
        s += &format!("Node slots: {}\n", self.slots);
        s
    }
}

/// Feature names in the order mkfs prints them.
fn print_order_names(f: &Features) -> Vec<&'static str> {
    const ORDER: &[(&str, u8, u32)] = &[
        ("local", 1, incompat::LOCAL_MOUNT),
        ("sparse", 1, incompat::SPARSE_ALLOC),
        ("extended-slotmap", 1, incompat::EXTENDED_SLOT_MAP),
        ("userspace-stack", 1, incompat::USERSPACE_STACK),
        ("backup-super", 0, compat::BACKUP_SB),
        ("unwritten", 2, ro_compat::UNWRITTEN),
        ("inline-data", 1, incompat::INLINE_DATA),
        ("strict-journal-super", 0, compat::JBD2_SB),
        ("metaecc", 1, incompat::META_ECC),
        ("xattr", 1, incompat::XATTR),
        ("indexed-dirs", 1, incompat::INDEXED_DIRS),
        ("usrquota", 2, ro_compat::USRQUOTA),
        ("grpquota", 2, ro_compat::GRPQUOTA),
        ("refcount", 1, incompat::REFCOUNT_TREE),
        ("discontig-bg", 1, incompat::DISCONTIG_BG),
        ("clusterinfo", 1, incompat::CLUSTERINFO),
        ("append-dio", 1, incompat::APPEND_DIO),
    ];
    ORDER
        .iter()
        .filter(|(_, k, b)| match k {
            0 => f.compat & b != 0,
            1 => f.incompat & b != 0,
            _ => f.ro_compat & b != 0,
        })
        .map(|(n, _, _)| *n)
        .collect()
}

/// The global bitmap while mkfs allocates from it.
struct ClusterBitmap {
    groups: Vec<BitGroup>,
    chains: usize,
}

struct BitGroup {
    /// First cluster of the group (the descriptor's cluster; group 0 starts at 0).
    start: u32,
    bits: u32,
    map: Vec<u8>,
    free: u32,
    blkno: u64,
    next: u64,
    chain: u16,
}

impl ClusterBitmap {
    fn new(plan: &Plan, first_group_blkno: u64, first_cluster_group: u32) -> ClusterBitmap {
        let recs = dinode::chain_recs_per_inode(plan.block_size) as usize;
        let c2b = plan.cluster_bits - plan.block_bits;
        let bitmap_bytes = (plan.block_size - 64) as usize;
        let mut groups = Vec::new();
        for i in 0..plan.cluster_groups {
            let bits = if i + 1 == plan.cluster_groups {
                plan.tail_group_bits
            } else {
                plan.global_cpg
            };
            let start = i * plan.global_cpg;
            let blkno = if i == 0 {
                first_group_blkno
            } else {
                u64::from(start) << c2b
            };
            let mut map = vec![0u8; bitmap_bytes];
            set_bit(&mut map, 0);
            let mut free = bits - 1;
            if i == 0 {
                for b in 1..=first_cluster_group {
                    set_bit(&mut map, b as usize);
                    free -= 1;
                }
            }
            groups.push(BitGroup {
                start,
                bits,
                map,
                free,
                blkno,
                next: 0,
                chain: (i as usize % recs) as u16,
            });
        }
        for i in recs..groups.len() {
            let b = groups[i].blkno;
            groups[i - recs].next = b;
        }
        let chains = groups.len().min(recs);
        ClusterBitmap { groups, chains }
    }

    /// mkfs.c's first fit: chains in order, groups along each chain.
    fn alloc_first_fit(&mut self, n: u32) -> Result<u32> {
        let recs = self.chains;
        for c in 0..recs {
            let mut gi = c;
            while gi < self.groups.len() {
                if self.groups[gi].free >= n {
                    let g = &mut self.groups[gi];
                    let start = find_clear_run(&g.map, g.bits, n).ok_or_else(|| {
                        Error::Invalid(format!(
                            "Could not allocate {n} bits from global bitmap bitmap"
                        ))
                    })?;
                    for b in start..start + n {
                        set_bit(&mut g.map, b as usize);
                    }
                    g.free -= n;
                    return Ok(g.start + start);
                }
                gi += recs;
            }
        }
        Err(Error::Invalid(format!(
            "Could not allocate {n} bits from global bitmap bitmap"
        )))
    }

    /// libocfs2's range allocation: groups in disk order; the first run of
    /// `want` in a group, else that group's longest run if at least `min`.
    fn alloc_range(&mut self, min: u32, want: u32) -> Result<(u32, u32)> {
        for g in &mut self.groups {
            if g.free < min {
                continue;
            }
            let mut best: Option<(u32, u32)> = None;
            let mut s = 0u32;
            let mut found = None;
            while s + min <= g.bits {
                while s < g.bits && test_bit(&g.map, s as usize) {
                    s += 1;
                }
                if s >= g.bits {
                    break;
                }
                let mut e = s;
                while e < g.bits && !test_bit(&g.map, e as usize) {
                    e += 1;
                }
                if e - s >= want {
                    found = Some((s, want));
                    break;
                }
                if best.is_none_or(|(_, l)| e - s > l) {
                    best = Some((s, e - s));
                }
                s = e + 1;
            }
            let pick = found.or(best.filter(|&(_, l)| l >= min));
            if let Some((s, l)) = pick {
                for b in s..s + l {
                    set_bit(&mut g.map, b as usize);
                }
                g.free -= l;
                return Ok((g.start + s, l));
            }
        }
        Err(Error::Invalid(format!(
            "no {min} free clusters left in the global bitmap"
        )))
    }

    fn set_cluster(&mut self, cluster: u32) {
        for g in &mut self.groups {
            if cluster >= g.start && cluster < g.start + g.bits {
                let b = (cluster - g.start) as usize;
                if !test_bit(&g.map, b) {
                    set_bit(&mut g.map, b);
                    g.free -= 1;
                }
            }
        }
    }

    fn used(&self) -> u32 {
        self.groups.iter().map(|g| g.bits - g.free).sum()
    }
}

fn find_clear_run(map: &[u8], size: u32, n: u32) -> Option<u32> {
    let mut run = 0;
    for i in 0..size {
        if test_bit(map, i as usize) {
            run = 0;
        } else {
            run += 1;
            if run == n {
                return Some(i + 1 - n);
            }
        }
    }
    None
}

/// A directory being built: entries (inode, type, name).
#[derive(Default, Clone)]
struct DirBuild {
    entries: Vec<(u64, u8, Vec<u8>)>,
}

/// One system inode being built.
#[derive(Clone)]
struct Rec {
    blkno: u64,
    suballoc_bit: u16,
    flags: u32,
    mode: u16,
    links: u16,
    size: u64,
    extents: Vec<(u32, u32)>, // (start cluster, clusters)
}

impl Rec {
    fn new(flags: u32, mode: u16) -> Rec {
        Rec {
            blkno: 0,
            suballoc_bit: 0,
            flags: flags::VALID | flags::SYSTEM | flags,
            mode,
            links: if mode & mode::S_IFMT == mode::S_IFDIR {
                0
            } else {
                1
            },
            size: 0,
            extents: Vec::new(),
        }
    }
    fn clusters(&self) -> u32 {
        self.extents.iter().map(|e| e.1).sum()
    }
}

/// A chain suballocator (per-slot inode/extent allocators) being built.
#[derive(Default, Clone)]
struct SubAlloc {
    groups: Vec<(u64, u16, u16)>, // (blkno, bits, used)
}

/// Everything `format` produced, for the caller's messages.
#[derive(Debug, Clone)]
pub struct Report {
    /// Backup superblocks written.
    pub backups: usize,
    /// The superblock written.
    pub superblock: SuperBlock,
}

// Slots index several parallel per-slot tables here; a range reads best.
#[allow(clippy::needless_range_loop)]
/// Formats the device: writes every block of a fresh volume. `progress` is
/// called with the real tool's progress lines.
pub fn format(
    plan: &Plan,
    entropy: &Entropy,
    sink: &mut dyn BlockSink,
    progress: &mut dyn FnMut(&str),
) -> Result<Report> {
    let io = |offset: u64| move |e: std::io::Error| Error::Io { offset, source: e };
    let bs = plan.block_size;
    let bsu = bs as usize;
    let cs = u64::from(plan.cluster_size);
    let c2b = plan.cluster_bits - plan.block_bits;
    let bpc = 1u32 << c2b;
    let gen = entropy.generation;
    let now = entropy.now;
    let inline = plan.features.incompat & incompat::INLINE_DATA != 0;
    let ecc = plan.features.incompat & incompat::META_ECC != 0;
    let trailers = ecc || plan.features.incompat & incompat::INDEXED_DIRS != 0;
    let discontig = plan.features.incompat & incompat::DISCONTIG_BG != 0;
    let quota_usr = plan.features.ro_compat & ro_compat::USRQUOTA != 0;
    let quota_grp = plan.features.ro_compat & ro_compat::GRPQUOTA != 0;
    let max_inline = u64::from(dinode::max_inline_data(bs));

    // Clear both ends.
    sink.write_zeros(0, MB.min(plan.volume_bytes))
        .map_err(io(0))?;
    let tail = plan.volume_bytes.saturating_sub(MB);
    sink.write_zeros(tail, MB.min(plan.volume_bytes))
        .map_err(io(tail))?;

    progress("Creating bitmaps: ");
    let first_cluster_group = (SUPER_BLOCK_BLKNO as u32 + 1 + bpc - 1) >> c2b;
    let first_group_blkno = u64::from(first_cluster_group) << c2b;
    let mut gbm = ClusterBitmap::new(plan, first_group_blkno, first_cluster_group);

    // System inode group.
    let sys_per_slot = 8u32; // per-slot system files
    let sys_blocks_needed = |slots: u32| 7 + sys_per_slot * slots;
    let need_blocks = 3 + 1 + 1 + 1 + sys_blocks_needed(u32::from(plan.slots).max(32));
    let sys_clusters = (u64::from(need_blocks) << plan.block_bits).div_ceil(cs) as u32;
    let sys_start = gbm.alloc_first_fit(sys_clusters)?;
    let sys_group_blkno = u64::from(sys_start) << c2b;
    let sys_group_bits = sys_clusters * bpc;
    let mut sys_map = vec![0u8; bsu - 64];
    set_bit(&mut sys_map, 0);
    let mut sys_next_bit = 1u32;
    let mut alloc_inode = |sys_map: &mut Vec<u8>| -> Result<(u64, u16)> {
        if sys_next_bit >= sys_group_bits {
            return Err(Error::Invalid(
                "Could not allocate 1 bits from system inode group alloc group".into(),
            ));
        }
        let bit = sys_next_bit;
        set_bit(sys_map, bit as usize);
        sys_next_bit += 1;
        Ok((sys_group_blkno + u64::from(bit), bit as u16))
    };
    progress("done\n");

    progress("Initializing superblock: ");
    let mut root = Rec::new(0, mode::S_IFDIR | 0o755);
    if !inline {
        let c = gbm.alloc_first_fit(1)?;
        root.extents.push((c, 1));
    }
    (root.blkno, root.suballoc_bit) = alloc_inode(&mut sys_map)?;
    let mut root_dir = DirBuild::default();
    root_dir
        .entries
        .push((root.blkno, file_type::DIR, b".".to_vec()));
    root_dir
        .entries
        .push((root.blkno, file_type::DIR, b"..".to_vec()));
    root.links = 2;

    let each = dir::rec_len(40) as u64;
    let sysdir_bytes = each * u64::from(sys_blocks_needed(u32::from(plan.slots)));
    let mut sysdir = Rec::new(0, mode::S_IFDIR | 0o755);
    let sysdir_inline = inline && sysdir_bytes <= max_inline;
    if !sysdir_inline {
        let per_block = u64::from(bs) / each;
        let blocks = u64::from(sys_blocks_needed(u32::from(plan.slots))).div_ceil(per_block);
        let clusters = (blocks << plan.block_bits).div_ceil(cs) as u32;
        let c = gbm.alloc_first_fit(clusters)?;
        sysdir.extents.push((c, clusters));
    }
    (sysdir.blkno, sysdir.suballoc_bit) = alloc_inode(&mut sys_map)?;
    let mut sys_dir = DirBuild::default();
    sys_dir
        .entries
        .push((sysdir.blkno, file_type::DIR, b".".to_vec()));
    sys_dir
        .entries
        .push((sysdir.blkno, file_type::DIR, b"..".to_vec()));
    sysdir.links = 2;

    // System files, in the order of the system file table.
    let kinds: [(u32, u16); 15] = [
        (0, mode::S_IFREG | 0o644),
        (flags::BITMAP | flags::CHAIN, mode::S_IFREG | 0o644),
        (0, mode::S_IFREG | 0o644),
        (flags::HEARTBEAT, mode::S_IFREG | 0o644),
        (flags::BITMAP | flags::CHAIN, mode::S_IFREG | 0o644),
        (flags::QUOTA, mode::S_IFREG | 0o644),
        (flags::QUOTA, mode::S_IFREG | 0o644),
        (0, mode::S_IFDIR | 0o755),
        (flags::BITMAP | flags::CHAIN, mode::S_IFREG | 0o644),
        (flags::BITMAP | flags::CHAIN, mode::S_IFREG | 0o644),
        (flags::JOURNAL, mode::S_IFREG | 0o644),
        (flags::BITMAP | flags::LOCAL_ALLOC, mode::S_IFREG | 0o644),
        (flags::DEALLOC, mode::S_IFREG | 0o644),
        (flags::QUOTA, mode::S_IFREG | 0o644),
        (flags::QUOTA, mode::S_IFREG | 0o644),
    ];
    let skip = |i: usize| match i {
        5 | 13 => !quota_usr,
        6 | 14 => !quota_grp,
        _ => false,
    };
    let mut recs: Vec<Vec<Rec>> = Vec::new();
    for (i, (name, global)) in crate::SYSTEM_FILES.iter().enumerate() {
        let n = if *global { 1 } else { usize::from(plan.slots) };
        let mut v = Vec::new();
        for slot in 0..n {
            let mut r = Rec::new(kinds[i].0, kinds[i].1);
            if !skip(i) {
                (r.blkno, r.suballoc_bit) = alloc_inode(&mut sys_map)?;
                let fname = if *global {
                    (*name).to_string()
                } else {
                    format!("{name}:{slot:04}")
                };
                let ft = if r.mode & mode::S_IFMT == mode::S_IFDIR {
                    file_type::DIR
                } else {
                    file_type::REG_FILE
                };
                if ft == file_type::DIR {
                    sysdir.links += 1;
                }
                sys_dir.entries.push((r.blkno, ft, fname.into_bytes()));
            }
            v.push(r);
        }
        recs.push(v);
    }
    const GIA: usize = 1;
    const SLOTMAP: usize = 2;
    const HB: usize = 3;
    const GBM: usize = 4;
    const QU: usize = 5;
    const QG: usize = 6;
    const ORPHAN: usize = 7;
    const EXTALLOC: usize = 8;
    const INOALLOC: usize = 9;
    const JOURNAL: usize = 10;
    const LQU: usize = 13;
    const LQG: usize = 14;

    // Heartbeat.
    let hb_bytes = super::heartbeat::HEARTBEAT_BLOCKS << plan.block_bits;
    let hb_clusters = hb_bytes.div_ceil(cs) as u32;
    let c = gbm.alloc_first_fit(hb_clusters)?;
    recs[HB][0].extents.push((c, hb_clusters));
    recs[HB][0].size = hb_bytes;

    // Orphan directories.
    let mut orphan_dirs = Vec::new();
    for slot in 0..usize::from(plan.slots) {
        let r = &mut recs[ORPHAN][slot];
        if !inline {
            let c = gbm.alloc_first_fit(1)?;
            r.extents.push((c, 1));
        }
        r.links = 2;
        let mut d = DirBuild::default();
        d.entries.push((r.blkno, file_type::DIR, b".".to_vec()));
        d.entries
            .push((sysdir.blkno, file_type::DIR, b"..".to_vec()));
        orphan_dirs.push(d);
    }
    progress("done\n");

    progress("Writing system files: ");
    // Directories' data.
    let mut blocks: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut zero_ranges: Vec<(u64, u64)> = Vec::new();

    let build_dir = |rec: &mut Rec,
                     d: &DirBuild,
                     parent_for_trailer: u64,
                     blocks: &mut BTreeMap<u64, Vec<u8>>|
     -> Result<Option<Vec<u8>>> {
        if rec.extents.is_empty() {
            // Inline.
            let ents: Vec<(u64, u8, &[u8])> = d
                .entries
                .iter()
                .map(|(i, t, n)| (*i, *t, n.as_slice()))
                .collect();
            let data = dir::build_entries(max_inline as usize, &ents)
                .ok_or_else(|| Error::Invalid("Inline a dir which shouldn't be inline.".into()))?;
            rec.size = max_inline;
            return Ok(Some(data));
        }
        let data_len = if trailers {
            bsu - DIR_TRAILER_SIZE
        } else {
            bsu
        };
        let (start, clusters) = rec.extents[0];
        let first_blk = u64::from(start) << c2b;
        // Pack entries block by block.
        let mut per_block: Vec<Vec<(u64, u8, &[u8])>> = vec![Vec::new()];
        let mut used = 0usize;
        for (i, t, n) in &d.entries {
            let need = dir::rec_len(n.len());
            if used + need > data_len {
                per_block.push(Vec::new());
                used = 0;
            }
            per_block.last_mut().unwrap().push((*i, *t, n.as_slice()));
            used += need;
        }
        if per_block.len() as u64 > u64::from(clusters) << c2b {
            return Err(Error::Invalid(
                "system directory overflows its allocation".into(),
            ));
        }
        for (bi, ents) in per_block.iter().enumerate() {
            let blkno = first_blk + bi as u64;
            let mut buf = vec![0u8; bsu];
            let data = dir::build_entries(data_len, ents)
                .ok_or_else(|| Error::Invalid("directory block overflow".into()))?;
            buf[..data_len].copy_from_slice(&data);
            if trailers {
                DirTrailer {
                    blkno,
                    parent_dinode: parent_for_trailer,
                    ..Default::default()
                }
                .encode(&mut buf);
            }
            blocks.insert(blkno, buf);
        }
        rec.size = (per_block.len() as u64) << plan.block_bits;
        Ok(None)
    };

    // Write zeros for the rest of directory clusters (write_metadata zero-fills).
    for r in std::iter::once(&root)
        .chain(std::iter::once(&sysdir))
        .chain(recs[ORPHAN].iter())
    {
        for &(s, n) in &r.extents {
            zero_ranges.push((u64::from(s) * cs, u64::from(n) * cs));
        }
    }
    zero_ranges.push((
        u64::from(recs[HB][0].extents[0].0) * cs,
        u64::from(hb_clusters) * cs,
    ));

    let root_blkno = root.blkno;
    let sysdir_blkno = sysdir.blkno;
    let mut root_inline = build_dir(&mut root, &root_dir, root_blkno, &mut blocks)?;
    let sys_inline = build_dir(&mut sysdir, &sys_dir, sysdir_blkno, &mut blocks)?;
    let mut orphan_inline = Vec::new();
    for slot in 0..usize::from(plan.slots) {
        let blkno = recs[ORPHAN][slot].blkno;
        orphan_inline.push(build_dir(
            &mut recs[ORPHAN][slot],
            &orphan_dirs[slot],
            blkno,
            &mut blocks,
        )?);
    }
    progress("done\n");

    progress("Writing superblock: ");
    let uuid = plan.uuid.unwrap_or(entropy.uuid);
    let mut incompat_bits = plan.features.incompat;
    if plan.mount == MountType::Local {
        incompat_bits |= incompat::LOCAL_MOUNT;
    }
    let mut ci = ClusterInfo::default();
    if let Some((stack, name)) = &plan.cluster {
        incompat_bits |= incompat::EXTENDED_SLOT_MAP;
        if incompat_bits & incompat::CLUSTERINFO == 0 {
            incompat_bits |= if stack == "o2cb" {
                incompat::CLUSTERINFO
            } else {
                incompat::USERSPACE_STACK
            };
        }
        let sb = stack.as_bytes();
        ci.stack[..sb.len().min(4)].copy_from_slice(&sb[..sb.len().min(4)]);
        let nb = name.as_bytes();
        ci.cluster[..nb.len().min(16)].copy_from_slice(&nb[..nb.len().min(16)]);
    }
    let mut sb = SuperBlock {
        major_rev_level: superblock::MAJOR_REV_LEVEL,
        minor_rev_level: superblock::MINOR_REV_LEVEL,
        max_mnt_count: 20,
        lastcheck: now,
        feature_compat: plan.features.compat & !compat::BACKUP_SB,
        feature_incompat: incompat_bits,
        feature_ro_compat: plan.features.ro_compat,
        root_blkno: root.blkno,
        system_dir_blkno: sysdir.blkno,
        blocksize_bits: plan.block_bits,
        clustersize_bits: plan.cluster_bits,
        max_slots: plan.slots,
        first_cluster_group: first_group_blkno,
        cluster_info: ci,
        uuid,
        ..Default::default()
    };
    let lb = plan.label.as_bytes();
    sb.label[..lb.len().min(63)].copy_from_slice(&lb[..lb.len().min(63)]);
    if incompat_bits & incompat::XATTR != 0 {
        sb.xattr_inline_size = 256;
    }
    if incompat_bits & (incompat::XATTR | incompat::INDEXED_DIRS) != 0 {
        sb.uuid_hash = superblock::uuid_hash(&uuid);
    }
    if incompat_bits & incompat::INDEXED_DIRS != 0 {
        sb.dx_seed = entropy.dx_seed;
    }
    progress("done\n");

    // ---- What libocfs2 does after the first pass ----
    let mut backups = Vec::new();
    if plan.backup_super {
        backups = superblock::backup_blocks(bs, plan.blocks);
        for &b in &backups {
            gbm.set_cluster((b >> c2b) as u32);
            zero_ranges.push(((b >> c2b) * cs, cs));
        }
        sb.feature_compat |= compat::BACKUP_SB;
    }

    // Journals.
    let journal_clusters = (plan.journal_bytes >> plan.cluster_bits) as u32;
    for slot in 0..usize::from(plan.slots) {
        let mut left = journal_clusters;
        while left > 0 {
            let (s, n) = gbm.alloc_range(1, left)?;
            push_extent(&mut recs[JOURNAL][slot].extents, s, n);
            left -= n;
        }
        recs[JOURNAL][slot].size = u64::from(journal_clusters) * cs;
    }

    // Extent allocators: groups of cpg clusters.
    let cpg = clusters_per_group(bs, plan.cluster_bits);
    let bitmap_size = if discontig {
        MAX_BG_BITMAP_SIZE
    } else {
        bsu - 64
    };
    let mut ext_allocs = vec![SubAlloc::default(); usize::from(plan.slots)];
    for ext_alloc in ext_allocs.iter_mut() {
        for _ in 0..plan.extent_alloc_clusters / cpg {
            let (s, _) = gbm.alloc_range(cpg, cpg)?;
            ext_alloc
                .groups
                .push((u64::from(s) << c2b, (cpg * bpc) as u16, 1));
        }
    }

    // Slot map: one or more clusters covering the map.
    let extended = sb.feature_incompat & incompat::EXTENDED_SLOT_MAP != 0;
    let sm_bytes = crate::slot_map::SlotMap::byte_len(plan.slots, extended) as u64;
    let sm_clusters = sm_bytes.div_ceil(cs).max(1) as u32;
    {
        let mut left = sm_clusters;
        while left > 0 {
            let (s, n) = gbm.alloc_range(1, left)?;
            push_extent(&mut recs[SLOTMAP][0].extents, s, n);
            left -= n;
        }
        recs[SLOTMAP][0].size = u64::from(sm_clusters) * cs;
    }

    // Quota files: global header + root block, then each slot's local file
    // (header + one chunk), per type; then the records for id 0.
    let mut quota_data: Vec<(usize, usize, Vec<u8>)> = Vec::new(); // (rec index, slot, data)
    let blocks_per_cluster = u64::from(bpc);
    let grow_file = |gbm: &mut ClusterBitmap, r: &mut Rec, new_blocks: u64| -> Result<()> {
        let have = u64::from(r.clusters()) * blocks_per_cluster;
        if new_blocks > have {
            let mut left = (new_blocks - have).div_ceil(blocks_per_cluster) as u32;
            while left > 0 {
                let (s, n) = gbm.alloc_range(1, left)?;
                push_extent(&mut r.extents, s, n);
                left -= n;
            }
        }
        r.size = new_blocks << plan.block_bits;
        Ok(())
    };
    let quota_types: Vec<(usize, usize, u32, u32)> =
        [(quota_usr, QU, LQU, 0usize), (quota_grp, QG, LQG, 1)]
            .iter()
            .filter(|q| q.0)
            .map(|q| {
                let (gm, lm) = if q.3 == 0 {
                    (quota::GLOBAL_USR_MAGIC, quota::LOCAL_USR_MAGIC)
                } else {
                    (quota::GLOBAL_GRP_MAGIC, quota::LOCAL_GRP_MAGIC)
                };
                (q.1, q.2, gm, lm)
            })
            .collect();
    for &(g, l, _, _) in &quota_types {
        grow_file(&mut gbm, &mut recs[g][0], 2)?;
        for slot in 0..usize::from(plan.slots) {
            grow_file(&mut gbm, &mut recs[l][slot], 2)?;
        }
    }
    // Root's usage: one inode (the root directory), its clusters as space.
    let root_space = u64::from(root.clusters()) * cs;
    for &(g, l, gm, lm) in &quota_types {
        grow_file(&mut gbm, &mut recs[g][0], 6)?;
        let mut data = vec![0u8; 6 * bsu];
        quota::GlobalDqInfo {
            bgrace: quota::DEF_BLOCK_GRACE,
            igrace: quota::DEF_INODE_GRACE,
            syncms: quota::DEF_QUOTA_SYNC,
            blocks: 6,
            free_blk: 0,
            free_entry: 5,
        }
        .encode(gm, &mut data[..bsu]);
        for level in 1..=4u32 {
            put_le32(&mut data[level as usize * bsu..], 0, level + 1);
        }
        let db = &mut data[5 * bsu..];
        quota::DqDbHeader {
            next_free: 0,
            prev_free: 0,
            entries: 1,
        }
        .encode(db);
        quota::GlobalDqBlk {
            curinodes: 1,
            curspace: root_space,
            ..Default::default()
        }
        .encode(&mut db[quota::DQDB_HEADER_SIZE..]);
        quota_data.push((g, 0, data));
        for slot in 0..usize::from(plan.slots) {
            let mut data = vec![0u8; 2 * bsu];
            quota::LocalDqInfo {
                flags: quota::OLQF_CLEAN,
                chunks: 1,
                blocks: 2,
            }
            .encode(lm, &mut data[..bsu]);
            quota_data.push((l, slot, data));
        }
    }

    // lost+found: a new group for inode_alloc:0, then the directory.
    let (lf_group_start, _) = gbm.alloc_range(cpg, cpg)?;
    let lf_group_blkno = u64::from(lf_group_start) << c2b;
    let mut inode_allocs = vec![SubAlloc::default(); usize::from(plan.slots)];
    inode_allocs[0]
        .groups
        .push((lf_group_blkno, (cpg * bpc) as u16, 2));
    let lf_blkno = lf_group_blkno + 1;
    let mut lf = Rec::new(0, mode::S_IFDIR | 0o755);
    lf.flags = flags::VALID;
    lf.blkno = lf_blkno;
    lf.suballoc_bit = 1;
    lf.links = 2;
    let mut lf_dir = DirBuild::default();
    lf_dir
        .entries
        .push((lf_blkno, file_type::DIR, b".".to_vec()));
    lf_dir
        .entries
        .push((root.blkno, file_type::DIR, b"..".to_vec()));
    if !inline {
        let (s, n) = gbm.alloc_range(1, 1)?;
        lf.extents.push((s, n));
        zero_ranges.push((u64::from(s) * cs, u64::from(n) * cs));
    }
    let lf_inline = build_dir(&mut lf, &lf_dir, lf_blkno, &mut blocks)?;
    root_dir
        .entries
        .push((lf_blkno, file_type::DIR, b"lost+found".to_vec()));
    root.links += 1;
    if root_inline.is_some() {
        root_inline = build_dir(&mut root, &root_dir, root_blkno, &mut blocks)?;
    } else {
        build_dir(&mut root, &root_dir, root_blkno, &mut blocks)?;
    }

    // ---- Encode every inode and group ----
    let stamp_inode = |di: &Dinode| -> Vec<u8> {
        let mut b = vec![0u8; bsu];
        di.encode(&mut b);
        if ecc {
            blockcheck::stamp(&mut b, DINODE_CHECK_OFFSET);
        }
        b
    };
    let base_inode = |r: &Rec| -> Dinode {
        let mut di = Dinode::new();
        di.generation = gen;
        di.fs_generation = gen;
        di.suballoc_slot = 0xFFFF;
        di.suballoc_bit = r.suballoc_bit;
        di.blkno = r.blkno;
        di.size = r.size;
        di.mode = r.mode;
        di.links_count = r.links;
        di.flags = r.flags;
        di.atime = now;
        di.ctime = now;
        di.mtime = now;
        di.clusters = r.clusters();
        di
    };
    let extent_body = |r: &Rec| -> Body {
        let mut l = ExtentList::empty(dinode::extent_recs_per_inode(bs));
        let mut cpos = 0;
        for &(s, n) in &r.extents {
            l.recs
                .push(ExtentRec::leaf(cpos, n as u16, 0, u64::from(s) << c2b));
            cpos += n;
        }
        l.next_free_rec = l.recs.len() as u16;
        Body::Extents(l)
    };
    let dir_inode = |r: &Rec, data: &Option<Vec<u8>>| -> Dinode {
        let mut di = base_inode(r);
        match data {
            Some(d) => {
                di.dyn_features |= dinode::dyn_features::INLINE_DATA;
                di.body = Body::Inline(InlineData {
                    count: max_inline as u16,
                    data: d.clone(),
                });
            }
            None => di.body = extent_body(r),
        }
        di
    };

    let mut inodes: Vec<Dinode> = Vec::new();
    inodes.push(dir_inode(&root, &root_inline));
    inodes.push(dir_inode(&sysdir, &sys_inline));
    let chain_count = dinode::chain_recs_per_inode(bs);
    let subgroup = |blkno: u64, bits: u16, used: u16, parent: u64, chain: u16| -> GroupDesc {
        let mut map = vec![0u8; bitmap_size];
        for b in 0..used {
            set_bit(&mut map, b.into());
        }
        GroupDesc {
            size: bitmap_size as u16,
            bits,
            free_bits_count: bits - used,
            chain,
            generation: gen,
            parent_dinode: parent,
            blkno,
            bitmap: map,
            ..Default::default()
        }
    };
    let mut groups_out: Vec<GroupDesc> = Vec::new();
    for (i, v) in recs.iter().enumerate() {
        for (slot, r) in v.iter().enumerate() {
            if skip(i) {
                continue;
            }
            let mut di = base_inode(r);
            match i {
                GIA => {
                    let used = sys_next_bit;
                    di.set_bitmap_counts(used, sys_group_bits);
                    di.clusters = sys_clusters;
                    di.size = u64::from(sys_clusters) * cs;
                    di.body = Body::Chain(ChainList {
                        cpg: (sys_group_bits / bpc) as u16,
                        bpc: bpc as u16,
                        count: chain_count,
                        next_free_rec: 1,
                        recs: vec![ChainRec {
                            free: sys_group_bits - used,
                            total: sys_group_bits,
                            blkno: sys_group_blkno,
                        }],
                    });
                    let mut map = vec![0u8; bsu - 64];
                    map.copy_from_slice(&sys_map);
                    groups_out.push(GroupDesc {
                        size: (bsu - 64) as u16,
                        bits: sys_group_bits as u16,
                        free_bits_count: (sys_group_bits - used) as u16,
                        generation: gen,
                        parent_dinode: r.blkno,
                        blkno: sys_group_blkno,
                        bitmap: map,
                        ..Default::default()
                    });
                }
                GBM => {
                    di.size = plan.volume_bytes;
                    di.clusters = plan.clusters;
                    di.set_bitmap_counts(gbm.used(), plan.clusters);
                    let mut crs = vec![ChainRec::default(); gbm.chains];
                    for g in &gbm.groups {
                        let c = &mut crs[usize::from(g.chain)];
                        if c.blkno == 0 {
                            c.blkno = g.blkno;
                        }
                        c.total += g.bits;
                        c.free += g.free;
                    }
                    di.body = Body::Chain(ChainList {
                        cpg: ((bsu - 64) * 8) as u16,
                        bpc: 1,
                        count: chain_count,
                        next_free_rec: gbm.chains as u16,
                        recs: crs,
                    });
                    for g in &gbm.groups {
                        groups_out.push(GroupDesc {
                            size: (bsu - 64) as u16,
                            bits: g.bits as u16,
                            free_bits_count: g.free as u16,
                            chain: g.chain,
                            generation: gen,
                            next_group: g.next,
                            parent_dinode: r.blkno,
                            blkno: g.blkno,
                            bitmap: g.map.clone(),
                            ..Default::default()
                        });
                    }
                }
                EXTALLOC | INOALLOC => {
                    let sub = if i == EXTALLOC {
                        &ext_allocs[slot]
                    } else {
                        &inode_allocs[slot]
                    };
                    let mut cl = ChainList {
                        cpg: cpg as u16,
                        bpc: bpc as u16,
                        count: chain_count,
                        next_free_rec: 0,
                        recs: Vec::new(),
                    };
                    let (mut used, mut total) = (0u32, 0u32);
                    for (gi, &(blkno, bits, u)) in sub.groups.iter().enumerate() {
                        let chain = (gi % usize::from(chain_count)) as u16;
                        if usize::from(chain) >= cl.recs.len() {
                            cl.recs.push(ChainRec {
                                free: 0,
                                total: 0,
                                blkno: 0,
                            });
                        }
                        // New groups go to the head of their chain.
                        let prev_head = cl.recs[usize::from(chain)].blkno;
                        cl.recs[usize::from(chain)].blkno = blkno;
                        cl.recs[usize::from(chain)].total += u32::from(bits);
                        cl.recs[usize::from(chain)].free += u32::from(bits - u);
                        let mut g = subgroup(blkno, bits, u, r.blkno, chain);
                        g.next_group = prev_head;
                        groups_out.push(g);
                        used += u32::from(u);
                        total += u32::from(bits);
                        zero_ranges.push((blkno << plan.block_bits, cs * u64::from(cpg)));
                    }
                    cl.next_free_rec = cl.recs.len() as u16;
                    di.set_bitmap_counts(used, total);
                    di.clusters = cpg * sub.groups.len() as u32;
                    di.size = u64::from(di.clusters) * cs;
                    di.body = Body::Chain(cl);
                }
                ORPHAN => {
                    di = dir_inode(r, &orphan_inline[slot]);
                }
                JOURNAL => {
                    di.body = extent_body(r);
                }
                11 => {
                    di.body = Body::LocalAlloc(LocalAlloc {
                        bm_off: 0,
                        size: dinode::local_alloc_size(bs),
                        bitmap: vec![0u8; dinode::local_alloc_size(bs).into()],
                    });
                }
                12 => {
                    di.body = Body::TruncateLog(TruncateLog {
                        count: dinode::truncate_recs_per_inode(bs),
                        used: 0,
                        recs: Vec::new(),
                    });
                }
                _ => di.body = extent_body(r),
            }
            inodes.push(di);
        }
    }
    inodes.push({
        let mut di = dir_inode(&lf, &lf_inline);
        di.suballoc_slot = 0;
        di.suballoc_loc = lf_group_blkno;
        di
    });

    // Superblock.
    let mut sbi = Dinode::new();
    sbi.is_super = true;
    sbi.generation = gen;
    sbi.fs_generation = gen;
    sbi.suballoc_slot = 0xFFFF;
    sbi.suballoc_bit = 0xFFFF;
    sbi.ctime = now;
    sbi.mtime = now;
    sbi.blkno = SUPER_BLOCK_BLKNO;
    sbi.flags = flags::VALID | flags::SYSTEM | flags::SUPER_BLOCK;
    sbi.clusters = plan.clusters;

    // ---- Write ----
    progress_backups(progress, plan.backup_super, backups.len());
    zero_ranges.sort_unstable();
    for (off, len) in &zero_ranges {
        sink.write_zeros(*off, *len).map_err(io(*off))?;
    }
    progress_step(progress, "Formatting Journals: ");
    for slot in 0..usize::from(plan.slots) {
        let r = &recs[JOURNAL][slot];
        for &(s, n) in &r.extents {
            sink.write_zeros(u64::from(s) * cs, u64::from(n) * cs)
                .map_err(io(u64::from(s) * cs))?;
        }
        let mut jb = vec![0u8; bsu];
        JournalSuperblock {
            blocktype: SUPERBLOCK_V2,
            blocksize: bs,
            maxlen: (u64::from(r.clusters()) << c2b) as u32,
            first: if bs == 512 { 2 } else { 1 },
            sequence: 1,
            start: 1,
            nr_users: 1,
            uuid,
            ..Default::default()
        }
        .encode(&mut jb);
        let off = u64::from(r.extents[0].0) * cs;
        sink.write_at(off, &jb).map_err(io(off))?;
    }
    progress("done\n");
    progress_step(progress, "Growing extent allocator: ");
    progress("done\n");
    progress_step(progress, "Formatting slot map: ");
    let r = &recs[SLOTMAP][0];
    for &(s, n) in &r.extents {
        sink.write_zeros(u64::from(s) * cs, u64::from(n) * cs)
            .map_err(io(u64::from(s) * cs))?;
    }
    if !extended {
        let mut data = vec![0u8; r.size as usize];
        crate::slot_map::SlotMap {
            slots: vec![None; (r.size / 2) as usize],
            extended: false,
        }
        .encode(&mut data);
        write_file(sink, r, &data, plan)?;
    }
    progress("done\n");
    progress_step(progress, "Formatting quota files: ");
    for (idx, slot, mut data) in quota_data {
        if ecc {
            for chunk in data.chunks_mut(bsu) {
                blockcheck::stamp(chunk, quota::trailer_offset(bsu));
            }
        }
        let r = &recs[idx][slot];
        for &(s, n) in &r.extents {
            sink.write_zeros(u64::from(s) * cs, u64::from(n) * cs)
                .map_err(io(u64::from(s) * cs))?;
        }
        write_file(sink, r, &data, plan)?;
    }
    progress("done\n");
    progress_step(progress, "Writing lost+found: ");
    progress("done\n");

    for (blkno, mut buf) in blocks {
        if ecc && trailers {
            blockcheck::stamp(&mut buf, bsu - DIR_TRAILER_SIZE + DIR_TRAILER_CHECK_OFFSET);
        }
        sink.write_at(blkno << plan.block_bits, &buf)
            .map_err(io(blkno << plan.block_bits))?;
    }
    for g in &groups_out {
        let mut b = vec![0u8; bsu];
        g.encode(&mut b);
        if ecc {
            blockcheck::stamp(&mut b, GROUP_CHECK_OFFSET);
        }
        sink.write_at(g.blkno << plan.block_bits, &b)
            .map_err(io(g.blkno << plan.block_bits))?;
    }
    for di in &inodes {
        let b = stamp_inode(di);
        sink.write_at(di.blkno << plan.block_bits, &b)
            .map_err(io(di.blkno << plan.block_bits))?;
    }
    // Leading space, then the superblock and its backups.
    let mut lead = vec![2u8; 2 * bsu];
    let sig = b"this is an ocfs2 volume\0";
    put_bytes(&mut lead, 0x08, sig);
    put_bytes(&mut lead, 0x88, sig);
    put_bytes(&mut lead, 512 + 0x30, sig);
    put_bytes(&mut lead, 512 + 0x84, sig);
    sink.write_at(0, &lead).map_err(io(0))?;
    sbi.body = Body::Super(sb.clone());
    for &b in &backups {
        let mut copy = sbi.clone();
        copy.blkno = b;
        let buf = stamp_inode(&copy);
        sink.write_at(b << plan.block_bits, &buf)
            .map_err(io(b << plan.block_bits))?;
    }
    let buf = stamp_inode(&sbi);
    sink.write_at(SUPER_BLOCK_BLKNO << plan.block_bits, &buf)
        .map_err(io(SUPER_BLOCK_BLKNO << plan.block_bits))?;
    sink.flush().map_err(io(0))?;
    Ok(Report {
        backups: backups.len(),
        superblock: sb,
    })
}

fn progress_backups(progress: &mut dyn FnMut(&str), enabled: bool, n: usize) {
    if enabled {
        progress(&format!("Writing backup superblock: {n} block(s)\n"));
    }
}

fn progress_step(progress: &mut dyn FnMut(&str), s: &str) {
    progress(s);
}

fn push_extent(extents: &mut Vec<(u32, u32)>, start: u32, n: u32) {
    if let Some(last) = extents.last_mut() {
        if last.0 + last.1 == start && last.1 + n <= 0xffff {
            last.1 += n;
            return;
        }
    }
    extents.push((start, n));
}

fn write_file(sink: &mut dyn BlockSink, r: &Rec, data: &[u8], plan: &Plan) -> Result<()> {
    let cs = u64::from(plan.cluster_size);
    let mut pos = 0usize;
    for &(s, n) in &r.extents {
        if pos >= data.len() {
            break;
        }
        let len = ((u64::from(n) * cs) as usize).min(data.len() - pos);
        let off = u64::from(s) * cs;
        sink.write_at(off, &data[pos..pos + len])
            .map_err(|e| Error::Io {
                offset: off,
                source: e,
            })?;
        pos += len;
    }
    Ok(())
}
