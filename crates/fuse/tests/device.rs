//! The device file itself, without a loop device: I/O, fsync → flush, the gate,
//! and the shutdown path when a request is stuck in the device.

mod common;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use blockdev::{BlockDevice, FaultyDevice, MemoryDevice};
use fuse::{DeviceMount, OpenGate, ServeOptions};

/// The tests here run one at a time: a child process spawned by one test
/// inherits (until exec closes it) the other's open device file, and that close
/// sends FUSE `flush`, which would make "not durable before fsync" flaky.
static SERIAL: Mutex<()> = Mutex::new(());

/// What each test here starts from: the others' FUSE mounts kept apart, and an
/// empty directory (`dir/fuse`) to serve on.
fn mount_point() -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_privileged();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fuse");
    std::fs::create_dir(&mnt).unwrap();
    (serial, dir, mnt)
}

#[test]
fn file_io_fsync_and_gate() {
    let (_serial, _dir, mnt) = mount_point();
    let dev = Arc::new(FaultyDevice::new(MemoryDevice::new(8 << 20)));
    let gate = OpenGate::new(true);
    let mount =
        DeviceMount::serve(dev.clone(), &mnt, gate.clone(), &ServeOptions::default()).unwrap();
    // PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE, which some sandboxes drop.
    assert_eq!(mount.io_flusher(), common::has_cap_sys_resource());
    assert!(mount.connection().is_some());

    let meta = std::fs::metadata(mount.file()).unwrap();
    assert_eq!(meta.len(), 8 << 20);
    let names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["device"]);

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mount.file())
        .unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    file.write_all_at(&data, 12345).unwrap();
    let mut back = vec![0; data.len()];
    file.read_exact_at(&mut back, 12345).unwrap();
    assert!(back == data);
    // Not yet durable: only fsync makes it so.
    assert!(dev.pending_writes() > 0);
    file.sync_data().unwrap();
    assert_eq!(dev.pending_writes(), 0);
    let mut durable = vec![0; data.len()];
    dev.inner().read_at(&mut durable, 12345).unwrap();
    assert!(durable == data);
    // Reads at the end are short; writes past it fail.
    let mut tail = vec![0; 100];
    assert_eq!(file.read_at(&mut tail, (8 << 20) - 10).unwrap(), 10);
    assert!(file.write_at(&[1], 8 << 20).is_err());
    // Punching a hole discards.
    // SAFETY: fallocate on an open descriptor with integer arguments.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            12345,
            1000,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    file.read_exact_at(&mut back[..1000], 12345).unwrap();
    assert!(back[..1000].iter().all(|&b| b == 0));
    // Truncating a device is refused.
    assert!(file.set_len(4096).is_err());

    // The gate: opens fail with EMEDIUMTYPE, and so does I/O on the handle
    // opened before.
    gate.refuse();
    let err = OpenOptions::new()
        .read(true)
        .open(mount.file())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMEDIUMTYPE), "{err}");
    assert_eq!(err.to_string(), "Wrong medium type (os error 124)");
    let err = file.read_at(&mut back, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMEDIUMTYPE));
    assert!(file.write_at(&data, 0).is_err());
    gate.open();
    file.read_exact_at(&mut back, 12345 + 1000).unwrap();
    drop(file);

    let report = mount.shutdown().unwrap();
    assert!(!report.lazy_unmount && !report.aborted, "{report:?}");
    assert!(!common::mounted(&mnt));
}

/// A device whose reads block while `stalled`, and count how many started.
struct StallingDevice {
    inner: MemoryDevice,
    stalled: Mutex<bool>,
    wake: Condvar,
    reads: AtomicUsize,
}

impl StallingDevice {
    fn release(&self) {
        *self.stalled.lock().unwrap() = false;
        self.wake.notify_all();
    }
}

impl BlockDevice for StallingDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let guard = self.stalled.lock().unwrap();
        // Bounded, so a failing test cannot leave a thread behind for long.
        let _unused = self
            .wake
            .wait_timeout_while(guard, Duration::from_secs(30), |s| *s)
            .unwrap();
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.inner.write_at(buf, offset, fua)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
}

