//! Our reader lists the system directory and the root of volumes made by the
//! real mkfs.ocfs2 exactly as debugfs.ocfs2 does, and the metaecc checks the
//! real mkfs wrote are the ones we compute.

mod common;

use common::*;
use ocfs2::blockcheck::{self, CheckOutcome};
use ocfs2::dinode::{mode, DINODE_CHECK_OFFSET};
use ocfs2::Volume;

fn mode_string(m: u16) -> String {
    let t = match m & mode::S_IFMT {
        mode::S_IFDIR => 'd',
        mode::S_IFLNK => 'l',
        mode::S_IFCHR => 'c',
        mode::S_IFBLK => 'b',
        mode::S_IFIFO => 'p',
        mode::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn our_ls(vol: &Volume<std::fs::File>, path: &str) -> Vec<LsLine> {
    let (_, dir) = vol.lookup(path).unwrap();
    vol.dir_entries(&dir)
        .unwrap()
        .into_iter()
        .map(|e| {
            let ino = vol.read_inode(e.inode).unwrap();
            LsLine {
                inode: e.inode,
                mode: mode_string(ino.mode),
                links: ino.links(),
                size: ino.size,
                name: e.name_str(),
            }
        })
        .collect()
}

#[test]
fn reader_lists_real_volumes_like_debugfs() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "max-compat",
            &[
                "-b",
                "1K",
                "-C",
                "4K",
                "-N",
                "2",
                "--fs-feature-level=max-compat",
            ],
        ),
        (
            "default",
            &[
                "-b",
                "4K",
                "-C",
                "8K",
                "-N",
                "3",
                "--fs-feature-level=default",
            ],
        ),
        (
            "max-features",
            &[
                "-b",
                "2K",
                "-C",
                "16K",
                "-N",
                "4",
                "--fs-feature-level=max-features",
            ],
        ),
        (
            "noinline",
            &[
                "-b",
                "4K",
                "-C",
                "4K",
                "-N",
                "2",
                "--fs-features=noinline-data,indexed-dirs,metaecc",
            ],
        ),
        (
            "local",
            &[
                "-b",
                "512",
                "-C",
                "4K",
                "-M",
                "local",
                "--fs-feature-level=max-features",
            ],
        ),
    ];
    for (name, args) in cases {
        let img = sparse_image(dir.path(), name, 256 << 20);
        real_mkfs(&img, args);
        let vol = Volume::open(std::fs::File::open(&img).unwrap()).unwrap();
        for path in ["//", "/"] {
            let theirs = parse_ls(&debugfs(&img, &format!("ls -l {path}")));
            assert!(
                !theirs.is_empty(),
                "{name}: debugfs listed nothing for {path}"
            );
            let ours = our_ls(&vol, path);
            assert_eq!(ours, theirs, "{name}: listing of {path}");
        }
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn metaecc_matches_real_mkfs_and_corrects() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "ecc", 256 << 20);
    real_mkfs(
        &img,
        &[
            "-b",
            "4K",
            "-C",
            "8K",
            "-N",
            "2",
            "--fs-feature-level=max-features",
        ],
    );
    let vol = Volume::open(std::fs::File::open(&img).unwrap()).unwrap();
    let sb = vol.superblock().clone();
    let mut blocks = vec![2u64, sb.root_blkno, sb.system_dir_blkno];
    let (_, sys) = vol.lookup("//").unwrap();
    blocks.extend(vol.dir_entries(&sys).unwrap().iter().map(|e| e.inode));
    for b in blocks {
        let raw = vol.read_block(b).unwrap();
        let stored = blockcheck::BlockCheck::read(&raw, DINODE_CHECK_OFFSET).unwrap();
        assert_ne!(stored.crc32e, 0, "block {b} has no check");
        assert_eq!(
            blockcheck::compute(&raw, DINODE_CHECK_OFFSET),
            stored,
            "block {b}"
        );
        let mut one = raw.clone();
        one[300] ^= 0x10;
        assert_eq!(
            blockcheck::verify_and_correct(&mut one, DINODE_CHECK_OFFSET),
            Ok(CheckOutcome::Corrected)
        );
        assert_eq!(one, raw);
        let mut two = raw.clone();
        two[300] ^= 0x10;
        two[17] ^= 0x01;
        assert!(
            blockcheck::verify_and_correct(&mut two, DINODE_CHECK_OFFSET).is_err(),
            "block {b}: 2 flips"
        );
    }
    // Group descriptors of the global bitmap carry checks too.
    let (_, gb) = vol.lookup("//global_bitmap").unwrap();
    if let ocfs2::dinode::Body::Chain(cl) = &gb.body {
        for r in &cl.recs {
            let raw = vol.read_block(r.blkno).unwrap();
            let stored =
                blockcheck::BlockCheck::read(&raw, ocfs2::alloc::GROUP_CHECK_OFFSET).unwrap();
            assert_eq!(
                blockcheck::compute(&raw, ocfs2::alloc::GROUP_CHECK_OFFSET),
                stored,
                "group {}",
                r.blkno
            );
        }
    } else {
        panic!("global_bitmap is not a chain allocator");
    }
    assert_eq!(
        sb.uuid_hash,
        ocfs2::superblock::uuid_hash(&sb.uuid),
        "s_uuid_hash"
    );
}
