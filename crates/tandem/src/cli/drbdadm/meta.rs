//! The meta-data verbs of drbdadm: `create-md`, `dump-md`, `show-gi`, `get-gi`,
//! `wipe-md`, `apply-al`.
//!
//! Real drbdadm runs `drbdmeta MINOR v09 DISK internal VERB` for each volume of
//! the resource on this host; we do the same work in-process with the
//! `drbd-meta` crate, printing what drbdmeta prints (the same streams, texts,
//! questions and exit codes). Like drbdadm, `create-md` keeps the device UUID of
//! meta-data it replaces, or makes a random one.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use drbd_config::{Config, MetaDisk, Resource};
use drbd_meta::detect::{DataExtent, Existing};
use drbd_meta::layout::{LayoutError, MAX_PEERS};
use drbd_meta::ops::{self, ApplyAlError, MetaError, Opened};
use drbd_meta::superblock::{mdf, MAGIC_V08};
use drbd_meta::text;

use super::device::BackingDevice;

/// Options of the meta-data verbs.
pub struct Options {
    pub force: bool,
    pub max_peers: Option<u32>,
}

/// One volume of this host.
struct Volume {
    minor: u32,
    disk: String,
    /// Node ids of the peers (for get-gi/show-gi), in connection order.
    peers: Vec<u32>,
    /// Peers with a disk: create-md's default max-peers.
    peers_with_disk: u32,
}

impl Volume {
    /// The drbdmeta command line drbdadm would run.
    fn command(&self, args: &str) -> String {
        format!("drbdmeta {} v09 {} internal {args}", self.minor, self.disk)
    }
}

/// drbdmeta's exit statuses.
const EXIT_CANCELLED: u8 = 1;
const EXIT_TOO_SMALL: u8 = 10;
const EXIT_DEVICE: u8 = 20;
const EXIT_REFUSED: u8 = 40;

/// Runs `verb` for every volume of the named resources on this host.
pub fn run(verb: &str, config_path: &Path, resources: &[String], options: &Options) -> ExitCode {
    let load = drbd_config::LoadOptions {
        hostname: drbd_config::this_hostname(),
    };
    let config = match drbd_config::load(config_path, &load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1));
        }
    };
    let targets = match targets(&config, resources) {
        Ok(t) => t,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(EXIT_CANCELLED);
        }
    };
    for volume in targets {
        let max_peers = options.max_peers.unwrap_or(volume.peers_with_disk.max(1));
        let (code, args) = match verb {
            "create-md" => (
                create_md(&volume, max_peers, options.force),
                format!("create-md {max_peers}"),
            ),
            "dump-md" => (dump_md(&volume, options.force), verb.to_string()),
            "get-gi" | "show-gi" => {
                let mut code = 0;
                for &peer in &volume.peers {
                    code = gi(&volume, peer, verb == "show-gi");
                    if code != 0 {
                        let args = format!("--node-id={peer} {verb}");
                        return finish(&volume, code, &args);
                    }
                }
                (code, verb.to_string())
            }
            "wipe-md" => (wipe_md(&volume, options.force), verb.to_string()),
            "apply-al" => (apply_al(&volume), verb.to_string()),
            _ => unreachable!("dispatched by the caller"),
        };
        if code != 0 {
            return finish(&volume, code, &args);
        }
    }
    ExitCode::SUCCESS
}

/// drbdadm's report of a failed drbdmeta run (for statuses of 10 and more).
fn finish(volume: &Volume, code: u8, args: &str) -> ExitCode {
    if code >= 10 {
        eprintln!(
            "Command '{}' terminated with exit code {code}",
            volume.command(args)
        );
    }
    ExitCode::from(code)
}

