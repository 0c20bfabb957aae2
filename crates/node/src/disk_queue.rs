//! The backing disk's I/O, as the engine asks for it: writes, reads and flushes
//! that complete later with a `DiskDone` event carrying their token.
//!
//! Normally through an io_uring that one thread per resource owns: the thread
//! that runs the engine (FUSE, socket reader, tick) hands it the job without
//! blocking, and it submits, reaps and turns completions into `DiskDone`
//! events, several per wake-up under load. Before it, four disk threads each
//! took a job from a channel and did a blocking `pwrite`: a thread wake-up to
//! start every write and a sleep through it, about three and a half context
//! switches per write on each node.
//!
//! Where io_uring is refused (disabled by sysctl, or filtered by a container's
//! seccomp profile) the same jobs go to disk threads doing blocking calls, and
//! the daemon says so in its log.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use blockdev::{AlignedBuf, BlockDevice, FileDevice};
use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};

/// The backing disk the jobs use; empty while Diskless.
pub type DiskSlot = Arc<Mutex<Option<Arc<FileDevice>>>>;

/// A job's result: the data of a read.
pub type DiskResult = Result<Option<Bytes>, ()>;

/// Where finished jobs go (the daemon: a `DiskDone` event for the engine),
/// from the ring's or a disk thread; false once nobody listens any more.
pub type DoneSink = Arc<dyn Fn(u64, DiskResult) -> bool + Send + Sync>;

/// Submission queue entries: more than the engine ever has in flight at once
/// (the FUSE threads' requests plus a resync's reads); a full ring is flushed
/// with a submit and then waited on.
const RING_ENTRIES: u32 = 256;
/// Disk threads when io_uring is refused.
const DISK_THREADS: usize = 4;
/// `user_data` of the poll on the eventfd that wakes the ring's thread.
const WAKE: u64 = u64::MAX;

/// One request of the engine to the backing disk.
pub enum DiskJob {
    Write {
        token: u64,
        offset: u64,
        data: Bytes,
    },
    Read {
        token: u64,
        offset: u64,
        len: usize,
    },
    Flush {
        token: u64,
    },
}

impl DiskJob {
    fn token(&self) -> u64 {
        match self {
            DiskJob::Write { token, .. }
            | DiskJob::Read { token, .. }
            | DiskJob::Flush { token } => *token,
        }
    }

    /// Carries the job out with blocking calls.
    fn run_blocking(self, disk: &FileDevice) -> (u64, DiskResult) {
        match self {
            DiskJob::Write {
                token,
                offset,
                data,
            } => (
                token,
                disk.write_at(&data, offset, false)
                    .map(|_| None)
                    .map_err(|_| ()),
            ),
            DiskJob::Read { token, offset, len } => {
                let mut buf = vec![0u8; len];
                (
                    token,
                    disk.read_at(&mut buf, offset)
                        .map(|_| Some(Bytes::from(buf)))
                        .map_err(|_| ()),
                )
            }
            DiskJob::Flush { token } => (token, disk.flush().map(|_| None).map_err(|_| ())),
        }
    }
}

/// Where the engine's disk jobs go.
pub enum DiskQueue {
    Ring(DiskRing),
    Threads(Sender<DiskJob>),
}

impl DiskQueue {
    /// A ring if the kernel lets us have one, else disk threads (also when
    /// the daemon's environment sets `TANDEM_NO_IO_URING`, to compare both).
    pub fn start(name: &str, slot: DiskSlot, done: DoneSink) -> DiskQueue {
        let ring = match std::env::var_os("TANDEM_NO_IO_URING") {
            Some(_) => Err(io::Error::other("TANDEM_NO_IO_URING is set")),
            None => DiskRing::start(name, slot.clone(), done.clone()),
        };
        match ring {
            Ok(ring) => DiskQueue::Ring(ring),
            Err(e) => {
                crate::host::log(
                    name,
                    format!("io_uring refused ({e}): backing disk I/O on {DISK_THREADS} threads"),
                );
                DiskQueue::Threads(start_disk_threads(slot, done))
            }
        }
    }

    /// Starts `job`; its `DiskDone` comes later, from another thread.
    pub fn submit(&self, job: DiskJob) {
        match self {
            DiskQueue::Ring(ring) => ring.submit(job),
            DiskQueue::Threads(jobs) => {
                let _ = jobs.send(job);
            }
        }
    }
}

