//! The on-disk bitmap: one bit per 4 KiB of data per peer, set = out of sync.
//!
//! The bitmaps of the `max_peers` peers are interleaved in 32-bit little-endian
//! words: bit `b` of bitmap `p` is bit `b % 32` of word `(b / 32) * max_peers + p`,
//! the word at byte `4 * word` of the bitmap area. The area is sized for the whole
//! device (see [`crate::layout`]); only the first `bitmap_bytes(la_size_sect)` bytes
//! describe data the peers agreed on, and that prefix is what dump-md prints and
//! apply-al touches.

use crate::activity_log::BM_BYTES_PER_AL_EXTENT;

/// The bitmap area (or its used prefix), with the peer count needed to find bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bytes: Vec<u8>,
    max_peers: u32,
}

/// Result of marking activity-log extents out of sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedExtents {
    /// Bits that were clear and are now set (all peers).
    pub newly_set_bits: u64,
    /// Extents past the end of the bitmap, skipped.
    pub beyond_end: Vec<u32>,
}

impl Bitmap {
    /// Wraps `bytes` (a multiple of 4 bytes is expected; a ragged tail is ignored
    /// by word accessors).
    pub fn new(bytes: Vec<u8>, max_peers: u32) -> Bitmap {
        Bitmap {
            bytes,
            max_peers: max_peers.max(1),
        }
    }