/// The volumes of the named resources (`all` or every resource of this host).
fn targets(config: &Config, names: &[String]) -> Result<Vec<Volume>, String> {
    if names.is_empty() {
        return Err("No resource names specified".to_string());
    }
    let mut resources: Vec<&Resource> = Vec::new();
    for name in names {
        if name == "all" {
            resources.extend(config.resources.iter().filter(|r| r.me().is_some()));
            continue;
        }
        match config.resource(name).filter(|r| r.me().is_some()) {
            Some(r) => resources.push(r),
            None => {
                return Err(format!(
                    "'{name}' not defined in your config (for this host)."
                ))
            }
        }
    }
    let mut out = Vec::new();
    for r in resources {
        let Some(me) = r.me() else { continue };
        let (peers, peers_with_disk) = peers_of(r);
        for v in &me.volumes {
            let Some(disk) = v.disk.clone().filter(|d| d != "none") else {
                continue;
            };
            let minor = v
                .minor
                .ok_or_else(|| format!("{}: volume {} has no minor number", r.name, v.number))?;
            if !matches!(v.meta_disk, Some(MetaDisk::Internal)) {
                return Err(format!(
                    "{}: volume {}: only 'meta-disk internal' is implemented",
                    r.name, v.number
                ));
            }
            out.push(Volume {
                minor,
                disk,
                peers: peers.clone(),
                peers_with_disk,
            });
        }
    }
    Ok(out)
}

/// Node ids of this host's peers, in connection order, and how many of them have
/// a disk (drbdadm counts those for create-md's max-peers).
fn peers_of(r: &Resource) -> (Vec<u32>, u32) {
    let Some(me) = r.this_host else {
        return (Vec::new(), 0);
    };
    let mut ids = Vec::new();
    let mut with_disk = 0;
    for c in &r.connections {
        let hosts = c.hosts();
        if !hosts.contains(&me) {
            continue;
        }
        for peer in hosts.into_iter().filter(|&h| h != me) {
            let host = &r.hosts[peer];
            if let Some(id) = host.node_id {
                ids.push(id);
            }
            if host
                .volumes
                .iter()
                .any(|v| v.disk.as_deref().is_some_and(|d| d != "none"))
            {
                with_disk += 1;
            }
        }
    }
    (ids, with_disk)
}

/// Opens the backing device, or prints drbdmeta's complaint and gives its exit code.
fn open_device(volume: &Volume) -> Result<BackingDevice, u8> {
    BackingDevice::open(Path::new(&volume.disk)).map_err(|e| {
        eprintln!("open({}) failed: {e}", volume.disk);
        EXIT_DEVICE
    })
}

/// Opens the device and reads its meta-data: `Ok(None)` when there is none.
fn open_meta(volume: &Volume) -> Result<(BackingDevice, Option<Opened>), u8> {
    let mut dev = open_device(volume)?;
    match ops::open(&mut dev) {
        Ok(Ok(opened)) => {
            if let Some(expected) = opened.strange_md_size {
                eprintln!(
                    "strange md_size_sect {} (expected: {expected})",
                    opened.superblock.md_size_sect
                );
            }
            if let Some(stored) = opened.clipped_from {
                println!(
                    "# la-size-sect was too big ({stored}), truncated ({})!",
                    opened.superblock.effective_size
                );
            }
            Ok((dev, Some(opened)))
        }
        Ok(Err(_invalid)) => Ok((dev, None)),
        Err(e) => Err(meta_error(volume, &e)),
    }
}

fn meta_error(volume: &Volume, e: &MetaError) -> u8 {
    match e {
        MetaError::DeviceTooSmall { bytes } => {
            eprintln!("{} is only {bytes} bytes. That's not enough.", volume.disk);
            EXIT_TOO_SMALL
        }
        MetaError::Layout(LayoutError::BitmapTooLarge | LayoutError::DeviceTooLarge { .. }) => {
            eprintln!("Bitmap for that device got too large.");
            EXIT_TOO_SMALL
        }
        other => {
            eprintln!("{}: {other}", volume.disk);
            EXIT_DEVICE
        }
    }
}

