//! The slot map: which node holds which slot.
//!
//! The `slot_map` system file's data. In the old format it is an array of
//! little-endian `u16` node numbers, one per slot, `0xFFFF` for an empty slot. With
//! `extended-slotmap` each slot is 8 bytes: a valid byte, three reserved bytes and
//! a little-endian `u32` node number; the file's size decides how many slots there
//! are.

use crate::codec::{put_le16, put_le32, put_u8, Decoder};
use crate::error::DecodeResult;

/// Marker of an empty slot in the old format.
pub const INVALID_SLOT: u16 = 0xFFFF;
/// Size of one extended slot.
pub const EXTENDED_SLOT_SIZE: usize = 8;

/// A decoded slot map: for each slot, the node in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotMap {
    /// `slots[i]` is the node holding slot `i`, if any.
    pub slots: Vec<Option<u32>>,
    /// Whether it is in the extended format.
    pub extended: bool,
}

impl SlotMap {
    /// Decodes `num_slots` slots from the file data `buf` (first block at `block`).
    pub fn decode(buf: &[u8], block: u64, num_slots: u16, extended: bool) -> DecodeResult<SlotMap> {
        let d = Decoder::new(buf, block, "slot_map");
        let mut slots = Vec::with_capacity(num_slots.into());
        for i in 0..usize::from(num_slots) {
            if extended {
                let valid = d.u8(i * EXTENDED_SLOT_SIZE, "es_valid")?;
                let node = d.le32(i * EXTENDED_SLOT_SIZE + 4, "es_node_num")?;
                slots.push((valid != 0).then_some(node));
            } else {
                let node = d.le16(i * 2, "sm_slots")?;
                slots.push((node != INVALID_SLOT).then_some(u32::from(node)));
            }
        }
        Ok(SlotMap { slots, extended })
    }

    /// Encodes into `buf` (the file's data, zeroed by the caller).
    pub fn encode(&self, buf: &mut [u8]) {
        for (i, s) in self.slots.iter().enumerate() {
            if self.extended {
                put_u8(buf, i * EXTENDED_SLOT_SIZE, u8::from(s.is_some()));
                put_le32(buf, i * EXTENDED_SLOT_SIZE + 4, s.unwrap_or(0));
            } else {
                put_le16(buf, i * 2, s.map_or(INVALID_SLOT, |n| n as u16));
            }
        }
    }

    /// Bytes the map takes.
    pub fn byte_len(num_slots: u16, extended: bool) -> usize {
        usize::from(num_slots) * if extended { EXTENDED_SLOT_SIZE } else { 2 }
    }
}
