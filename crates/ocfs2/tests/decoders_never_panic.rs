//! Every decoder, fed random or mutated blocks, returns a value or an error
//! naming the block and a field; none panics.

use ocfs2::codec::Decoder;
use ocfs2::{
    alloc, dinode, dir, extent, heartbeat, jbd2, quota, refcount, slot_map, xattr, DecodeError,
};
use proptest::prelude::*;

const BLOCK: u64 = 4242;

fn check<T>(r: Result<T, DecodeError>) {
    if let Err(e) = r {
        assert_eq!(e.block, BLOCK);
        assert!(!e.field.is_empty() && !e.structure.is_empty());
        assert!(e.to_string().contains("block 4242"));
    }
}

fn decode_all(buf: &[u8]) {
    check(dinode::Dinode::decode(buf, BLOCK));
    check(extent::ExtentBlock::decode(buf, BLOCK));
    check(alloc::GroupDesc::decode(buf, BLOCK));
    check(dir::decode_entries(buf, BLOCK));
    check(dir::DirTrailer::decode(buf, BLOCK));
    check(dir::DxRoot::decode(buf, BLOCK));
    check(dir::DxLeaf::decode(buf, BLOCK));
    check(slot_map::SlotMap::decode(buf, BLOCK, 255, true));
    check(slot_map::SlotMap::decode(buf, BLOCK, 255, false));
    check(heartbeat::HeartbeatBlock::decode(buf, BLOCK));
    check(xattr::XattrBlock::decode(buf, BLOCK));
    // An xattr area (inline, block or bucket) starting at the first byte, and
    // a value root.
    let d = Decoder::new(buf, BLOCK, "xattr_ibody");
    check(xattr::decode_area(&d));
    check(xattr::XattrValueRoot::decode(&d));
    check(refcount::RefcountBlock::decode(buf, BLOCK));
    check(quota::DiskDqHeader::decode(buf, BLOCK));
    check(quota::GlobalDqInfo::decode(buf, BLOCK));
    check(quota::LocalDqInfo::decode(buf, BLOCK));
    check(quota::GlobalDqBlk::decode(buf, BLOCK));
    check(quota::DqDbHeader::decode(buf, BLOCK));
    check(jbd2::JournalSuperblock::decode(buf, BLOCK));
    check(jbd2::Descriptor::decode(buf, BLOCK, false));
    check(jbd2::Descriptor::decode(buf, BLOCK, true));
    check(jbd2::Commit::decode(buf, BLOCK));
    check(jbd2::Revoke::decode(buf, BLOCK, true));
    check(jbd2::Revoke::decode(buf, BLOCK, false));
}

/// Valid-looking starting points: each signature at offset 0 (and the journal
/// magic), so mutations exercise the field checks past the signature test.
fn seeds(len: usize) -> Vec<Vec<u8>> {
    let sigs: [&[u8]; 9] = [
        b"INODE01\0",
        b"OCFSV2\0\0",
        b"EXBLK01\0",
        b"GROUP01\0",
        b"DXDIR01\0",
        b"DXLEAF1\0",
        b"XATTR01\0",
        b"REFCNT1\0",
        &[0xC0, 0x3B, 0x39, 0x98, 0, 0, 0, 4],
    ];
    sigs.iter()
        .map(|s| {
            let mut b = vec![0u8; len];
            b[..s.len()].copy_from_slice(s);
            b
        })
        .collect()
}

/// A plausible xattr area of `len` bytes: three entries (a local value, a
/// value root, an empty ACL name) packed from the end, as the kernel packs them.
fn xattr_area(len: usize) -> Vec<u8> {
    let mut a = vec![0u8; len];
    // (name, type, value size, stored bytes after the name)
    let entries: [(&[u8], u8, u64, usize); 3] = [
        (b"small", 0x81, 2, 4),
        (b"big", 0x01, 3000, 48),
        (b"", 0x82, 16, 16),
    ];
    a[0] = 3;
    let mut free = len;
    for (i, (name, t, size, stored)) in entries.iter().enumerate() {
        free -= name.len().div_ceil(4) * 4 + stored;
        a[free..free + name.len()].copy_from_slice(name);
        let e = 16 + i * 16;
        a[e + 4..e + 6].copy_from_slice(&(free as u16).to_le_bytes());
        a[e + 6] = name.len() as u8;
        a[e + 7] = *t;
        a[e + 8..e + 16].copy_from_slice(&size.to_le_bytes());
    }
    // The value root's extent list: one record of room, one used.
    let root = len - 4 - 48 - 16 - 16;
    a[root + 16 + 2] = 1;
    a[root + 16 + 4] = 1;
    a
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes(buf in proptest::collection::vec(any::<u8>(), 0..4200)) {
        decode_all(&buf);
    }

    #[test]
    fn mutated_blocks(
        seed in 0usize..9,
        big in any::<bool>(),
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..64),
        cut in 0usize..4096,
    ) {
        let len = if big { 4096 } else { 512 };
        let mut b = seeds(len).swap_remove(seed);
        for (off, v) in edits {
            let i = off % len;
            b[i] = v;
        }
        decode_all(&b);
        decode_all(&b[..cut.min(len)]);
    }

    #[test]
    fn mutated_xattr_areas(
        big in any::<bool>(),
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 0..16),
        cut in 0usize..4096,
    ) {
        let len = if big { 4096 } else { 256 };
        let mut a = xattr_area(len);
        for (off, v) in edits {
            a[off % len] = v;
        }
        for buf in [&a[..], &a[..cut.min(len)]] {
            let d = Decoder::new(buf, BLOCK, "xattr_bucket");
            check(xattr::decode_area(&d));
        }
    }
}

#[test]
fn the_xattr_seed_decodes() {
    for len in [256, 4096] {
        let a = xattr_area(len);
        let items = xattr::decode_area(&Decoder::new(&a, BLOCK, "xattr_bucket")).unwrap();
        assert_eq!(items.len(), 3);
    }
}
