//! The meta-data verbs over a [`MetaDevice`]: the sequence of block reads and
//! writes for create-md, dump-md, apply-al and wipe-md. Questions to the user and
//! all printing stay with the caller; these functions only decide and do I/O.
//!
//! All I/O is in whole, 4 KiB-aligned blocks, so a block device opened with
//! `O_DIRECT` works as well as a plain file or a `Vec<u8>`.

use std::io;

use thiserror::Error;

use crate::activity_log::{self, Replay, ReplayError};
use crate::bitmap::{AppliedExtents, Bitmap};
use crate::detect::{self, Existing, PROBE_BYTES};
use crate::layout::{superblock_offset, Layout, LayoutError, BLOCK_SIZE, MIN_DEVICE_BYTES};
use crate::superblock::{self, mdf, DecodeError, LayoutMismatch, Superblock};
use crate::text::used_bitmap_bytes;

/// A device holding internal meta-data: whole-block positioned I/O and a size.
pub trait MetaDevice {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset` (both multiples of 4096 where the
    /// callers here are concerned).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes the writes so far durable.
    fn flush(&mut self) -> io::Result<()>;
}

/// An in-memory device, for tests.
impl MetaDevice for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = span(offset, buf.len(), self.len())?;
        buf.copy_from_slice(&self[range]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let range = span(offset, buf.len(), self.len())?;
        self[range].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn span(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    let start =
        usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    let end = start.checked_add(len).filter(|&e| e <= size);
    end.map(|end| start..end)
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

/// Errors of the meta-data verbs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("device is only {bytes} bytes. That's not enough.")]
    DeviceTooSmall { bytes: u64 },
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("No valid meta data found")]
    NoValidMetaData,
}

/// Why the superblock at the end of the device is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    Decode(DecodeError),
    Layout(LayoutMismatch),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Decode(e) => e.fmt(f),
            Invalid::Layout(e) => e.fmt(f),
        }
    }
}

/// Valid meta-data read from a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The superblock, `effective_size` clipped to what the device can hold.
    pub superblock: Superblock,
    pub layout: Layout,
    /// The stored `effective_size` when it was too big and got clipped.
    pub clipped_from: Option<u64>,
    /// The `md_size_sect` the layout expects, when the stored one differs
    /// (tolerated, as drbdmeta tolerates it for v09).
    pub strange_md_size: Option<u32>,
}

fn read_vec(dev: &mut dyn MetaDevice, offset: u64, len: u64) -> Result<Vec<u8>, MetaError> {
    let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let mut buf = vec![0u8; len];
    dev.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// Reads and checks the superblock at the end of the device.
pub fn open(dev: &mut dyn MetaDevice) -> Result<Result<Opened, Invalid>, MetaError> {
    let size = dev.size();
    if size < MIN_DEVICE_BYTES {
        return Err(MetaError::DeviceTooSmall { bytes: size });
    }
    let block = read_vec(dev, superblock_offset(size), BLOCK_SIZE)?;
    let mut sb = match Superblock::decode(&block) {
        Ok(sb) => sb,
        Err(e) => return Ok(Err(Invalid::Decode(e))),
    };
    let (layout, strange_md_size) = match sb.check_layout(size) {
        Ok(x) => x,
        Err(e) => return Ok(Err(Invalid::Layout(e))),
    };
    let clipped = sb.clipped_effective_size(&layout);
    let clipped_from = (clipped != sb.effective_size).then_some(sb.effective_size);
    sb.effective_size = clipped;
    Ok(Ok(Opened {
        superblock: sb,
        layout,
        clipped_from,
        strange_md_size,
    }))
}

/// Reads the used part of the bitmap (what the agreed size covers).
pub fn read_bitmap(dev: &mut dyn MetaDevice, opened: &Opened) -> Result<Bitmap, MetaError> {
    let len = used_bitmap_bytes(&opened.superblock, &opened.layout);
    let bytes = read_vec(dev, opened.layout.bm_offset, len)?;
    Ok(Bitmap::new(bytes, opened.superblock.max_peers))
}

/// What create-md would overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCheck {
    pub layout: Layout,
    /// Valid v09 meta-data already at the end of the device.
    pub existing_md: Option<Opened>,
    /// Older DRBD meta-data magic at the superblock position (v08), not convertible here.
    pub other_md_magic: Option<u32>,
    /// What the first 68 KiB look like.
    pub existing_data: Existing,
}

/// Looks at the device before create-md: the new layout, existing meta-data, and
/// existing data at the start of the device.
pub fn check_create(dev: &mut dyn MetaDevice, max_peers: u32) -> Result<CreateCheck, MetaError> {
    let size = dev.size();
    if size < MIN_DEVICE_BYTES {
        return Err(MetaError::DeviceTooSmall { bytes: size });
    }
    let layout = Layout::internal_default(size, max_peers)?;
    let existing_md = open(dev)?.ok();
    let other_md_magic = if existing_md.is_none() {
        let block = read_vec(dev, layout.md_offset, BLOCK_SIZE)?;
        superblock::magic_of(&block).filter(|m| {
            [
                superblock::MAGIC_V08,
                superblock::MAGIC_V84_UNCLEAN,
                superblock::MAGIC_V09,
            ]
            .contains(m)
        })
    } else {
        None
    };
    let start = read_vec(dev, 0, PROBE_BYTES as u64)?;
    Ok(CreateCheck {
        layout,
        existing_md,
        other_md_magic,
        existing_data: detect::probe(&start),
    })
}

/// Writes fresh meta-data: the activity log (every block an initialized
/// transaction), an all-zero bitmap, then the superblock. `device_uuid` is kept
/// in the new superblock (drbdadm keeps the old one, or makes a random one).
pub fn create(
    dev: &mut dyn MetaDevice,
    layout: &Layout,
    device_uuid: u64,
) -> Result<Superblock, MetaError> {
    dev.write_at(
        layout.al_offset,
        &activity_log::initialized_area(layout.al_blocks()),
    )?;
    write_zeros(dev, layout.bm_offset, layout.bm_bytes)?;
    let mut sb = Superblock::new_for(layout);
    sb.device_uuid = device_uuid;
    write_superblock(dev, layout, &sb)?;
    Ok(sb)
}

/// Writes `len` zero bytes at `offset`, in chunks of at most 1 MiB.
fn write_zeros(dev: &mut dyn MetaDevice, offset: u64, len: u64) -> Result<(), MetaError> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        dev.write_at(offset + done, &zeros[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// Writes the superblock block and flushes.
pub fn write_superblock(
    dev: &mut dyn MetaDevice,
    layout: &Layout,
    sb: &Superblock,
) -> Result<(), MetaError> {
    dev.write_at(layout.md_offset, &sb.encode())?;
    dev.flush()?;
    Ok(())
}

/// Zeroes the superblock block (what wipe-md does; the AL and bitmap stay).
pub fn wipe(dev: &mut dyn MetaDevice) -> Result<(), MetaError> {
    let at = superblock_offset(dev.size());
    dev.write_at(at, &[0u8; BLOCK_SIZE as usize])?;
    dev.flush()?;
    Ok(())
}

/// What apply-al did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyAl {
    /// The replay, or why it failed (a failure is ignored when the device was not
    /// a Primary; see [`apply_al`]).
    pub replay: Result<Replay, ReplayError>,
    /// The bitmap changes, when the device was Primary and extents were hot.
    pub applied: Option<AppliedExtents>,
    /// The activity log was re-initialized.
    pub reinitialized_al: bool,
}

/// Replays the activity log into the bitmap, as drbdmeta's apply-al does for v09:
/// hot extents are marked out of sync only if the device was Primary
/// (`MDF_PRIMARY_IND`); the log is re-initialized when it held updates or could
/// not be read; the superblock is rewritten with `MDF_AL_CLEAN`. A log that cannot be read on a
/// Primary is an error ([`ApplyAlError`]): nothing is written then.
pub fn apply_al(dev: &mut dyn MetaDevice, opened: &Opened) -> Result<ApplyAl, ApplyAlError> {
    let layout = &opened.layout;
    let sb = &opened.superblock;
    let area = read_vec(dev, layout.al_offset, layout.al_bytes())?;
    let replay = activity_log::replay(&area, sb.al_stripes, sb.al_stripe_size_4k);
    let primary = sb.flags & mdf::PRIMARY_IND != 0;
    let mut reinit = false;
    if let Err(e) = &replay {
        if primary {
            return Err(ApplyAlError::Replay(e.clone()));
        }
        reinit = true;
    }
    let mut applied = None;
    if let Ok(r) = &replay {
        if r.updates > 0 && primary {
            let mut bitmap = read_bitmap(dev, opened)?;
            let result = bitmap.set_extents(&r.hot_extents);
            if !r.hot_extents.is_empty() {
                dev.write_at(layout.bm_offset, bitmap.as_bytes())?;
            }
            applied = Some(result);
        }
        reinit |= r.updates > 0;
    }
    if reinit {
        dev.write_at(
            layout.al_offset,
            &activity_log::initialized_area(layout.al_blocks()),
        )?;
    }
    // drbdmeta rewrites the superblock unless it is clean v08 meta-data, so for
    // v09 always.
    let mut clean = sb.clone();
    clean.flags |= mdf::AL_CLEAN;
    write_superblock(dev, layout, &clean)?;
    Ok(ApplyAl {
        replay,
        applied,
        reinitialized_al: reinit,
    })
}

/// apply-al failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApplyAlError {
    #[error("{0}")]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Replay(ReplayError),
}

impl From<io::Error> for ApplyAlError {
    fn from(e: io::Error) -> Self {
        ApplyAlError::Meta(MetaError::Io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity_log::{block_of_transaction, update_transactions};

    fn device(bytes: usize) -> Vec<u8> {
        vec![0u8; bytes]
    }

    #[test]
    fn create_then_open() {
        let mut dev = device(64 << 20);
        let check = check_create(&mut dev, 2).unwrap();
        assert_eq!(check.existing_data, Existing::Nothing);
        assert!(check.existing_md.is_none());
        create(&mut dev, &check.layout, 0x1234).unwrap();
        let opened = open(&mut dev).unwrap().unwrap();
        assert_eq!(opened.superblock.device_uuid, 0x1234);
        assert_eq!(opened.layout, check.layout);
        assert!(check_create(&mut dev, 2).unwrap().existing_md.is_some());
        wipe(&mut dev).unwrap();
        assert!(open(&mut dev).unwrap().is_err());
    }

    #[test]
    fn apply_al_marks_hot_extents_on_a_primary() {
        let mut dev = device(64 << 20);
        let layout = check_create(&mut dev, 1).unwrap().layout;
        let mut sb = create(&mut dev, &layout, 1).unwrap();
        sb.flags = mdf::PRIMARY_IND; // crashed Primary: AL not clean
        sb.effective_size = layout.max_usable_sectors;
        write_superblock(&mut dev, &layout, &sb).unwrap();
        for tr in update_transactions(7, &[2, 5], 61) {
            let blk = u64::from(block_of_transaction(tr.tr_number, 1, 8));
            dev.write_at(layout.al_offset + blk * 4096, &tr.encode())
                .unwrap();
        }
        let opened = open(&mut dev).unwrap().unwrap();
        let done = apply_al(&mut dev, &opened).unwrap();
        let applied = done.applied.unwrap();
        assert_eq!(applied.newly_set_bits, 2 * 1024);
        assert!(done.reinitialized_al);
        let opened = open(&mut dev).unwrap().unwrap();
        assert_ne!(opened.superblock.flags & mdf::AL_CLEAN, 0);
        let bm = read_bitmap(&mut dev, &opened).unwrap();
        assert!(bm.get(0, 2 * 1024) && bm.get(0, 5 * 1024 + 1023) && !bm.get(0, 3 * 1024));
        assert_eq!(bm.count_peer(0), 2048);
        // The log is clean again: a second run changes nothing.
        let again = apply_al(&mut dev, &opened).unwrap();
        assert!(again.applied.is_none() && !again.reinitialized_al);
    }

    #[test]
    fn small_device_is_refused() {
        let mut dev = device(4096);
        assert!(matches!(
            open(&mut dev),
            Err(MetaError::DeviceTooSmall { bytes: 4096 })
        ));
    }
}
