//! A sparse in-memory device: chunks are allocated on first write, so a large
//! device costs only what was written.

use std::collections::HashMap;
use std::io;
use std::sync::RwLock;

use crate::{check_range, BlockDevice};

const CHUNK: usize = 64 * 1024;

/// An in-memory [`BlockDevice`]; unwritten and discarded bytes read as zeros.
/// Everything written is "durable" (there is no crash to lose it; wrap it in a
/// [`crate::FaultyDevice`] for that).
#[derive(Debug)]
pub struct MemoryDevice {
    size: u64,
    chunks: RwLock<HashMap<u64, Box<[u8]>>>,
}

impl MemoryDevice {
    /// A zeroed device of `size` bytes.
    pub fn new(size: u64) -> Self {
        MemoryDevice {
            size,
            chunks: RwLock::new(HashMap::new()),
        }
    }

    /// A device holding `data`.
    pub fn from_bytes(data: &[u8]) -> Self {
        let dev = MemoryDevice::new(data.len() as u64);
        dev.write_at(data, 0, false)
            .expect("a write inside the device cannot fail");
        dev
    }

    /// The whole content (for tests; allocates `size` bytes).
    pub fn to_vec(&self) -> Vec<u8> {
        let len = usize::try_from(self.size).expect("device larger than memory");
        let mut out = vec![0; len];
        self.read_at(&mut out, 0)
            .expect("a read inside the device cannot fail");
        out
    }

    /// Bytes held in memory (allocated chunks).
    pub fn allocated(&self) -> u64 {
        let chunks = self.chunks.read().unwrap_or_else(|e| e.into_inner());
        (chunks.len() * CHUNK) as u64
    }
}

/// Splits `len` bytes at `offset` into (chunk index, offset in chunk, length,
/// offset in the request).
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let index = pos / CHUNK as u64;
        let within = (pos % CHUNK as u64) as usize;
        let n = (CHUNK - within).min(len - done);
        let piece = (index, within, n, done);
        done += n;
        Some(piece)
    })
}

impl BlockDevice for MemoryDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let chunks = self.chunks.read().unwrap_or_else(|e| e.into_inner());
        for (index, within, n, at) in pieces(offset, buf.len()) {
            let dst = &mut buf[at..at + n];
            match chunks.get(&index) {
                Some(chunk) => dst.copy_from_slice(&chunk[within..within + n]),
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, _fua: bool) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut chunks = self.chunks.write().unwrap_or_else(|e| e.into_inner());
        for (index, within, n, at) in pieces(offset, buf.len()) {
            let chunk = chunks
                .entry(index)
                .or_insert_with(|| vec![0; CHUNK].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(&buf[at..at + n]);
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size, offset, len)?;
        let mut chunks = self.chunks.write().unwrap_or_else(|e| e.into_inner());
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let index = pos / CHUNK as u64;
            let within = (pos % CHUNK as u64) as usize;
            let n = ((CHUNK - within) as u64).min(end - pos) as usize;
            if within == 0 && n == CHUNK {
                chunks.remove(&index);
            } else if let Some(chunk) = chunks.get_mut(&index) {
                chunk[within..within + n].fill(0);
            }
            pos += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_reads_zero_and_writes_span_chunks() {
        let dev = MemoryDevice::new(1 << 30);
        let mut buf = vec![1u8; 100];
        dev.read_at(&mut buf, 12345).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        dev.write_at(&data, CHUNK as u64 - 7, false).unwrap();
        let mut back = vec![0u8; data.len()];
        dev.read_at(&mut back, CHUNK as u64 - 7).unwrap();
        assert_eq!(back, data);
        assert_eq!(dev.allocated(), 5 * CHUNK as u64);
        dev.discard(0, 1 << 30).unwrap();
        assert_eq!(dev.allocated(), 0);
        dev.read_at(&mut back, CHUNK as u64 - 7).unwrap();
        assert!(back.iter().all(|&b| b == 0));
    }

    #[test]
    fn out_of_range_is_refused() {
        let dev = MemoryDevice::new(4096);
        assert!(dev.write_at(&[1; 2], 4095, false).is_err());
        assert!(dev.read_at(&mut [0; 1], 4096).is_err());
        assert!(dev.discard(4000, 100).is_err());
        assert!(dev.allocated() == 0);
    }
}
