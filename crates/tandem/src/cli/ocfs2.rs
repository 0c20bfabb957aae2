//! `tandem ocfs2 stats|ls|stat|cat DEVICE [PATH]`: offline, read-only inspection
//! of an OCFS2 volume (ours or the real tools'). Paths are from the root (`/a/b`);
//! `//name` names a system file, `//` the system directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use ocfs2::dinode::{flags, mode, Body, Dinode};
use ocfs2::Volume;

/// Inspection verbs.
#[derive(Subcommand)]
pub enum Ocfs2Command {
    /// The superblock: geometry, features, slots, label, UUID, cluster stack.
    Stats {
        /// Device or image.
        device: PathBuf,
    },
    /// List a directory (default `/`; `//` is the system directory).
    Ls {
        /// Device or image.
        device: PathBuf,
        /// Directory.
        path: Option<String>,
    },
    /// An inode: fields, and its extents, chains or inline data.
    Stat {
        /// Device or image.
        device: PathBuf,
        /// File.
        path: String,
    },
    /// Write a file's bytes to standard output.
    Cat {
        /// Device or image.
        device: PathBuf,
        /// File.
        path: String,
    },
}

fn open(device: &PathBuf) -> Result<Volume<std::fs::File>, String> {
    let f = std::fs::File::open(device).map_err(|e| format!("{}: {e}", device.display()))?;
    Volume::open(f).map_err(|e| format!("{}: {e}", device.display()))
}

/// Runs a verb.
pub fn main(cmd: Ocfs2Command) -> ExitCode {
    let r = match cmd {
        Ocfs2Command::Stats { device } => open(&device).map(|v| stats(&v)),
        Ocfs2Command::Ls { device, path } => {
            open(&device).and_then(|v| ls(&v, path.as_deref().unwrap_or("/")))
        }
        Ocfs2Command::Stat { device, path } => open(&device).and_then(|v| stat(&v, &path)),
        Ocfs2Command::Cat { device, path } => open(&device).and_then(|v| cat(&v, &path)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem ocfs2: {e}");
            ExitCode::from(1)
        }
    }
}

fn stats(v: &Volume<std::fs::File>) {
    let sb = v.superblock();
    let si = v.superblock_inode();
    let names = |mask: u32, kind: u8| -> String {
        ocfs2::superblock::FEATURE_NAMES
            .iter()
            .filter(|(_, k, b)| *k == kind && mask & b != 0)
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("Revision: {}.{}", sb.major_rev_level, sb.minor_rev_level);
    println!(
        "Mount Count: {}   Max Mount Count: {}",
        sb.mnt_count, sb.max_mnt_count
    );
    println!("State: {}   Errors: {}", sb.state, sb.errors);
    println!(
        "Feature Compat: {} {}",
        sb.feature_compat,
        names(sb.feature_compat, 0)
    );
    println!(
        "Feature Incompat: {} {}",
        sb.feature_incompat,
        names(sb.feature_incompat, 1)
    );
    println!(
        "Feature RO compat: {} {}",
        sb.feature_ro_compat,
        names(sb.feature_ro_compat, 2)
    );
    println!(
        "Root Blknum: {}   System Dir Blknum: {}",
        sb.root_blkno, sb.system_dir_blkno
    );
    println!("First Cluster Group Blknum: {}", sb.first_cluster_group);
    println!(
        "Block Size Bits: {}   Cluster Size Bits: {}",
        sb.blocksize_bits, sb.clustersize_bits
    );
    println!(
        "Block Size: {}   Cluster Size: {}",
        sb.block_size(),
        sb.cluster_size()
    );
    println!(
        "Clusters: {}   Blocks: {}",
        si.clusters,
        u64::from(si.clusters) << (sb.clustersize_bits - sb.blocksize_bits)
    );
    println!("Max Node Slots: {}", sb.max_slots);
    println!("Extended Attributes Inline Size: {}", sb.xattr_inline_size);
    println!("Label: {}", sb.label_str());
    println!("UUID: {}", sb.uuid_hex());
    println!("Hash: {} ({:#010x})", sb.uuid_hash, sb.uuid_hash);
    if sb.cluster_info.stack != [0; 4] {
        println!(
            "Cluster stack: {}",
            ocfs2::codec::c_string(&sb.cluster_info.stack)
        );
        println!(
            "Cluster name: {}",
            ocfs2::codec::c_string(&sb.cluster_info.cluster)
        );
        println!("Cluster flags: {}", sb.cluster_info.stackflags);
    }
    let unsupported = v.unsupported_incompat();
    if unsupported != 0 {
        println!("Unsupported incompat features: {unsupported:#x}");
    }
}

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

fn ls(v: &Volume<std::fs::File>, path: &str) -> Result<(), String> {
    let (_, dir) = v.lookup(path).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    for e in v.dir_entries(&dir).map_err(|e| e.to_string())? {
        let written = match v.read_inode(e.inode) {
            Ok(i) => writeln!(
                out,
                "\t{:<15} {}  {:>3} {:>5} {:>5} {:>15} {}",
                e.inode,
                mode_string(i.mode),
                i.links(),
                i.uid,
                i.gid,
                i.size,
                e.name_str()
            ),
            Err(err) => writeln!(out, "\t{:<15} ?  {} ({err})", e.inode, e.name_str()),
        };
        if written.is_err() {
            break; // reader went away (e.g. `| head`)
        }
    }
    Ok(())
}

fn flag_names(f: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (flags::VALID, "Valid"),
        (flags::ORPHANED, "Orphan"),
        (flags::SYSTEM, "System"),
        (flags::SUPER_BLOCK, "Superblock"),
        (flags::LOCAL_ALLOC, "Localalloc"),
        (flags::BITMAP, "Allocbitmap"),
        (flags::JOURNAL, "Journal"),
        (flags::HEARTBEAT, "Heartbeat"),
        (flags::CHAIN, "Chain"),
        (flags::DEALLOC, "Dealloc"),
        (flags::QUOTA, "Quota"),
    ];
    NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
}

