//! `mkfs.ocfs2`: formats a device or image as OCFS2, with the real tool's options,
//! defaults, output and exit statuses. The layout itself is `ocfs2::mkfs`.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ocfs2::device::FileDevice;
use ocfs2::mkfs::{self, Entropy, FeatureLevel, FsType, MountType, Options, Plan};
use ocfs2::Volume;

const VERSION: &str = "1.8.7";

#[derive(Parser)]
#[command(
    name = "mkfs.ocfs2",
    disable_version_flag = true,
    about = "Format a device as OCFS2"
)]
struct Args {
    /// Block size (512, 1K, 2K, 4K).
    #[arg(short = 'b', long = "block-size", value_parser = parse_number)]
    block_size: Option<u64>,
    /// Cluster size (4K .. 1M).
    #[arg(short = 'C', long = "cluster-size", value_parser = parse_number)]
    cluster_size: Option<u64>,
    /// Volume label.
    #[arg(short = 'L', long = "label")]
    label: Option<String>,
    /// Node slots.
    #[arg(short = 'N', long = "node-slots")]
    node_slots: Option<String>,
    /// Journal options: size=SIZE, [no]block32, [no]block64.
    #[arg(short = 'J', long = "journal-options")]
    journal: Option<String>,
    /// Mount type: local or cluster.
    #[arg(short = 'M', long = "mount")]
    mount: Option<String>,
    /// Filesystem type: mail, datafiles, vmstore.
    #[arg(short = 'T')]
    fs_type: Option<String>,
    /// Volume UUID.
    #[arg(short = 'U')]
    uuid: Option<String>,
    /// Overwrite an existing filesystem without asking.
    #[arg(short = 'F', long = "force")]
    force: bool,
    /// Quiet.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Verbose (accepted).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Print what would be done, write nothing.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Print the version.
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// Feature level: max-compat, default, max-features.
    #[arg(long = "fs-feature-level")]
    level: Option<String>,
    /// Features to set or (with "no") clear.
    #[arg(long = "fs-features")]
    features: Option<String>,
    /// Cluster stack (o2cb, pcmk, cman).
    #[arg(long = "cluster-stack")]
    cluster_stack: Option<String>,
    /// Cluster name.
    #[arg(long = "cluster-name")]
    cluster_name: Option<String>,
    /// Global heartbeat (not supported).
    #[arg(long = "global-heartbeat")]
    global_heartbeat: bool,
    /// Do not write backup superblocks.
    #[arg(long = "no-backup-super")]
    no_backup_super: bool,
    /// Discard blocks first (accepted; images are punched anyway).
    #[arg(short = 'O', long = "discard")]
    discard: bool,
    /// Do not discard.
    #[arg(short = 'o', long = "nodiscard")]
    nodiscard: bool,
    /// The device or image file.
    device: Option<PathBuf>,
    /// Blocks to use (default: the whole device).
    blocks: Option<u64>,
}

fn parse_number(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let m = match &s[i..] {
                "k" | "K" => 1 << 10,
                "m" | "M" => 1 << 20,
                "g" | "G" => 1 << 30,
                "b" | "B" => 1,
                _ => return Err(format!("bad number '{s}'")),
            };
            (&s[..i], m)
        }
    };
    digits
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("bad number '{s}'"))
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("mkfs.ocfs2: {msg}");
    ExitCode::from(1)
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b
}

/// What filesystem the device holds, if any we recognize.
fn existing_filesystem(dev: &FileDevice) -> Option<&'static str> {
    if Volume::open(dev).is_ok() {
        return Some("ocfs2");
    }
    let mut buf = vec![0u8; 4096];
    ocfs2::BlockSource::read_at(dev, 0, &mut buf).ok()?;
    if &buf[0..4] == b"XFSB" {
        return Some("xfs");
    }
    if buf[1080..1082] == [0x53, 0xEF] {
        return Some("ext2/3/4");
    }
    None
}