/// drbdmeta's confirmation: print the context and question; `--force` answers
/// yes; otherwise one line of standard input must be exactly `yes`.
fn confirmed(force: bool, context: Option<&str>, question: &str) -> bool {
    let _ = io::stdout().flush();
    if let Some(c) = context {
        eprint!("\n{c}\n");
    }
    eprint!("\n{question}\n");
    if force {
        eprintln!("*** confirmation forced via --force option ***");
        return true;
    }
    eprint!("[need to type 'yes' to confirm] ");
    let mut answer = Vec::new();
    // Read one line, byte by byte, so nothing after it is consumed.
    let mut byte = [0u8; 1];
    let mut stdin = io::stdin().lock();
    while answer.len() < 64 && matches!(stdin.read(&mut byte), Ok(1)) {
        answer.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    eprintln!();
    answer == b"yes\n"
}

fn create_md(volume: &Volume, max_peers: u32, force: bool) -> u8 {
    if !(1..=MAX_PEERS).contains(&max_peers) {
        eprintln!("MAX_PEERS argument not in allowed range 1 .. {MAX_PEERS}.");
        return EXIT_DEVICE;
    }
    let mut dev = match open_device(volume) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let check = match ops::check_create(&mut dev, max_peers) {
        Ok(c) => c,
        Err(e) => return meta_error(volume, &e),
    };
    let layout = check.layout;
    // Existing meta-data first, then existing data, as drbdmeta asks.
    if check.existing_md.is_some() || check.other_md_magic.is_some() {
        let found = if check.other_md_magic == Some(MAGIC_V08) {
            "v08"
        } else {
            "v09"
        };
        let context = format!(
            "You want me to create a v09 style flexible-size internal meta data block.\n\
             There appears to be a {found} flexible-size internal meta data block\n\
             already in place on {} at byte offset {}",
            volume.disk, layout.md_offset
        );
        if !confirmed(
            force,
            Some(&context),
            "Do you really want to overwrite the existing meta-data?",
        ) {
            println!("Operation cancelled.");
            return EXIT_CANCELLED;
        }
    }
    if let Existing::Found(found) = &check.existing_data {
        println!("md_offset {}", layout.md_offset);
        println!("al_offset {}", layout.al_offset);
        println!("bm_offset {}", layout.bm_offset);
        println!("\nFound {}", found.kind);
        let usable_kib = layout.max_usable_sectors >> 1;
        match found.extent {
            DataExtent::Unknown | DataExtent::Blocks { blocks: 0, .. } => {
                println!("\n ==> This might destroy existing data! <==");
            }
            DataExtent::Refuse => {
                println!("{usable_kib:>12} kB left usable by current configuration");
                if found.kind.starts_with("LVM2") {
                    println!("Could not determine the size of the actually used data area.\n");
                }
                println!(
                    "Device size would be truncated, which\n\
                     would corrupt data and result in\n\
                     'access beyond end of device' errors.\n\
                     If you want me to do this, you need to zero out the first part\n\
                     of the device (destroy the content).\n\
                     You should be very sure that you mean it.\n\
                     Operation refused.\n"
                );
                return EXIT_REFUSED;
            }
            DataExtent::Blocks { .. } => {
                let used_kib = found.extent.kib().unwrap_or(u64::MAX);
                println!("{used_kib:>12} kB data area apparently used");
                println!("{usable_kib:>12} kB left usable by current configuration");
                if used_kib > usable_kib {
                    println!(
                        "\nDevice size would be truncated, which\n\
                         would corrupt data and result in\n\
                         'access beyond end of device' errors.\n\
                         You need to either\n   \
                         * use external meta data (recommended)\n   \
                         * shrink that filesystem first\n   \
                         * zero out the device (destroy the filesystem)\n\
                         Operation refused.\n"
                    );
                    return EXIT_REFUSED;
                }
                println!(
                    "\nEven though it looks like this would place the new meta data into\n\
                     unused space, you still need to confirm, as this is only a guess."
                );
            }
        }
        if !confirmed(force, None, "Do you want to proceed?") {
            println!("Operation canceled.");
            return EXIT_CANCELLED;
        }
    }
    // drbdadm keeps the device UUID of the meta-data it replaces, else makes one.
    let device_uuid = check
        .existing_md
        .as_ref()
        .map(|o| o.superblock.device_uuid)
        .filter(|&u| u != 0)
        .unwrap_or_else(random_u64);
    println!("initializing activity log");
    let _ = io::stdout().flush();
    eprintln!(
        "initializing bitmap ({}) to all zero",
        text::pretty_size(layout.bm_bytes >> 10)
    );
    println!("Writing meta data...");
    match ops::create(&mut dev, &layout, device_uuid) {
        Ok(_) => {
            println!("New drbd meta data block successfully created.");
            0
        }
        Err(e) => {
            eprintln!("{}: {e}", volume.disk);
            eprintln!("operation failed");
            EXIT_DEVICE
        }
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Not expected on Linux; the time is a poor but unique-enough fallback.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 | 1;
    }
    u64::from_ne_bytes(b)
}

fn dump_md(volume: &Volume, force: bool) -> u8 {
    let (mut dev, opened) = match open_meta(volume) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(opened) = opened else {
        eprintln!("No valid meta data found");
        return EXIT_CANCELLED;
    };
    if opened.superblock.flags & mdf::AL_CLEAN == 0 {
        eprintln!("Found meta data is \"unclean\", please apply-al first");
        if !force {
            return EXIT_CANCELLED;
        }
    }
    let bitmap = match ops::read_bitmap(&mut dev, &opened) {
        Ok(b) => b,
        Err(e) => return meta_error(volume, &e),
    };
    let dump = dump_header(&volume.command("dump-md"))
        + &text::dump_md(&opened.superblock, &opened.layout, &bitmap);
    // A reader that stops early (`| head`) is not an error of ours.
    let _ = io::stdout().lock().write_all(dump.as_bytes());
    0
}

/// drbdmeta's dump header: time, host and command line. The time is printed in
/// UTC (`+0000`).
fn dump_header(command: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "# DRBD meta data dump\n# {} +0000 [{now}]\n# {}> {command}\n#\n\n",
        utc_time(now),
        host.trim()
    )
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the epoch (UTC).
fn utc_time(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn gi(volume: &Volume, peer: u32, pretty: bool) -> u8 {
    let opened = match open_meta(volume) {
        Ok((_, Some(o))) => o,
        // drbdmeta says nothing here.
        Ok((_, None)) => return EXIT_CANCELLED,
        Err(code) => return code,
    };
    let sb = &opened.superblock;
    if pretty {
        print!("{}", text::show_gi(sb, peer as usize));
    } else {
        print!("{}", text::gi_line(sb, peer as usize));
    }
    0
}

fn wipe_md(volume: &Volume, force: bool) -> u8 {
    let (mut dev, opened) = match open_meta(volume) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if opened.is_none() {
        eprintln!("There appears to be no drbd meta data to wipe out?");
        return 0;
    }
    if !confirmed(
        force,
        None,
        "Do you really want to wipe out the DRBD meta data?",
    ) {
        println!("Operation cancelled.");
        return EXIT_CANCELLED;
    }
    println!("Wiping meta data...");
    match ops::wipe(&mut dev) {
        Ok(()) => {
            println!("DRBD meta data block successfully wiped out.");
            0
        }
        Err(e) => {
            eprintln!("{}: {e}", volume.disk);
            eprintln!("operation failed");
            EXIT_DEVICE
        }
    }
}

fn apply_al(volume: &Volume) -> u8 {
    let (mut dev, opened) = match open_meta(volume) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(opened) = opened else {
        eprintln!("No valid meta data found");
        return EXIT_CANCELLED;
    };
    match ops::apply_al(&mut dev, &opened) {
        Ok(done) => {
            match &done.replay {
                Ok(r) if r.corrupt_blocks > 0 => {
                    eprintln!("{} corrupt AL transactions found", r.corrupt_blocks)
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("Error ignored, no need to apply the AL");
                }
            }
            if let (Some(applied), Ok(replay)) = (&done.applied, &done.replay) {
                let per_extent = 128 * u64::from(opened.superblock.max_peers);
                let bm_bytes = text::used_bitmap_bytes(&opened.superblock, &opened.layout);
                for extent in &applied.beyond_end {
                    eprintln!(
                        "extent {extent} beyond end of bitmap! ({} >= {bm_bytes})",
                        u64::from(*extent) * per_extent
                    );
                }
                if replay.hot_extents.is_empty() {
                    eprintln!("Nothing to do.");
                } else {
                    eprintln!(
                        "Marked additional {} as out-of-sync based on AL.",
                        text::pretty_size(applied.newly_set_bits * 4)
                    );
                }
            }
            0
        }
        Err(ApplyAlError::Replay(e)) => {
            eprintln!("{e}");
            match e {
                drbd_meta::activity_log::ReplayError::NoUsableLog => 1,
                _ => 2,
            }
        }
        Err(ApplyAlError::Meta(e)) => meta_error(volume, &e),
        Err(e) => {
            eprintln!("{}: {e}", volume.disk);
            EXIT_DEVICE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::utc_time;

    #[test]
    fn civil_time() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        // The time drbdmeta printed in a dump taken while writing this.
        assert_eq!(utc_time(1_796_236_139), "2026-12-02 18:28:59");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
    }
}