fn stat(v: &Volume<std::fs::File>, path: &str) -> Result<(), String> {
    let (blkno, i): (u64, Dinode) = v.lookup(path).map_err(|e| e.to_string())?;
    println!(
        "Inode: {blkno}   Mode: {:04o} ({})   Generation: {}",
        i.mode & 0o7777,
        mode_string(i.mode),
        i.generation
    );
    println!(
        "Flags: {}   Dynamic Features: {:#x}",
        flag_names(i.flags),
        i.dyn_features
    );
    println!("User: {}   Group: {}   Size: {}", i.uid, i.gid, i.size);
    println!("Links: {}   Clusters: {}", i.links(), i.clusters);
    println!(
        "ctime: {}   mtime: {}   atime: {}",
        i.ctime, i.mtime, i.atime
    );
    let slot = if i.suballoc_slot == 0xFFFF {
        "Global".to_string()
    } else {
        i.suballoc_slot.to_string()
    };
    println!("Sub Alloc Slot: {slot}   Sub Alloc Bit: {}", i.suballoc_bit);
    match &i.body {
        Body::Chain(cl) => {
            let (used, total) = i.bitmap_counts();
            println!(
                "Bitmap Total: {total}   Used: {used}   Free: {}",
                total - used
            );
            println!(
                "Clusters per Group: {}   Bits per Cluster: {}",
                cl.cpg, cl.bpc
            );
            println!("Count: {}   Next Free Rec: {}", cl.count, cl.next_free_rec);
            println!("##   Total        Free         Block#");
            for (n, r) in cl.recs.iter().enumerate() {
                println!("{n:<4} {:<12} {:<12} {}", r.total, r.free, r.blkno);
            }
        }
        Body::Extents(l) => {
            println!(
                "Tree Depth: {}   Count: {}   Next Free Rec: {}",
                l.tree_depth, l.count, l.next_free_rec
            );
            println!("## Offset        Clusters       Block#          Flags");
            for (n, r) in v.extents(&i).map_err(|e| e.to_string())?.iter().enumerate() {
                println!(
                    "{n:<2} {:<13} {:<14} {:<15} {:#x}",
                    r.cpos,
                    r.leaf_clusters(),
                    r.blkno,
                    r.flags()
                );
            }
        }
        Body::Inline(d) => println!("Inline Data Max: {}", d.count),
        Body::FastSymlink(t) => println!("Fast Symlink: {}", String::from_utf8_lossy(t)),
        Body::LocalAlloc(la) => println!("Local Bitmap Offset: {}   Size: {}", la.bm_off, la.size),
        Body::TruncateLog(t) => println!("Total Records: {}   Used: {}", t.count, t.used),
        Body::Super(_) => println!("(superblock: see `tandem ocfs2 stats`)"),
        Body::None => {}
    }
    Ok(())
}

fn cat(v: &Volume<std::fs::File>, path: &str) -> Result<(), String> {
    let (_, i) = v.lookup(path).map_err(|e| e.to_string())?;
    if i.is_dir() {
        return Err(format!("{path}: is a directory"));
    }
    let mut out = std::io::stdout().lock();
    let chunk = 1 << 20;
    let mut off = 0u64;
    while off < i.size {
        let data = v.read_range(&i, off, chunk).map_err(|e| e.to_string())?;
        if data.is_empty() {
            break;
        }
        out.write_all(&data).map_err(|e| e.to_string())?;
        off += data.len() as u64;
    }
    Ok(())
}
