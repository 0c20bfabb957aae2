//! Property tests: every implementation behaves like a plain array of bytes, and
//! a crash of a `FaultyDevice` loses exactly the writes that were not durable.

use blockdev::{BlockDevice, FaultyDevice, FileDevice, FileDeviceOptions, MemoryDevice};
use proptest::prelude::*;

const SIZE: u64 = 256 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        len: usize,
        fill: u8,
        fua: bool,
    },
    Discard {
        offset: u64,
        len: u64,
    },
    Flush,
    Read {
        offset: u64,
        len: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Offsets cluster near 4 KiB boundaries so unaligned read-modify-write and
    // chunk edges are exercised.
    let offset = prop_oneof![
        0..SIZE,
        (0..SIZE / 4096).prop_map(|b| b * 4096),
        (1..SIZE / 4096, 0..8u64).prop_map(|(b, d)| b * 4096 - d),
    ];
    prop_oneof![
        4 => (offset.clone(), 0..20_000usize, any::<u8>(), any::<bool>())
            .prop_map(|(offset, len, fill, fua)| Op::Write { offset, len, fill, fua }),
        1 => (offset.clone(), 0..70_000u64).prop_map(|(offset, len)| Op::Discard { offset, len }),
        1 => Just(Op::Flush),
        2 => (offset, 0..20_000usize).prop_map(|(offset, len)| Op::Read { offset, len }),
    ]
}

/// Data of a write: varies with position so misplaced bytes show.
fn pattern(offset: u64, len: usize, fill: u8) -> Vec<u8> {
    (0..len)
        .map(|i| fill ^ ((offset + i as u64) as u8).rotate_left(3))
        .collect()
}

/// Applies `op` to the device and to the model; returns the read data, if any.
fn run(dev: &dyn BlockDevice, model: &mut [u8], op: &Op) -> Option<Vec<u8>> {
    let size = model.len() as u64;
    let inside = |offset: u64, len: u64| offset + len <= size;
    match *op {
        Op::Write {
            offset,
            len,
            fill,
            fua,
        } => {
            let data = pattern(offset, len, fill);
            let r = dev.write_at(&data, offset, fua);
            if inside(offset, len as u64) {
                r.unwrap();
                model[offset as usize..offset as usize + len].copy_from_slice(&data);
            } else {
                assert!(r.is_err());
            }
            None
        }
        Op::Discard { offset, len } => {
            let r = dev.discard(offset, len);
            if inside(offset, len) {
                r.unwrap();
                model[offset as usize..(offset + len) as usize].fill(0);
            } else {
                assert!(r.is_err());
            }
            None
        }
        Op::Flush => {
            dev.flush().unwrap();
            None
        }
        Op::Read { offset, len } => {
            let mut buf = vec![0xEE; len];
            let r = dev.read_at(&mut buf, offset);
            if inside(offset, len as u64) {
                r.unwrap();
                assert_eq!(buf, model[offset as usize..offset as usize + len]);
                Some(buf)
            } else {
                assert!(r.is_err());
                None
            }
        }
    }
}

fn whole(dev: &dyn BlockDevice) -> Vec<u8> {
    let mut buf = vec![0; dev.size() as usize];
    dev.read_at(&mut buf, 0).unwrap();
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Memory, buffered file and O_DIRECT file devices give the same answers to
    /// the same requests, and all equal a plain array.
    #[test]
    fn memory_and_file_devices_are_equivalent(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let memory = MemoryDevice::new(SIZE);
        let buffered = FileDevice::create(dir.path().join("b"), SIZE, &FileDeviceOptions::default()).unwrap();
        let direct = FileDevice::create(
            dir.path().join("d"),
            SIZE,
            &FileDeviceOptions { direct: true, ..Default::default() },
        ).unwrap();
        let mut models = vec![vec![0u8; SIZE as usize]; 3];
        for op in &ops {
            let a = run(&memory, &mut models[0], op);
            let b = run(&buffered, &mut models[1], op);
            let c = run(&direct, &mut models[2], op);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &c);
        }
        let m = whole(&memory);
        prop_assert!(m == whole(&buffered));
        prop_assert!(m == whole(&direct));
        prop_assert!(m == models[0]);
    }

    /// Before a crash a FaultyDevice reads like the array; after it, it holds
    /// exactly what was flushed or written with FUA.
    #[test]
    fn crash_drops_only_unflushed_writes(ops in prop::collection::vec(op(), 1..40)) {
        let dev = FaultyDevice::new(MemoryDevice::new(SIZE));
        let mut visible = vec![0u8; SIZE as usize];
        let mut durable = vec![0u8; SIZE as usize];
        // Byte ranges written since the last flush (visible but not durable),
        // except where a later FUA write made them durable.
        for op in &ops {
            run(&dev, &mut visible, op);
            match *op {
                Op::Flush => durable.copy_from_slice(&visible),
                Op::Write { offset, len, fua: true, .. } if offset + len as u64 <= SIZE => {
                    let r = offset as usize..offset as usize + len;
                    durable[r.clone()].copy_from_slice(&visible[r]);
                }
                _ => {}
            }
        }
        prop_assert!(dev.inner().to_vec() == durable, "inner device is not the durable state");
        dev.crash().unwrap();
        prop_assert_eq!(dev.pending_writes(), 0);
        prop_assert!(whole(&dev) == durable);
    }
}
