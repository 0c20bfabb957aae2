//! `Volume`'s walks over hand-built inodes. Extent trees: a sound two-level
//! tree reads its leaves in order; a damaged one (an extent block reached
//! twice, which would make the walk exponential, or a depth beyond any real
//! tree) is refused with the block and field named, never a hang or a panic.
//! Symbolic links: a size of PATH_MAX or more is refused before anything is
//! allocated.

use ocfs2::dinode::{flags, mode, Body, Dinode};
use ocfs2::extent::{ExtentBlock, ExtentList, ExtentRec};
use ocfs2::mkfs::{self, Entropy, FeatureLevel, Options, Plan};
use ocfs2::Volume;

const BLOCK: usize = 4096;
const SIZE: u64 = 64 << 20;
/// Blocks from here on are unused by mkfs on this geometry.
const FREE: u64 = (40 << 20) / BLOCK as u64;

fn formatted() -> Vec<u8> {
    let opts = Options {
        block_size: Some(BLOCK as u32),
        cluster_size: Some(4096),
        slots: Some(2),
        journal_size: Some(4 << 20),
        label: "trees".into(),
        level: FeatureLevel::Default,
        ..Options::default()
    };
    let plan = Plan::new(&opts, SIZE).unwrap();
    let entropy = Entropy {
        generation: 7,
        uuid: [3; 16],
        dx_seed: [1, 2, 3],
        now: 1_700_000_000,
    };
    let mut bytes = vec![0u8; SIZE as usize];
    mkfs::format(&plan, &entropy, &mut bytes, &mut |_| {}).unwrap();
    bytes
}

fn put(image: &mut [u8], blkno: u64, block: &[u8]) {
    let at = blkno as usize * BLOCK;
    image[at..at + BLOCK].copy_from_slice(block);
}

/// A regular file's inode at `blkno` whose extent list is `list`.
fn file_inode(image: &mut [u8], blkno: u64, list: ExtentList) -> Dinode {
    inode(image, blkno, mode::S_IFREG | 0o644, 8 * BLOCK as u64, list)
}

fn inode(image: &mut [u8], blkno: u64, mode: u16, size: u64, list: ExtentList) -> Dinode {
    let mut di = Dinode::new();
    di.blkno = blkno;
    di.mode = mode;
    di.links_count = 1;
    di.flags = flags::VALID;
    di.fs_generation = 7;
    di.size = size;
    di.body = Body::Extents(list);
    let mut b = vec![0u8; BLOCK];
    di.encode(&mut b);
    put(image, blkno, &b);
    di
}

/// An extent block at `blkno` holding leaf records `leaves`.
fn leaf_block(image: &mut [u8], blkno: u64, leaves: Vec<ExtentRec>) {
    let block = ExtentBlock {
        check: Default::default(),
        suballoc_slot: 0,
        suballoc_bit: 0,
        fs_generation: 7,
        blkno,
        suballoc_loc: 0,
        next_leaf_blk: 0,
        list: ExtentList {
            tree_depth: 0,
            count: ExtentList::capacity(BLOCK - 0x30),
            next_free_rec: leaves.len() as u16,
            recs: leaves,
        },
    };
    let mut b = vec![0u8; BLOCK];
    block.encode(&mut b);
    put(image, blkno, &b);
}

/// An interior record: file clusters from `cpos`, `clusters` of them, under
/// the extent block `blkno`.
fn branch(cpos: u32, clusters: u32, blkno: u64) -> ExtentRec {
    ExtentRec {
        cpos,
        clusters_raw: clusters,
        blkno,
    }
}

fn root(depth: u16, recs: Vec<ExtentRec>) -> ExtentList {
    ExtentList {
        tree_depth: depth,
        count: 243,
        next_free_rec: recs.len() as u16,
        recs,
    }
}

#[test]
fn a_two_level_tree_reads_its_leaves_in_order() {
    let mut image = formatted();
    let (eb1, eb2) = (FREE, FREE + 1);
    leaf_block(&mut image, eb1, vec![ExtentRec::leaf(0, 4, 0, FREE + 10)]);
    leaf_block(&mut image, eb2, vec![ExtentRec::leaf(4, 4, 0, FREE + 20)]);
    let list = root(1, vec![branch(0, 4, eb1), branch(4, 4, eb2)]);
    let inode = file_inode(&mut image, FREE + 2, list);
    let vol = Volume::open(image.as_slice()).unwrap();
    let leaves = vol.extents(&inode).unwrap();
    let starts: Vec<(u32, u64)> = leaves.iter().map(|r| (r.cpos, r.blkno)).collect();
    assert_eq!(starts, [(0, FREE + 10), (4, FREE + 20)]);
}

#[test]
fn an_extent_block_reached_twice_is_refused() {
    let mut image = formatted();
    let eb = FREE;
    leaf_block(&mut image, eb, vec![ExtentRec::leaf(0, 4, 0, FREE + 10)]);
    let list = root(1, vec![branch(0, 4, eb), branch(4, 4, eb)]);
    let inode = file_inode(&mut image, FREE + 2, list);
    let vol = Volume::open(image.as_slice()).unwrap();
    let err = vol.extents(&inode).unwrap_err().to_string();
    assert!(err.contains(&format!("block {eb}")), "{err}");
    assert!(err.contains("e_blkno") && err.contains("twice"), "{err}");
}

#[test]
fn a_tree_deeper_than_any_real_one_is_refused() {
    let mut image = formatted();
    let list = root(9, vec![branch(0, 4, FREE)]);
    let inode = file_inode(&mut image, FREE + 2, list);
    let vol = Volume::open(image.as_slice()).unwrap();
    let err = vol.extents(&inode).unwrap_err().to_string();
    assert!(err.contains(&format!("block {}", FREE + 2)), "{err}");
    assert!(err.contains("l_tree_depth"), "{err}");
}

#[test]
fn a_symlink_target_of_path_max_or_more_is_refused() {
    let mut image = formatted();
    let target = b"/srv/www/index.html";
    put(&mut image, FREE + 10, &{
        let mut b = vec![0u8; BLOCK];
        b[..target.len()].copy_from_slice(target);
        b
    });
    let extents = root(0, vec![ExtentRec::leaf(0, 1, 0, FREE + 10)]);
    let link = mode::S_IFLNK | 0o777;
    let sound = inode(
        &mut image,
        FREE + 2,
        link,
        target.len() as u64,
        extents.clone(),
    );
    let longest = inode(&mut image, FREE + 4, link, 4095, extents.clone());
    let damaged = inode(&mut image, FREE + 3, link, 4096, extents);
    let vol = Volume::open(image.as_slice()).unwrap();
    assert_eq!(vol.symlink_target(&sound).unwrap(), target);
    assert_eq!(vol.symlink_target(&longest).unwrap().len(), 4095);
    let err = vol.symlink_target(&damaged).unwrap_err().to_string();
    assert!(err.contains(&format!("block {}", FREE + 3)), "{err}");
    assert!(err.contains("i_size"), "{err}");
}