/// What a submitted job keeps alive until it completes. The descriptor the
/// kernel uses (`disk`) stays open even if the disk is detached meanwhile; the
/// memory it reads or fills stays put (heap memory that does not move).
enum InFlight {
    Write {
        token: u64,
        disk: Arc<FileDevice>,
        /// The data, or its aligned copy if it was not aligned in memory.
        data: Bytes,
        offset: u64,
    },
    Read {
        token: u64,
        disk: Arc<FileDevice>,
        buf: AlignedBuf,
        offset: u64,
    },
    Flush {
        token: u64,
        _disk: Arc<FileDevice>,
    },
    /// Finished without the kernel (no disk, or done blocking): carried
    /// through the ring by a no-op.
    Done {
        token: u64,
        result: DiskResult,
    },
}

type Completion = (u64, DiskResult);

impl InFlight {
    /// Its `DiskDone`, given the kernel's result. A short transfer (only at
    /// the end of a device, or on a signal) is finished with blocking calls.
    fn finish(self, res: i32) -> Completion {
        let done = usize::try_from(res).map_err(|_| ());
        match self {
            InFlight::Done { token, result } => (token, result),
            InFlight::Flush { token, .. } => (token, if res == 0 { Ok(None) } else { Err(()) }),
            InFlight::Write {
                token,
                disk,
                data,
                offset,
            } => {
                let result = done.and_then(|n| {
                    let n = n.min(data.len());
                    match &data[n..] {
                        [] => Ok(None),
                        tail => disk
                            .write_at(tail, offset + n as u64, false)
                            .map(|_| None)
                            .map_err(|_| ()),
                    }
                });
                (token, result)
            }
            InFlight::Read {
                token,
                disk,
                mut buf,
                offset,
            } => {
                let result = done.and_then(|n| {
                    let data = buf.as_mut_slice();
                    let n = n.min(data.len());
                    match &mut data[n..] {
                        [] => Ok(()),
                        tail => disk.read_at(tail, offset + n as u64).map_err(|_| ()),
                    }
                });
                // The buffer itself becomes the data: no copy.
                let result = result.map(|()| Some(Bytes::from_owner(buf)));
                (token, result)
            }
        }
    }
}

/// What the submitting threads hand to the ring's thread.
struct Inbox {
    jobs: Vec<(squeue::Entry, InFlight)>,
    /// The ring's thread found nothing to submit and is waiting in the
    /// kernel: the next job must wake it.
    asleep: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    /// An eventfd the ring's thread polls through the ring: written to wake it.
    wake: OwnedFd,
    stop: AtomicBool,
    slot: DiskSlot,
}

/// Backing disk I/O through an io_uring that one thread owns: it alone submits
/// and reaps, so the kernel runs completion work on that thread when it asks
/// for completions (`DEFER_TASKRUN`), never by interrupting the FUSE or socket
/// thread that asked for the job (which a ring shared by all of them costs: a
/// wake-up of the submitter for each completion, and a contended ring lock).
pub struct DiskRing {
    shared: Arc<Shared>,
}

impl DiskRing {
    fn start(name: &str, slot: DiskSlot, done: DoneSink) -> io::Result<DiskRing> {
        // SAFETY: eventfd(2) takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                jobs: Vec::new(),
                asleep: false,
            }),
            wake,
            stop: AtomicBool::new(false),
            slot,
        });
        let (ready, answer) = mpsc::channel();
        let thread_shared = shared.clone();
        thread::Builder::new()
            .name(format!("disk-{name}"))
            .spawn(move || {
                // A single-issuer ring belongs to the thread that creates it.
                match new_ring() {
                    Ok(ring) => {
                        let _ = ready.send(Ok(()));
                        RingThread {
                            ring,
                            shared: thread_shared,
                            done,
                            inflight: HashMap::new(),
                            last: 0,
                        }
                        .run();
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })?;
        answer
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the disk thread ended")))?;
        Ok(DiskRing { shared })
    }

    fn submit(&self, job: DiskJob) {
        let disk = self.shared.slot.lock().ok().and_then(|d| d.clone());
        let Some(disk) = disk else {
            // The engine sends no disk job while Diskless; a missing disk
            // fails the job.
            return self.shared.hand_done(job.token(), Err(()));
        };
        let alignment = disk.direct_alignment();
        let aligned = |offset: u64, len: usize| {
            alignment.is_none_or(|a| offset.is_multiple_of(a as u64) && len.is_multiple_of(a))
        };
        let a = alignment.unwrap_or(1);
        let fd = types::Fd(disk.as_raw_fd());
        let (entry, flight) = match job {
            DiskJob::Write {
                token,
                offset,
                data,
            } if !data.is_empty() && aligned(offset, data.len()) => {
                let data = if (data.as_ptr() as usize).is_multiple_of(a) {
                    data
                } else {
                    match AlignedBuf::copy_of(&data, a) {
                        Ok(copy) => Bytes::from_owner(copy),
                        Err(_) => return self.shared.hand_done(token, Err(())),
                    }
                };
                let entry = opcode::Write::new(fd, data.as_ptr(), data.len() as u32)
                    .offset(offset)
                    .build();
                let flight = InFlight::Write {
                    token,
                    disk,
                    data,
                    offset,
                };
                (entry, flight)
            }
            DiskJob::Read { token, offset, len } if len > 0 && aligned(offset, len) => {
                let Ok(mut buf) = AlignedBuf::new(len, a) else {
                    return self.shared.hand_done(token, Err(()));
                };
                let entry = opcode::Read::new(fd, buf.as_mut_slice().as_mut_ptr(), len as u32)
                    .offset(offset)
                    .build();
                let flight = InFlight::Read {
                    token,
                    disk,
                    buf,
                    offset,
                };
                (entry, flight)
            }
            DiskJob::Flush { token } => {
                let entry = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                (entry, InFlight::Flush { token, _disk: disk })
            }
            // Empty, or not aligned for direct I/O (the engine's jobs are whole
            // 4 KiB blocks, so never in practice): done here, blocking.
            job => {
                let (token, result) = job.run_blocking(&disk);
                return self.shared.hand_done(token, result);
            }
        };
        self.shared.hand(entry, flight);
    }
}