#[test]
fn shutdown_aborts_a_stuck_request() {
    let (_serial, _dir, mnt) = mount_point();
    let dev = Arc::new(StallingDevice {
        inner: MemoryDevice::new(1 << 20),
        stalled: Mutex::new(true),
        wake: Condvar::new(),
        reads: AtomicUsize::new(0),
    });
    let options = ServeOptions {
        grace: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let mount = DeviceMount::serve(dev.clone(), &mnt, OpenGate::new(true), &options).unwrap();
    let mut reader = Command::new("timeout")
        .args(["60", "dd", "bs=4096", "count=1", "of=/dev/null"])
        .arg(format!("if={}", mount.file().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while dev.reads.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "read never arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The reader is now stuck in the kernel waiting on our stuck device.
    let started = Instant::now();
    let report = mount.shutdown().unwrap();
    let took = started.elapsed();
    assert!(report.lazy_unmount, "{report:?}");
    assert!(report.aborted, "{report:?}");
    assert!(report.threads_left, "{report:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // The reader was released with an error, long before its timeout.
    let status = loop {
        if let Some(s) = reader.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "reader still stuck"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    io::Read::read_to_string(reader.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    eprintln!("reader after abort: {status}: {}", stderr.trim());
    assert!(!status.success());
    assert!(!common::mounted(&mnt));
    dev.release();
}

/// A device whose writes complete on threads of their own, each held until
/// `hold` writes are in flight together (or 10 s have passed); a write at
/// `poison` fails with EIO.
struct LaterDevice {
    inner: Arc<MemoryDevice>,
    in_flight: Arc<(Mutex<usize>, Condvar)>,
    most: Arc<AtomicUsize>,
    hold: usize,
    poison: u64,
}

impl BlockDevice for LaterDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.inner.write_at(buf, offset, fua)
    }
    fn write_then(&self, buf: &[u8], offset: u64, fua: bool, done: blockdev::WriteDone) {
        let (inner, in_flight, most) = (
            self.inner.clone(),
            self.in_flight.clone(),
            self.most.clone(),
        );
        let (hold, poison, data) = (self.hold, self.poison, buf.to_vec());
        std::thread::spawn(move || {
            let (count, changed) = &*in_flight;
            let mut n = count.lock().unwrap();
            *n += 1;
            most.fetch_max(*n, Ordering::SeqCst);
            changed.notify_all();
            let (mut n, _) = changed
                .wait_timeout_while(n, Duration::from_secs(10), |n| {
                    most.load(Ordering::SeqCst) < hold && *n < hold
                })
                .unwrap();
            *n -= 1;
            drop(n);
            done(if offset == poison {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                inner.write_at(&data, offset, fua)
            });
        });
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
}

#[test]
fn writes_are_answered_from_the_thread_that_completes_them() {
    let (_serial, _dir, mnt) = mount_point();
    const WRITERS: usize = 6;
    let dev = Arc::new(LaterDevice {
        inner: Arc::new(MemoryDevice::new(1 << 20)),
        in_flight: Arc::new((Mutex::new(0), Condvar::new())),
        most: Arc::new(AtomicUsize::new(0)),
        hold: WRITERS,
        poison: 5 * 4096,
    });
    // Two FUSE threads: a thread waiting for each write would hold at most two.
    let options = ServeOptions {
        threads: 2,
        ..ServeOptions::default()
    };
    let mount = DeviceMount::serve(dev.clone(), &mnt, OpenGate::new(true), &options).unwrap();
    let path = mount.file().to_owned();
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let file = OpenOptions::new().write(true).open(&path).unwrap();
                file.write_all_at(&[i as u8 + 1; 4096], i * 4096)
                    .map_err(|e| e.raw_os_error())
            })
        })
        .collect();
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(
        dev.most.load(Ordering::SeqCst),
        WRITERS,
        "writes in flight together"
    );
    for (i, result) in results.iter().enumerate() {
        if i == 5 {
            assert_eq!(*result, Err(Some(libc::EIO)));
        } else {
            assert_eq!(*result, Ok(()));
            let mut back = [0u8; 4096];
            dev.inner.read_at(&mut back, i as u64 * 4096).unwrap();
            assert!(back.iter().all(|&b| b == i as u8 + 1));
        }
    }
    mount.shutdown().unwrap();
}
