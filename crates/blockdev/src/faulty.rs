//! A fault-injecting wrapper for tests.
//!
//! [`FaultyDevice`] keeps every write that was not yet made durable (no `flush`
//! after it, no FUA) in a pending list instead of passing it down, so the inner
//! device always holds exactly the durable state. Reads see the pending writes
//! laid over the inner device, as a real disk's cache would show them. A
//! simulated [`crash`](FaultyDevice::crash) drops the pending list;
//! [`crash_keeping`](FaultyDevice::crash_keeping) lets a test decide for each
//! pending write whether it reached the platter, wholly or torn.
//!
//! Injected errors: `EIO` for reads or writes that touch chosen ranges, and for
//! flushes while [`fail_flushes`](FaultyDevice::fail_flushes) is on.

use std::io;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use crate::{check_range, BlockDevice};

/// Which requests an injected fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Reads.
    Read,
    /// Writes and discards.
    Write,
}

#[derive(Debug, Clone)]
enum Data {
    Bytes(Vec<u8>),
    Zeros(u64),
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::Zeros(n) => *n,
        }
    }

    /// The part `[from, to)` of this data (relative offsets).
    fn slice(&self, from: u64, to: u64) -> Data {
        match self {
            Data::Bytes(b) => Data::Bytes(b[from as usize..to as usize].to_vec()),
            Data::Zeros(_) => Data::Zeros(to - from),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    offset: u64,
    data: Data,
}

impl Pending {
    fn end(&self) -> u64 {
        self.offset + self.data.len()
    }
}

#[derive(Debug, Default)]
struct State {
    faults: Vec<(Range<u64>, IoKind)>,
    fail_flush: bool,
    pending: Vec<Pending>,
}

impl State {
    fn check_fault(&self, kind: IoKind, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let hit = self
            .faults
            .iter()
            .any(|(r, k)| *k == kind && r.start < end && offset < r.end && len > 0);
        if hit {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// Removes `[start, end)` from every pending write (a FUA write there has
    /// made it durable with newer data).
    fn supersede(&mut self, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.end() <= start || end <= p.offset {
                kept.push(p);
                continue;
            }
            if p.offset < start {
                kept.push(Pending {
                    offset: p.offset,
                    data: p.data.slice(0, start - p.offset),
                });
            }
            if end < p.end() {
                kept.push(Pending {
                    offset: end,
                    data: p.data.slice(end - p.offset, p.data.len()),
                });
            }
        }
        self.pending = kept;
    }
}

/// Wraps a device with injected errors and loss of unflushed writes.
#[derive(Debug)]
pub struct FaultyDevice<D> {
    inner: D,
    state: Mutex<State>,
}

impl<D: BlockDevice> FaultyDevice<D> {
    /// Wraps `inner`, whose current content counts as durable.
    pub fn new(inner: D) -> Self {
        FaultyDevice {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The wrapped device: the durable state.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes requests of `kind` that touch `range` fail with `EIO`.
    pub fn fail(&self, kind: IoKind, range: Range<u64>) {
        self.state().faults.push((range, kind));
    }

    /// Removes every injected range fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Makes `flush` fail with `EIO` (keeping the pending writes) while `on`.
    pub fn fail_flushes(&self, on: bool) {
        self.state().fail_flush = on;
    }

    /// Number of writes (and discards) not yet durable.
    pub fn pending_writes(&self) -> usize {
        self.state().pending.len()
    }

    /// A simulated crash: every write not yet durable is lost. The device stays
    /// usable, as after a reboot.
    pub fn crash(&self) -> io::Result<()> {
        self.crash_keeping(|_, _| 0)
    }

    /// A simulated crash where `kept(offset, len)` says how many leading bytes
    /// of each pending write (in submission order) reached the disk: 0 for a
    /// lost write, `len` for a complete one, anything between for a torn one.
    pub fn crash_keeping(&self, mut kept: impl FnMut(u64, u64) -> u64) -> io::Result<()> {
        let mut state = self.state();
        let pending = std::mem::take(&mut state.pending);
        for p in pending {
            let n = kept(p.offset, p.data.len()).min(p.data.len());
            if n > 0 {
                apply(
                    &self.inner,
                    &Pending {
                        offset: p.offset,
                        data: p.data.slice(0, n),
                    },
                )?;
            }
        }
        self.inner.flush()
    }
}

fn apply(inner: &impl BlockDevice, p: &Pending) -> io::Result<()> {
    match &p.data {
        Data::Bytes(b) => inner.write_at(b, p.offset, false),
        Data::Zeros(n) => inner.discard(p.offset, *n),
    }
}

impl<D: BlockDevice> BlockDevice for FaultyDevice<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let state = self.state();
        state.check_fault(IoKind::Read, offset, buf.len() as u64)?;
        self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        for p in &state.pending {
            let (from, to) = (p.offset.max(offset), p.end().min(end));
            if from >= to {
                continue;
            }
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match &p.data {
                Data::Bytes(b) => {
                    dst.copy_from_slice(&b[(from - p.offset) as usize..(to - p.offset) as usize])
                }
                Data::Zeros(_) => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let mut state = self.state();
        state.check_fault(IoKind::Write, offset, buf.len() as u64)?;
        if fua {
            self.inner.write_at(buf, offset, true)?;
            state.supersede(offset, offset + buf.len() as u64);
        } else if !buf.is_empty() {
            state.pending.push(Pending {
                offset,
                data: Data::Bytes(buf.to_vec()),
            });
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut state = self.state();
        if state.fail_flush {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for p in &state.pending {
            apply(&self.inner, p)?;
        }
        state.pending.clear();
        self.inner.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size(), offset, len)?;
        let mut state = self.state();
        state.check_fault(IoKind::Write, offset, len)?;
        if len > 0 {
            state.pending.push(Pending {
                offset,
                data: Data::Zeros(len),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryDevice;

    #[test]
    fn crash_drops_only_unflushed_writes() {
        let dev = FaultyDevice::new(MemoryDevice::new(64));
        dev.write_at(&[1; 8], 0, false).unwrap();
        dev.flush().unwrap();
        dev.write_at(&[2; 8], 4, false).unwrap();
        dev.write_at(&[3; 4], 20, true).unwrap();
        let mut buf = [0; 24];
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..12], &[1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(dev.pending_writes(), 1);
        dev.crash().unwrap();
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..12], &[1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
        assert_eq!(&buf[20..24], &[3; 4]);
    }

    #[test]
    fn fua_supersedes_older_pending_data() {
        let dev = FaultyDevice::new(MemoryDevice::new(16));
        dev.write_at(&[1; 16], 0, false).unwrap();
        dev.write_at(&[9; 4], 6, true).unwrap();
        let mut buf = [0; 16];
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 1, 1, 1, 1, 1, 1]);
        dev.crash().unwrap();
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn torn_write_keeps_a_prefix() {
        let dev = FaultyDevice::new(MemoryDevice::new(16));
        dev.write_at(&[5; 8], 0, false).unwrap();
        dev.crash_keeping(|_, _| 3).unwrap();
        assert_eq!(dev.inner().to_vec()[..8], [5, 5, 5, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn injected_errors() {
        let dev = FaultyDevice::new(MemoryDevice::new(4096));
        dev.fail(IoKind::Read, 512..1024);
        dev.fail(IoKind::Write, 2048..2049);
        let mut buf = [0; 512];
        assert!(dev.read_at(&mut buf, 0).is_ok());
        let e = dev.read_at(&mut buf, 1000).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(dev.write_at(&buf, 1000, false).is_ok());
        assert!(dev.write_at(&buf, 2000, false).is_err());
        assert!(dev.discard(2048, 1).is_err());
        dev.fail_flushes(true);
        assert!(dev.flush().is_err());
        assert_eq!(dev.pending_writes(), 1);
        dev.fail_flushes(false);
        dev.clear_faults();
        dev.flush().unwrap();
        assert_eq!(dev.pending_writes(), 0);
        assert!(dev.read_at(&mut buf, 1000).is_ok());
    }
}