impl Drop for DiskRing {
    /// The ring's thread ends once the jobs in the kernel are done. It is not
    /// joined: it may be waiting for the engine's lock, which whoever drops the
    /// engine holds.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_up();
    }
}

/// A ring whose completion work waits for its thread to ask for it; a plain
/// one where the kernel lacks that (before 6.1).
fn new_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::new(RING_ENTRIES))
}

impl Shared {
    /// Gives one job to the ring's thread, waking it if it sleeps.
    fn hand(&self, entry: squeue::Entry, flight: InFlight) {
        let wake = {
            let Ok(mut inbox) = self.inbox.lock() else {
                return;
            };
            inbox.jobs.push((entry, flight));
            std::mem::take(&mut inbox.asleep)
        };
        if wake {
            self.wake_up();
        }
    }

    /// A job finished without the kernel: a no-op carries its result through
    /// the ring, as a job's completion must not run inside the engine call
    /// that submitted it.
    fn hand_done(&self, token: u64, result: DiskResult) {
        self.hand(opcode::Nop::new().build(), InFlight::Done { token, result });
    }

    fn wake_up(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to our eventfd. A
        // full counter (EAGAIN) already means "awake".
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// The thread that owns the ring.
struct RingThread {
    ring: IoUring,
    shared: Arc<Shared>,
    done: DoneSink,
    /// Jobs in the kernel, by `user_data`, and the last key given out.
    inflight: HashMap<u64, InFlight>,
    last: u64,
}

impl RingThread {
    /// Submits what the other threads hand over and runs the engine with each
    /// completion, several per wake-up under load, until stopped with nothing
    /// left in the kernel.
    fn run(mut self) {
        self.arm_wake();
        let mut jobs = Vec::new();
        let mut finished: Vec<(InFlight, i32)> = Vec::new();
        loop {
            {
                let Ok(mut inbox) = self.shared.inbox.lock() else {
                    return;
                };
                std::mem::swap(&mut inbox.jobs, &mut jobs);
                inbox.asleep = jobs.is_empty();
                if jobs.is_empty()
                    && self.inflight.is_empty()
                    && self.shared.stop.load(Ordering::Acquire)
                {
                    return;
                }
            }
            let wait = usize::from(jobs.is_empty());
            for (entry, flight) in jobs.drain(..) {
                self.last = (self.last + 1) % WAKE;
                self.inflight.insert(self.last, flight);
                self.push(&entry.user_data(self.last));
            }
            if let Err(e) = self.ring.submit_and_wait(wait) {
                if e.raw_os_error() != Some(libc::EINTR) {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            let mut woken = false;
            for cqe in self.ring.completion() {
                match cqe.user_data() {
                    WAKE => woken = true,
                    key => {
                        if let Some(flight) = self.inflight.remove(&key) {
                            finished.push((flight, cqe.result()));
                        }
                    }
                }
            }
            if woken {
                self.arm_wake();
            }
            for (flight, res) in finished.drain(..) {
                let (token, result) = flight.finish(res);
                (self.done)(token, result);
            }
        }
    }

    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the entry's buffer is owned by its `InFlight` (heap
            // memory that does not move), kept until its completion is taken
            // off the ring; the wake-up poll has no buffer.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            // Full: hand what is queued to the kernel, and try again.
            if self.ring.submit().is_err() {
                thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Empties the eventfd and polls it again: the next write wakes us.
    fn arm_wake(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from our
        // non-blocking eventfd (EAGAIN when it is already empty).
        unsafe { libc::read(self.shared.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        let fd = types::Fd(self.shared.wake.as_raw_fd());
        let poll = opcode::PollAdd::new(fd, libc::POLLIN as u32).build();
        self.push(&poll.user_data(WAKE));
    }
}

fn start_disk_threads(slot: DiskSlot, done: DoneSink) -> Sender<DiskJob> {
    let (jobs, queue) = mpsc::channel::<DiskJob>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..DISK_THREADS {
        let queue = queue.clone();
        let slot = slot.clone();
        let done = done.clone();
        let _ = thread::Builder::new()
            .name(format!("disk-{i}"))
            .spawn(move || loop {
                let job = match queue.lock() {
                    Ok(q) => q.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                // (The slot's lock is let go before the engine's is taken: the
                // engine takes the slot's to detach.)
                let disk = slot.lock().ok().and_then(|d| d.clone());
                let (token, result) = match disk {
                    Some(disk) => job.run_blocking(&disk),
                    // The engine sends no disk job while Diskless; a missing
                    // disk fails the job rather than the thread.
                    None => (job.token(), Err(())),
                };
                if !done(token, result) {
                    return;
                }
            });
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockdev::FileDeviceOptions;
    use std::sync::mpsc::Receiver;

    struct Bench {
        _dir: tempfile::TempDir,
        slot: DiskSlot,
        queue: DiskQueue,
        finished: Receiver<(u64, DiskResult)>,
    }

    /// A queue (ring or threads) on a fresh 1 MiB direct-I/O file.
    fn bench(ring: bool) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let options = FileDeviceOptions {
            direct: true,
            ..Default::default()
        };
        let disk = FileDevice::create(dir.path().join("disk"), 1 << 20, &options).unwrap();
        let slot: DiskSlot = Arc::new(Mutex::new(Some(Arc::new(disk))));
        let (tx, finished) = mpsc::channel();
        let tx = Mutex::new(tx);
        let done: DoneSink =
            Arc::new(move |token, result| tx.lock().unwrap().send((token, result)).is_ok());
        let queue = if ring {
            DiskQueue::Ring(DiskRing::start("test", slot.clone(), done).unwrap())
        } else {
            DiskQueue::Threads(start_disk_threads(slot.clone(), done))
        };
        Bench {
            _dir: dir,
            slot,
            queue,
            finished,
        }
    }

    impl Bench {
        fn next(&self) -> (u64, DiskResult) {
            self.finished
                .recv_timeout(Duration::from_secs(10))
                .expect("a job finished")
        }
    }

    fn jobs_finish_with_their_tokens_and_data(ring: bool) {
        let b = bench(ring);
        // (Not aligned in memory: the ring writes an aligned copy.)
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 1) as u8).collect();
        let write = DiskJob::Write {
            token: 1,
            offset: 4096,
            data: Bytes::from(data.clone()),
        };
        b.queue.submit(write);
        assert_eq!(b.next(), (1, Ok(None)));
        b.queue.submit(DiskJob::Flush { token: 2 });
        assert_eq!(b.next(), (2, Ok(None)));
        b.queue.submit(DiskJob::Read {
            token: 3,
            offset: 4096,
            len: 8192,
        });
        let (token, read) = b.next();
        assert_eq!(token, 3);
        assert_eq!(read.unwrap().unwrap().as_ref(), &data[..]);

        // Many at once (more than wake the ring's thread one by one): each
        // comes back once, and each block holds its own write.
        for token in 10..138u64 {
            let block = vec![token as u8; 4096];
            let offset = (token - 10) * 4096;
            b.queue.submit(DiskJob::Write {
                token,
                offset,
                data: Bytes::from_owner(AlignedBuf::copy_of(&block, 4096).unwrap()),
            });
        }
        let mut tokens: Vec<u64> = (10..138).map(|_| b.next().0).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (10..138).collect::<Vec<u64>>());
        b.queue.submit(DiskJob::Read {
            token: 200,
            offset: 0,
            len: 128 * 4096,
        });
        let (_, read) = b.next();
        let read = read.unwrap().unwrap();
        for (i, block) in read.chunks(4096).enumerate() {
            assert!(block.iter().all(|&x| x == 10 + i as u8), "block {i}");
        }

        // Without a disk (detached), a job fails rather than vanishing.
        *b.slot.lock().unwrap() = None;
        b.queue.submit(DiskJob::Flush { token: 300 });
        assert_eq!(b.next(), (300, Err(())));
    }

    #[test]
    fn the_ring_finishes_every_job_with_its_token_and_data() {
        jobs_finish_with_their_tokens_and_data(true);
    }

    #[test]
    fn the_disk_threads_finish_every_job_with_its_token_and_data() {
        jobs_finish_with_their_tokens_and_data(false);
    }
}