    /// An all-zero bitmap of `len` bytes.
    pub fn zeroed(len: usize, max_peers: u32) -> Bitmap {
        Bitmap::new(vec![0; len], max_peers)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn max_peers(&self) -> u32 {
        self.max_peers
    }

    /// Number of 32-bit words (all peers).
    pub fn words(&self) -> usize {
        self.bytes.len() / 4
    }

    /// The 32-bit word at interleaved index `i`.
    pub fn word(&self, i: usize) -> u32 {
        let at = i * 4;
        u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    fn locate(&self, peer: u32, bit: u64) -> Option<(usize, u32)> {
        if peer >= self.max_peers {
            return None;
        }
        let word = (bit / 32)
            .checked_mul(u64::from(self.max_peers))?
            .checked_add(u64::from(peer))?;
        let word = usize::try_from(word).ok()?;
        (word < self.words()).then_some((word * 4, (bit % 32) as u32))
    }

    /// Is bit `bit` of peer `peer` set? Bits outside the bitmap read as clear.
    pub fn get(&self, peer: u32, bit: u64) -> bool {
        self.locate(peer, bit)
            .is_some_and(|(at, b)| self.bytes[at + (b / 8) as usize] & (1 << (b % 8)) != 0)
    }

    /// Sets or clears bit `bit` of peer `peer`; returns false when it is outside.
    pub fn set(&mut self, peer: u32, bit: u64, value: bool) -> bool {
        let Some((at, b)) = self.locate(peer, bit) else {
            return false;
        };
        let byte = &mut self.bytes[at + (b / 8) as usize];
        if value {
            *byte |= 1 << (b % 8);
        } else {
            *byte &= !(1 << (b % 8));
        }
        true
    }

    /// Set bits of one peer.
    pub fn count_peer(&self, peer: u32) -> u64 {
        let mp = self.max_peers as usize;
        (peer as usize..self.words())
            .step_by(mp)
            .map(|i| u64::from(self.word(i).count_ones()))
            .sum()
    }

    /// Marks whole activity-log extents (4 MiB of data each, all peers) out of sync,
    /// as apply-al does: `128 * max_peers` bytes per extent set to 0xff, the last
    /// one clipped to the bitmap's end.
    pub fn set_extents(&mut self, extents: &[u32]) -> AppliedExtents {
        let mut out = AppliedExtents::default();
        let per_extent = BM_BYTES_PER_AL_EXTENT * u64::from(self.max_peers);
        let len = self.bytes.len() as u64;
        for &extent in extents {
            let start = u64::from(extent) * per_extent;
            if start >= len {
                out.beyond_end.push(extent);
                continue;
            }
            let end = (start + per_extent).min(len);
            let range = &mut self.bytes[start as usize..end as usize];
            let already: u64 = range.iter().map(|b| u64::from(b.count_ones())).sum();
            out.newly_set_bits += (end - start) * 8 - already;
            range.fill(0xff);
        }
        out
    }

    /// The `{ ... }` text drbdmeta's dump-md prints for bitmap `peer`, and the
    /// number of bits it counted. Runs of 16 or more equal words (in groups of 8)
    /// are written as `N times 0xWORDWORD;`; other words in pairs as 64-bit values
    /// (high word first), 8 words (4 values) per line; a `# at NkB` comment
    /// every 64 words. drbdmeta reads the bitmap in chunks of up to 32 MiB and does
    /// not let a run of only 8 equal words at the start of a chunk join the run
    /// before it; that is reproduced, so the text is the same for any size.
    pub fn dump_text(&self, peer: u32) -> (String, u64) {
        const WORDS_PER_LINE: usize = 8;
        const READ_BUFFER: usize = 32 * 1024 * 1024;
        let mp = self.max_peers as usize;
        let p = peer as usize;
        let n = self.words();
        let mut out = String::from("{");
        let mut bits = 0u64;
        if p >= n {
            out.push_str("\n}\n");
            return (out, bits);
        }
        // Words of this peer, and how many fit in one of drbdmeta's read chunks.
        let k_end = (n - p).div_ceil(mp);
        let chunk_bytes = READ_BUFFER / (4096 * mp) * (4096 * mp);
        let per_chunk = chunk_bytes / 4 / mp;
        let word = |k: usize| self.word(k * mp + p);
        let eol = |out: &mut String, k: usize| {
            let r = k * mp + p;
            if r & 63 == p {
                out.push_str(&format!("\n   # at {}kB\n   ", 128 * (r - p)));
            } else {
                out.push_str("\n   ");
            }
        };
        let mut k = 0usize;
        let mut count = 0usize;
        let mut cw = 0u32;
        let mut low = 0u32;
        'words: while k < k_end {
            loop {
                if count == 0 {
                    cw = word(k);
                }
                if k.is_multiple_of(WORDS_PER_LINE) {
                    if count == 0 {
                        eol(&mut out, k);
                    }
                    let bound = k_end.min((k / per_chunk + 1) * per_chunk);
                    let mut j = k;
                    while j < bound && word(j) == cw {
                        j += 1;
                    }
                    let run = (j - k) / WORDS_PER_LINE * WORDS_PER_LINE;
                    if run > WORDS_PER_LINE {
                        count += run;
                        k += run;
                        if j >= bound && k < k_end {
                            // The run reaches the end of a read chunk: carry on in the next.
                            continue 'words;
                        }
                    }
                    if count > 0 {
                        out.push_str(&format!(" {} times 0x{cw:08X}{cw:08X};", count / 2));
                        bits += count as u64 * u64::from(cw.count_ones());
                        count = 0;
                        if k >= k_end {
                            break 'words;
                        }
                        continue;
                    }
                }
                let w = word(k);
                if k.is_multiple_of(2) {
                    low = w;
                } else {
                    out.push_str(&format!(" 0x{w:08X}{low:08X};"));
                }
                bits += u64::from(w.count_ones());
                k += 1;
                break;
            }
        }
        out.push_str("\n}\n");
        (out, bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn interleaving() {
        let mut bm = Bitmap::zeroed(4096, 3);
        assert!(bm.set(1, 33, true));
        // bit 33 of peer 1: word (33/32)*3 + 1 = 4, bit 1 → byte 16, mask 2.
        assert_eq!(bm.as_bytes()[16], 2);
        assert!(bm.get(1, 33) && !bm.get(0, 33) && !bm.get(2, 33));
        assert_eq!(bm.count_peer(1), 1);
        assert!(!bm.set(3, 0, true));
    }

    #[test]
    fn extents_cover_all_peers() {
        let mut bm = Bitmap::zeroed(8192, 2);
        bm.set(0, 1024, true);
        let applied = bm.set_extents(&[1, 100]);
        assert_eq!(applied.beyond_end, vec![100]);
        assert_eq!(applied.newly_set_bits, 2048 - 1);
        assert!(bm.as_bytes()[256..512].iter().all(|&b| b == 0xff));
        assert!(bm.as_bytes()[..256].iter().all(|&b| b == 0));
    }

    /// Text for an all-zero bitmap of 32 KiB (1 GiB, one peer), as drbdmeta prints
    /// it after `restore-md` of a dump with `la-size-sect 2097016`.
    #[test]
    fn dump_text_of_zero_run() {
        let bm = Bitmap::zeroed(32768, 1);
        let (text, bits) = bm.dump_text(0);
        assert_eq!(
            text,
            "{\n   # at 0kB\n    4096 times 0x0000000000000000;\n}\n"
        );
        assert_eq!(bits, 0);
    }

    #[test]
    fn dump_text_of_mixed_words() {
        let mut bm = Bitmap::zeroed(4096, 1);
        bm.set(0, 0, true);
        bm.set(0, 63, true);
        let (text, bits) = bm.dump_text(0);
        assert!(
            text.starts_with("{\n   # at 0kB\n    0x8000000000000001; 0x0000000000000000;"),
            "{text}"
        );
        assert!(text.contains(" 508 times 0x0000000000000000;"), "{text}");
        assert_eq!(bits, 2);
    }

    proptest! {
        #[test]
        fn dump_text_never_panics(words in proptest::collection::vec(prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()], 0..3000), peers in 1u32..5) {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let bm = Bitmap::new(bytes, peers);
            let mut total = 0;
            for p in 0..peers {
                let (_, bits) = bm.dump_text(p);
                prop_assert_eq!(bits, bm.count_peer(p));
                total += bits;
            }
            prop_assert_eq!(total, words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>());
        }
    }
}
