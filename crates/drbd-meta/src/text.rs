//! The text drbdmeta prints for `dump-md`, `get-gi` and `show-gi`, produced from
//! decoded structures so our output can be compared line for line with the real
//! tool's.

use std::fmt::Write as _;

use crate::bitmap::Bitmap;
use crate::layout::{bitmap_bytes, Layout};
use crate::superblock::{mdf, mdf_peer, Superblock};

/// drbd-utils' human-readable size: a number of KiB scaled by 1024 (rounding)
/// while it is 10000 or more, with its unit (`32 KB`, `256 MB`).
pub fn pretty_size(kib: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    let mut size = kib;
    let mut unit = 0;
    while size >= 10000 && unit < UNITS.len() - 1 {
        size = (size >> 10) + u64::from(size & (1 << 9) != 0);
        unit += 1;
    }
    format!("{} {}B", size as u32, UNITS[unit])
}

/// Names of the per-peer flags, as dump-md prints them after `#`.
fn peer_flag_names(flags: u32) -> String {
    let mut text = String::new();
    let mut sep = " # ";
    for bit in 0..32 {
        let f = 1u32 << bit;
        if flags & f == 0 {
            continue;
        }
        let name = match f {
            mdf_peer::CONNECTED => "connected".to_string(),
            mdf_peer::OUTDATED => "<=outdated".to_string(),
            mdf_peer::FENCING => "fencing".to_string(),
            mdf_peer::FULL_SYNC => "full-sync".to_string(),
            mdf_peer::DEVICE_SEEN => "seen".to_string(),
            mdf_peer::NODE_EXISTS => "exists".to_string(),
            _ => format!("0x{f:x}=?"),
        };
        text.push_str(sep);
        text.push_str(&name);
        sep = " | ";
    }
    // drbdmeta formats into an 80-byte buffer.
    text.truncate(79);
    text
}

/// Bytes of the bitmap that describe the agreed size (what dump-md prints and
/// apply-al may touch).
pub fn used_bitmap_bytes(sb: &Superblock, layout: &Layout) -> u64 {
    bitmap_bytes(sb.clipped_effective_size(layout), sb.max_peers).unwrap_or(0)
}

/// The body of `dump-md` (everything after drbdmeta's four `#` header lines and
/// the blank line that follows them): `bitmap` must hold the first
/// [`used_bitmap_bytes`] bytes of the bitmap area.
pub fn dump_md(sb: &Superblock, layout: &Layout, bitmap: &Bitmap) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "version \"v09\";\n");
    if sb.flags & mdf::AL_CLEAN == 0 {
        let _ = writeln!(
            w,
            "This_is_an_unclean_meta_data_dump._Don't_trust_the_bitmap.\n\
             # You should \"apply-al\" first, if you plan to restore this.\n"
        );
    }
    let _ = writeln!(w, "max-peers {};", sb.max_peers);
    let _ = writeln!(w, "# md_size_sect {}", sb.md_size_sect);
    let _ = writeln!(w, "# md_offset {}", layout.md_offset);
    let _ = writeln!(w, "# al_offset {}", layout.al_offset);
    let _ = writeln!(w, "# bm_offset {}", layout.bm_offset);
    let _ = writeln!(w);
    let _ = writeln!(w, "node-id {};", sb.node_id);
    let _ = writeln!(w, "current-uuid 0x{:016X};", sb.current_uuid);
    let _ = writeln!(w, "flags 0x{:08X};", sb.flags);
    for (i, p) in sb.peers.iter().enumerate() {
        let _ = writeln!(w, "peer[{i}] {{");
        let _ = writeln!(w, "    bitmap-index {};", p.bitmap_index);
        let _ = writeln!(w, "    bitmap-uuid 0x{:016X};", p.bitmap_uuid);
        let _ = writeln!(w, "    bitmap-dagtag 0x{:016X};", p.bitmap_dagtag);
        let _ = writeln!(
            w,
            "    flags 0x{:08X};{}",
            p.flags,
            peer_flag_names(p.flags)
        );
        let _ = writeln!(w, "}}");
    }
    let _ = write!(w, "history-uuids {{");
    for (i, h) in sb.history_uuids.iter().enumerate() {
        let sep = if i % 4 == 0 { "\n        " } else { " " };
        let _ = write!(w, "{sep}0x{h:016X};");
    }
    let _ = writeln!(w, "\n}}");
    let _ = writeln!(w, "# al-extents {};", sb.al_nr_extents);
    let _ = writeln!(w, "la-size-sect {};", sb.clipped_effective_size(layout));
    let _ = writeln!(w, "bm-byte-per-bit {};", sb.bm_bytes_per_bit);
    let _ = writeln!(w, "device-uuid 0x{:016X};", sb.device_uuid);
    let _ = writeln!(
        w,
        "la-peer-max-bio-size {};",
        sb.la_peer_max_bio_size as i32
    );
    let _ = writeln!(w, "al-stripes {};", sb.al_stripes);
    let _ = writeln!(w, "al-stripe-size-4k {};", sb.al_stripe_size_4k);
    let _ = writeln!(w, "# bm-bytes {};", used_bitmap_bytes(sb, layout));
    // drbdmeta reports the count of the last bitmap it printed.
    let mut bits = 0;
    for peer in 0..sb.max_peers {
        let (text, n) = bitmap.dump_text(peer);
        let _ = write!(w, "bitmap[{peer}] {text}");
        bits = n;
    }
    let _ = writeln!(w, "# bits-set {bits};");
    s
}

