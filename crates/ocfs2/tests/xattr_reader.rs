//! `Volume::xattrs` on hand-built attributes in every place OCFS2 keeps them:
//! the inode's inline area, an xattr block, the buckets of an xattr tree
//! (one block per bucket with 4 KiB blocks, several with smaller ones), and
//! values kept in clusters outside their entry; with and without metaecc.
//! The layouts follow the kernel's (`fs/ocfs2/xattr.c`); the kernel-written
//! volumes of `crates/tandem/tests/kernel_written.rs` are the real judge.

use ocfs2::blockcheck;
use ocfs2::codec::{put_bytes, put_le16, put_le32, put_le64, put_u8};
use ocfs2::dinode::{dyn_features, flags, mode, Body, Dinode, DINODE_CHECK_OFFSET};
use ocfs2::extent::{ExtentList, ExtentRec};
use ocfs2::mkfs::{self, Entropy, FeatureLevel, Options, Plan};
use ocfs2::xattr::{namespace, XATTR_BLOCK_SIGNATURE, XATTR_BUCKET_SIZE, XATTR_INDEXED};
use ocfs2::{BlockSource, Error, Volume};
use proptest::prelude::*;
use std::sync::OnceLock;

const MIB: u64 = 1 << 20;

/// A value as the test stores it: here, or in the clusters starting at a block.
enum Val<'a> {
    Here(&'a [u8]),
    /// (value, first block of its cluster)
    Outside(&'a [u8], u64),
}

/// Writes a header and its entries into `area`, names and values packed from
/// the end as the kernel packs them.
fn put_area(area: &mut [u8], attrs: &[(u8, &[u8], Val<'_>)]) {
    let mut free = area.len();
    put_le16(area, 0, attrs.len() as u16);
    for (i, (ns, name, val)) in attrs.iter().enumerate() {
        let name_len = name.len().div_ceil(4) * 4;
        let (value_len, local, size) = match val {
            Val::Here(v) => (v.len().div_ceil(4) * 4, 0x80, v.len() as u64),
            Val::Outside(v, _) => (48, 0, v.len() as u64),
        };
        free -= name_len + value_len;
        put_bytes(area, free, name);
        match val {
            Val::Here(v) => put_bytes(area, free + name_len, v),
            Val::Outside(_, blkno) => {
                let root = free + name_len;
                put_le32(area, root, 1);
                // One leaf record: file cluster 0, one cluster.
                ExtentList {
                    tree_depth: 0,
                    count: 1,
                    next_free_rec: 1,
                    recs: vec![ExtentRec::leaf(0, 1, 0, *blkno)],
                }
                .encode(&mut area[root + 16..root + 48]);
            }
        }
        let e = 16 + i * 16;
        put_le32(area, e, 0x1234_5678);
        put_le16(area, e + 4, free as u16);
        put_u8(area, e + 6, name.len() as u8);
        put_u8(area, e + 7, ns | local);
        put_le64(area, e + 8, size);
    }
    put_le16(area, 2, free as u16);
    put_le16(area, 4, (area.len() - free) as u16);
}

struct Image {
    bytes: Vec<u8>,
    bs: usize,
    cs: usize,
    ecc: bool,
    /// Next free block (from the middle of the volume, which mkfs left unused).
    next: u64,
    /// Byte ranges written after mkfs (for the damage test).
    written: Vec<(usize, usize)>,
}

impl Image {
    fn new(block: u32, cluster: u32, level: FeatureLevel) -> Image {
        let size = 64 * MIB;
        let opts = Options {
            block_size: Some(block),
            cluster_size: Some(cluster),
            slots: Some(2),
            journal_size: Some(4 * MIB),
            label: "xattrs".into(),
            level,
            ..Options::default()
        };
        let plan = Plan::new(&opts, size).unwrap();
        let entropy = Entropy {
            generation: 7,
            uuid: [3; 16],
            dx_seed: [1, 2, 3],
            now: 1_700_000_000,
        };
        let mut bytes = vec![0u8; size as usize];
        mkfs::format(&plan, &entropy, &mut bytes, &mut |_| {}).unwrap();
        let ecc = level == FeatureLevel::MaxFeatures;
        Image {
            bytes,
            bs: block as usize,
            cs: cluster as usize,
            ecc,
            next: 40 * MIB / u64::from(block),
            written: Vec::new(),
        }
    }

    /// `n` fresh clusters, as their first block.
    fn clusters(&mut self, n: usize) -> u64 {
        let per = (self.cs / self.bs) as u64;
        let b = self.next.div_ceil(per) * per;
        self.next = b + per * n as u64;
        b
    }

    fn write(&mut self, blkno: u64, data: &[u8], check_off: Option<usize>) {
        let at = blkno as usize * self.bs;
        self.written.push((at, data.len()));
        let dst = &mut self.bytes[at..at + data.len()];
        dst.copy_from_slice(data);
        if let (true, Some(off)) = (self.ecc, check_off) {
            blockcheck::stamp(dst, off);
        }
    }

    /// A regular file inode at a fresh block, with the given xattr features.
    fn inode(&mut self, inline: Option<&[(u8, &[u8], Val<'_>)]>, xattr_loc: u64) -> u64 {
        let blkno = self.clusters(1);
        let mut di = Dinode::new();
        di.blkno = blkno;
        di.mode = mode::S_IFREG | 0o644;
        di.links_count = 1;
        di.flags = flags::VALID;
        di.fs_generation = 7;
        di.dyn_features = dyn_features::HAS_XATTR;
        di.xattr_loc = xattr_loc;
        let inline_size = if inline.is_some() { 256 } else { 0 };
        di.xattr_inline_size = inline_size as u16;
        if inline.is_some() {
            di.dyn_features |= dyn_features::INLINE_XATTR;
        }
        di.body = Body::Extents(ExtentList::empty(ExtentList::capacity(
            self.bs - 0xC0 - inline_size,
        )));
        let mut b = vec![0u8; self.bs];
        di.encode(&mut b);
        if let Some(attrs) = inline {
            let at = self.bs - inline_size;
            put_area(&mut b[at..], attrs);
        }
        self.write(blkno, &b, Some(DINODE_CHECK_OFFSET));
        blkno
    }

    fn xattr_block(&mut self, fill: impl FnOnce(&mut [u8]), indexed: bool) -> u64 {
        let blkno = self.clusters(1);
        let mut b = vec![0u8; self.bs];
        put_bytes(&mut b, 0, XATTR_BLOCK_SIGNATURE);
        put_le64(&mut b, 0x10, blkno);
        put_le16(&mut b, 0x20, if indexed { XATTR_INDEXED } else { 0 });
        fill(&mut b[0x30..]);
        self.write(blkno, &b, Some(0x18));
        blkno
    }

    /// A value's cluster holding `v`.
    fn value(&mut self, v: &[u8]) -> u64 {
        let blkno = self.clusters(1);
        self.write(blkno, v, None);
        blkno
    }

    fn bucket(&mut self, at: u64, attrs: &[(u8, &[u8], Val<'_>)], num_buckets: u16) {
        let mut b = vec![0u8; XATTR_BUCKET_SIZE];
        put_area(&mut b, attrs);
        put_le16(&mut b, 6, num_buckets);
        if self.ecc {
            blockcheck::stamp(&mut b, 8);
        }
        self.write(at, &b, None);
    }
}

/// Attributes as `Volume::xattrs` returns them.
type Attrs = Vec<(String, Vec<u8>)>;

fn owned(v: &[(&str, &[u8])]) -> Attrs {
    v.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect()
}

/// What `build` made: the image, the inodes with attributes and their
/// expected attributes, and the first block of the last extent of buckets.
struct Built {
    img: Image,
    inodes: Vec<(u64, Attrs)>,
    e2: u64,
}

/// Every place, on one geometry.
fn every_place(block: u32, cluster: u32, level: FeatureLevel) {
    let Built { img, inodes, e2 } = build(block, cluster, level);
    let vol = Volume::open(&img.bytes).unwrap();
    for (ino, want) in &inodes {
        assert_eq!(&vol.xattrs(&vol.read_inode(*ino).unwrap()).unwrap(), want);
    }
    let tree_ino = inodes[1].0;

    // Damage is an error naming the block, never a panic.
    let mut bad = img.bytes.clone();
    let at = e2 as usize * img.bs;
    put_le16(&mut bad[at..], 6, 60000);
    let vol = Volume::open(&bad).unwrap();
    let e = vol.xattrs(&vol.read_inode(tree_ino).unwrap()).unwrap_err();
    match e {
        Error::Decode(d) => {
            assert_eq!(d.block, e2, "{d}");
            // With metaecc the changed bucket fails its check first.
            assert!(d.field == "xh_num_buckets" || d.field == "check", "{d}");
        }
        e => panic!("{e}"),
    }
}

fn build(block: u32, cluster: u32, level: FeatureLevel) -> Built {
    let mut img = Image::new(block, cluster, level);
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 1) as u8).collect();
    let acl: &[u8] = &[
        1, 0, 6, 0, 0xFF, 0xFF, 0xFF, 0xFF, 4, 0, 4, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    let mut acl_vfs = vec![2, 0, 0, 0];
    acl_vfs.extend_from_slice(acl);

    // Inline area + a plain xattr block, both with a value outside.
    let big_at = img.value(&big);
    let big2_at = img.value(&big[..1000]);
    let xb = img.xattr_block(
        |a| {
            put_area(
                a,
                &[
                    (namespace::TRUSTED, b"t", Val::Here(b"trusted value")),
                    (namespace::POSIX_ACL_ACCESS, b"", Val::Here(acl)),
                    (
                        namespace::USER,
                        b"big2",
                        Val::Outside(&big[..1000], big2_at),
                    ),
                    // No kernel handler: left out, as the kernel does.
                    (7, b"odd", Val::Here(b"x")),
                ],
            )
        },
        false,
    );
    let ino = img.inode(
        Some(&[
            (namespace::USER, b"small", Val::Here(b"v1")),
            (namespace::SECURITY, b"label", Val::Here(b"")),
            (namespace::USER, b"big", Val::Outside(&big, big_at)),
        ]),
        xb,
    );

    // An xattr tree: two extents of buckets; the first with two buckets in
    // use when its cluster holds two.
    let per_cluster = img.cs / XATTR_BUCKET_SIZE;
    let bucket_blocks = (XATTR_BUCKET_SIZE / img.bs).max(1) as u64;
    let e1 = img.clusters(if per_cluster >= 2 { 1 } else { 2 });
    let e2 = img.clusters(1);
    let tree_value = img.value(&big[..200]);
    img.bucket(
        e1,
        &[
            (namespace::USER, b"b-one", Val::Here(b"first")),
            (namespace::POSIX_ACL_DEFAULT, b"", Val::Here(acl)),
        ],
        2,
    );
    img.bucket(
        e1 + bucket_blocks,
        &[(
            namespace::USER,
            b"b-two",
            Val::Outside(&big[..200], tree_value),
        )],
        0,
    );
    img.bucket(
        e2,
        &[(namespace::TRUSTED, b"b-three", Val::Here(&[0; 80]))],
        1,
    );
    let first_extent_clusters = if per_cluster >= 2 { 1 } else { 2 };
    let tree = img.xattr_block(
        |a| {
            put_le32(a, 0, 3);
            ExtentList {
                tree_depth: 0,
                count: ExtentList::capacity(a.len() - 16),
                next_free_rec: 2,
                recs: vec![
                    ExtentRec::leaf(0, first_extent_clusters, 0, e1),
                    ExtentRec::leaf(0x8000_0000, 1, 0, e2),
                ],
            }
            .encode(&mut a[16..]);
        },
        true,
    );
    let tree_ino = img.inode(None, tree);
    let none_ino = img.inode(None, 0);

    let none_want = Vec::new();
    Built {
        inodes: vec![
            (
                ino,
                owned(&[
                    ("user.small", b"v1"),
                    ("security.label", b""),
                    ("user.big", &big),
                    ("trusted.t", b"trusted value"),
                    ("system.posix_acl_access", &acl_vfs),
                    ("user.big2", &big[..1000]),
                ]),
            ),
            (
                tree_ino,
                owned(&[
                    ("user.b-one", b"first"),
                    ("system.posix_acl_default", &acl_vfs),
                    ("user.b-two", &big[..200]),
                    ("trusted.b-three", &[0; 80]),
                ]),
            ),
            (none_ino, none_want),
        ],
        img,
        e2,
    }
}

/// The image with a few bytes changed, without copying it.
struct Patched<'a> {
    base: &'a [u8],
    edits: &'a [(usize, u8)],
}

impl BlockSource for Patched<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.base.read_at(offset, buf)?;
        let start = offset as usize;
        for &(at, v) in self.edits {
            if (start..start + buf.len()).contains(&at) {
                buf[at - start] = v;
            }
        }
        Ok(())
    }
}

fn damage_case(built: &Built, edits: &[(usize, usize, u8)]) {
    let edits: Vec<(usize, u8)> = edits
        .iter()
        .map(|&(which, off, v)| {
            let (at, len) = built.img.written[which % built.img.written.len()];
            (at + off % len, v)
        })
        .collect();
    let vol = Volume::open(Patched {
        base: &built.img.bytes,
        edits: &edits,
    })
    .unwrap();
    for (ino, _) in &built.inodes {
        // The inode itself may no longer decode; that is not what is tested.
        if let Ok(inode) = vol.read_inode(*ino) {
            if let Err(e) = vol.xattrs(&inode) {
                // Every failure says where.
                let s = e.to_string();
                assert!(s.contains("block ") || s.contains("byte "), "{s}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Changed bytes anywhere in what holds attributes (inodes, xattr blocks,
    /// buckets, value clusters) give attributes or an error, never a panic.
    #[test]
    fn damaged_attributes_never_panic(
        ecc in any::<bool>(),
        edits in proptest::collection::vec((0usize..64, 0usize..65536, any::<u8>()), 1..8),
    ) {
        static PLAIN: OnceLock<Built> = OnceLock::new();
        static ECC: OnceLock<Built> = OnceLock::new();
        let built = if ecc {
            ECC.get_or_init(|| build(1024, 8192, FeatureLevel::MaxFeatures))
        } else {
            PLAIN.get_or_init(|| build(512, 4096, FeatureLevel::Default))
        };
        damage_case(built, &edits);
    }
}

#[test]
fn every_place_4k_blocks() {
    every_place(4096, 4096, FeatureLevel::Default);
}

#[test]
fn every_place_4k_blocks_64k_clusters_metaecc() {
    every_place(4096, 65536, FeatureLevel::MaxFeatures);
}

#[test]
fn every_place_1k_blocks_multi_block_buckets_metaecc() {
    every_place(1024, 8192, FeatureLevel::MaxFeatures);
}

#[test]
fn every_place_512_blocks() {
    every_place(512, 4096, FeatureLevel::Default);
}
