//! The out-of-sync bitmap: one bit per 4 KiB block of the device, set when the
//! block may differ on a peer.
//!
//! A bit is set when a write could not reach the peer (it was away, or the write
//! was in an epoch the peer never confirmed), and cleared when resync has copied
//! the block. Words are `u64`, bit `i` of word `w` is block `64 * w + i`, which is
//! also DRBD's on-disk order (little-endian words).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    blocks: u64,
    set: u64,
}

impl Bitmap {
    /// A clear bitmap for a device of `blocks` blocks.
    pub fn new(blocks: u64) -> Bitmap {
        Bitmap {
            words: vec![0; blocks.div_ceil(64) as usize],
            blocks,
            set: 0,
        }
    }

    /// Rebuilds a bitmap from its words; bits past the device's end are dropped.
    pub fn from_words(blocks: u64, mut words: Vec<u64>) -> Bitmap {
        words.resize(blocks.div_ceil(64) as usize, 0);
        if !blocks.is_multiple_of(64) {
            if let Some(last) = words.last_mut() {
                *last &= (1u64 << (blocks % 64)) - 1;
            }
        }
        let set = words.iter().map(|w| u64::from(w.count_ones())).sum();
        Bitmap { words, blocks, set }
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// How many blocks are out of sync.
    pub fn count(&self) -> u64 {
        self.set
    }

    pub fn is_clear(&self) -> bool {
        self.set == 0
    }

    pub fn get(&self, block: u64) -> bool {
        block < self.blocks && self.words[(block / 64) as usize] & (1 << (block % 64)) != 0
    }

    /// Marks `count` blocks from `first` out of sync (clamped to the device).
    pub fn set_range(&mut self, first: u64, count: u64) {
        for block in first..first.saturating_add(count).min(self.blocks) {
            let (word, bit) = ((block / 64) as usize, 1u64 << (block % 64));
            if self.words[word] & bit == 0 {
                self.words[word] |= bit;
                self.set += 1;
            }
        }
    }

    pub fn clear(&mut self, block: u64) {
        if block >= self.blocks {
            return;
        }
        let (word, bit) = ((block / 64) as usize, 1u64 << (block % 64));
        if self.words[word] & bit != 0 {
            self.words[word] &= !bit;
            self.set -= 1;
        }
    }

    pub fn set_all(&mut self) {
        self.set_range(0, self.blocks);
    }

    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.set = 0;
    }

    /// Adds every bit of `other` (same device size) to this bitmap.
    pub fn merge(&mut self, other: &Bitmap) {
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
        self.set = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
    }

    /// The first set bit at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let mut word = (from / 64) as usize;
        let mut mask = !0u64 << (from % 64);
        while word < self.words.len() {
            let bits = self.words[word] & mask;
            if bits != 0 {
                let block = word as u64 * 64 + u64::from(bits.trailing_zeros());
                return (block < self.blocks).then_some(block);
            }
            word += 1;
            mask = !0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count_and_scan() {
        let mut b = Bitmap::new(130);
        b.set_range(60, 10);
        b.set_range(125, 100);
        assert_eq!(b.count(), 15);
        assert_eq!(b.next_set(0), Some(60));
        assert_eq!(b.next_set(70), Some(125));
        b.clear(60);
        assert_eq!(b.next_set(0), Some(61));
        assert!(!b.get(130));
        let again = Bitmap::from_words(130, b.words().to_vec());
        assert_eq!(again, b);
        b.clear_all();
        assert!(b.is_clear());
        assert_eq!(b.next_set(0), None);
    }

    #[test]
    fn from_words_drops_bits_past_the_end() {
        let b = Bitmap::from_words(3, vec![!0, !0]);
        assert_eq!(b.count(), 3);
        assert_eq!(b.words().len(), 1);
    }
}