/// Entry point; `args` excludes the program name.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(std::iter::once(OsString::from("mkfs.ocfs2")).chain(args));
    if !args.quiet || args.version {
        eprintln!("mkfs.ocfs2 {VERSION}");
    }
    if args.version {
        return ExitCode::SUCCESS;
    }
    let Some(device) = args.device.clone() else {
        eprintln!(
            "usage: mkfs.ocfs2 [-b block-size] [-C cluster-size] [-J journal-options]\n\t\t[-L volume-label] \
             [-M mount-type] [-N number-of-node-slots]\n\t\t[-T filesystem-type] [-U uuid][-HFnqvV] [--dry-run]\n\t\t\
             [--fs-feature-level=[default|max-compat|max-features]] \n\t\t[--fs-features=[[no]sparse,...]] \
             [--global-heartbeat]\n\t\t[--cluster-stack=stackname] [--cluster-name=clustername]\n\t\t\
             [--no-backup-super] device [blocks-count]"
        );
        return ExitCode::from(1);
    };
    let mut opts = Options::default();
    if let Some(b) = args.block_size {
        if !(512..=4096).contains(&b) {
            return fail("Specify a blocksize between 512 and 4096 in powers of 2");
        }
        opts.block_size = Some(1u32 << (63 - b.leading_zeros()));
    }
    if let Some(c) = args.cluster_size {
        if !(4096..=1 << 20).contains(&c) {
            return fail("Specify a clustersize between 4096 and 1048576 in powers of 2");
        }
        opts.cluster_size = Some(1u32 << (63 - c.leading_zeros()));
    }
    if let Some(l) = &args.label {
        if l.len() >= 64 {
            return fail("Volume label too long: must be less than 64 characters");
        }
        opts.label = l.clone();
    }
    if let Some(n) = &args.node_slots {
        match n.parse::<u32>() {
            Ok(0) => return fail("Initial node slots must be at least 1"),
            Ok(n) if n <= 255 => opts.slots = Some(n as u16),
            _ => return fail("Initial node slots must be no more than 255"),
        }
    }
    if let Some(j) = &args.journal {
        for tok in j.split(',').filter(|t| !t.is_empty()) {
            match tok.split_once('=') {
                Some(("size", v)) => match parse_number(v) {
                    Ok(n) if n >= 4 << 20 => opts.journal_size = Some(n),
                    _ => return fail(&format!("Invalid journal size: {v}\nSize must be greater than 4194304 bytes")),
                },
                None if ["block32", "noblock64"].contains(&tok) => {}
                _ => {
                    return fail(
                        "Bad journal options specified. Valid journal options are:\n\tsize=<journal size>\n\t\
                         [no]block32\n\t[no]block64\n",
                    )
                }
            }
        }
    }
    if let Some(m) = &args.mount {
        let m = m.to_ascii_lowercase();
        opts.mount = Some(if m.starts_with("local") {
            MountType::Local
        } else if m.starts_with("cluster") {
            MountType::Cluster
        } else {
            return fail(&format!("Invalid mount type {m}"));
        });
    }
    if let Some(t) = &args.fs_type {
        match FsType::parse(t) {
            Some(t) => opts.fs_type = t,
            None => return fail("Bad fs type option specified."),
        }
    }
    if let Some(l) = &args.level {
        match FeatureLevel::parse(l) {
            Some(l) => opts.level = l,
            None => return fail("Unknown feature level when parsing fs-feature-level string"),
        }
    }
    if let Some(f) = &args.features {
        match mkfs::parse_features(f) {
            Ok((set, clear)) => {
                opts.set = set;
                opts.clear = clear;
            }
            Err(e) => return fail(&format!("{e} when parsing fs-features string")),
        }
    }
    if args.global_heartbeat {
        return fail("global heartbeat is not supported by tandem yet");
    }
    opts.cluster_stack = args.cluster_stack.clone();
    opts.cluster_name = args.cluster_name.clone();
    opts.no_backup_super = args.no_backup_super;
    if let Some(u) = &args.uuid {
        match parse_uuid(u) {
            Some(u) => opts.uuid = Some(u),
            None => return fail("Invalid UUID specified"),
        }
        println!(
            "\nWARNING!!! OCFS2 uses the UUID to uniquely identify a file system.\nHaving two OCFS2 file systems with \
             the same UUID could, in the least,\ncause erratic behavior, and if unlucky, cause file system damage.\n\
             Please choose the UUID with care.\n"
        );
    }

    let mut dev = match FileDevice::open_rw(&device) {
        Ok(d) => d,
        Err(e) => return fail(&format!("Could not open device {}: {e}", device.display())),
    };
    if !args.quiet {
        match (&opts.cluster_stack, &opts.cluster_name) {
            (Some(s), Some(n)) => println!(
                "Cluster stack: {s}\nCluster name: {n}\nStack Flags: 0x0\nNOTE: Feature extended slot map may be enabled"
            ),
            _ => println!("Cluster stack: classic o2cb"),
        }
    }
    if let Some(fs) = existing_filesystem(&dev) {
        if fs == "ocfs2" {
            println!("Overwriting existing ocfs2 partition.");
        } else {
            println!("{} contains a {fs} file system", device.display());
        }
        if !args.force {
            print!("Proceed (y/N): ");
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            if !line.trim_start().starts_with(['y', 'Y']) {
                println!("Aborting operation.");
                return ExitCode::from(1);
            }
        }
    }
    let mut size = match dev.size() {
        Ok(s) => s,
        Err(e) => {
            return fail(&format!(
                "while getting size of device {}: {e}",
                device.display()
            ))
        }
    };
    if let Some(blocks) = args.blocks {
        let bs = u64::from(opts.block_size.unwrap_or(4096));
        if blocks * bs > size {
            return fail(&format!(
                "{blocks} blocks were specified and this is greater than the {} blocks that make up {}.\n",
                size / bs,
                device.display()
            ));
        }
        size = blocks * bs;
    }
    let plan = match Plan::new(&opts, size) {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string()),
    };
    if !args.quiet {
        print!("{}", plan.summary());
    }
    if args.dry_run {
        return ExitCode::SUCCESS;
    }
    let rnd: [u8; 32] = random_bytes();
    let entropy = Entropy {
        generation: u32::from_le_bytes([rnd[0], rnd[1], rnd[2], rnd[3]]),
        uuid: {
            let mut u = [0u8; 16];
            u.copy_from_slice(&rnd[4..20]);
            u[6] = (u[6] & 0x0f) | 0x40;
            u[8] = (u[8] & 0x3f) | 0x80;
            u
        },
        dx_seed: [
            u32::from_le_bytes([rnd[20], rnd[21], rnd[22], rnd[23]]),
            u32::from_le_bytes([rnd[24], rnd[25], rnd[26], rnd[27]]),
            u32::from_le_bytes([rnd[28], rnd[29], rnd[30], rnd[31]]),
        ],
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let quiet = args.quiet;
    let mut progress = |s: &str| {
        if !quiet {
            print!("{s}");
            let _ = std::io::stdout().flush();
        }
    };
    match mkfs::format(&plan, &entropy, &mut dev, &mut progress) {
        Ok(_) => {
            if !quiet {
                println!("mkfs.ocfs2 successful\n");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}