/// The `get-gi` line for the peer with node id `node_id` (0..=31): current UUID,
/// that peer's bitmap UUID, two history UUIDs, then 0/1 for seven device flags
/// and five peer flags.
pub fn gi_line(sb: &Superblock, node_id: usize) -> String {
    let peer = sb.peers.get(node_id).copied().unwrap_or_default();
    let f = |flags: u32, bit: u32| u8::from(flags & bit != 0);
    format!(
        "{:016X}:{:016X}:{:016X}:{:016X}:{}:{}:{}:{}:{}:{}:{}:{}:{}:{}:{}:{}\n",
        sb.current_uuid,
        peer.bitmap_uuid,
        sb.history_uuids[0],
        sb.history_uuids[1],
        f(sb.flags, mdf::CONSISTENT),
        f(sb.flags, mdf::WAS_UP_TO_DATE),
        f(sb.flags, mdf::PRIMARY_IND),
        f(sb.flags, mdf::CRASHED_PRIMARY),
        f(sb.flags, mdf::AL_CLEAN),
        f(sb.flags, mdf::AL_DISABLED),
        f(sb.flags, mdf::PRIMARY_LOST_QUORUM),
        f(peer.flags, mdf_peer::CONNECTED),
        f(peer.flags, mdf_peer::OUTDATED),
        f(peer.flags, mdf_peer::FENCING),
        f(peer.flags, mdf_peer::FULL_SYNC),
        f(peer.flags, mdf_peer::DEVICE_SEEN),
    )
}

/// The `show-gi` text: the `get-gi` line with its legend, then the agreed size.
pub fn show_gi(sb: &Superblock, node_id: usize) -> String {
    let mut s = String::from(
        "\n       +--<  Current data generation UUID  >-\n\
         \x20      |               +--<  Bitmap's base data generation UUID  >-\n\
         \x20      |               |                 +--<  younger history UUID  >-\n\
         \x20      |               |                 |         +-<  older history  >-\n\
         \x20      V               V                 V         V\n",
    );
    s.push_str(&gi_line(sb, node_id));
    s.push_str(
        "                                                                    ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^\n\
         \x20                                     -<  Data consistency flag  >--+ | | | | | | | | | | |\n\
         \x20                            -<  Data was/is currently up-to-date  >--+ | | | | | | | | | |\n\
         \x20                                 -<  Node was/is currently primary  >--+ | | | | | | | | |\n\
         \x20-<  This node was a crashed primary, and has not seen its peer since  >--+ | | | | | | | |\n\
         \x20            -<  The activity-log was applied, the disk can be attached  >--+ | | | | | | |\n\
         \x20       -<  The activity-log was disabled, peer is completely out of sync  >--+ | | | | | |\n\
         \x20                             -<  This node was primary when it lost quorum  >--+ | | | | |\n\
         \x20                                         -<  Node was/is currently connected  >--+ | | | |\n\
         \x20                             -<  The peer's disk was out-dated or inconsistent  >--+ | | |\n\
         \x20                                -<   A fence policy other the dont-care was used  >--+ | |\n\
         \x20                 -<  Node was in the progress of marking all blocks as out of sync  >--+ |\n\
         \x20                    -<  At least once we saw this node with a backing device attached >--+\n\n",
    );
    if sb.effective_size != 0 {
        let _ = writeln!(
            s,
            "last agreed size: {} ({} sectors)",
            pretty_size(sb.effective_size >> 1),
            sb.effective_size
        );
        let _ = writeln!(
            s,
            "last agreed max bio size: {} Byte",
            sb.la_peer_max_bio_size
        );
    } else {
        s.push_str("zero size device -- never seen peer yet?\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_drbd_utils() {
        assert_eq!(pretty_size(32), "32 KB");
        assert_eq!(pretty_size(9999), "9999 KB");
        assert_eq!(pretty_size(262144), "256 MB");
        assert_eq!(pretty_size(1048508), "1024 MB");
        assert_eq!(pretty_size(1 << 30), "1024 GB");
    }

    #[test]
    fn fresh_gi() {
        let layout = Layout::internal_default(1 << 30, 1).unwrap();
        let sb = Superblock::new_for(&layout);
        assert_eq!(
            gi_line(&sb, 1),
            "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:1:0:0:0:0:0:0:0\n"
        );
        assert!(show_gi(&sb, 0).ends_with("zero size device -- never seen peer yet?\n"));
    }

    #[test]
    fn peer_flags() {
        assert_eq!(peer_flag_names(0), "");
        assert_eq!(peer_flag_names(0x1_0011), " # connected | seen | exists");
        assert_eq!(peer_flag_names(0x20), " # 0x20=?");
    }
}
