//! Property test: whatever a peer sends (any message the wire decoder
//! accepts, in any order), interleaved with disk completions, ticks,
//! application I/O and reconnects, the engine never panics and never counts
//! more out-of-sync blocks than the device has.

mod common;

use bytes::Bytes;
use common::handshake;
use proptest::prelude::*;
use replication::message::{decode, encode, Message};
use replication::uuids::JUST_CREATED;
use replication::{Action, Config, DiskState, Event, Resource, Role, VerifyAlg};

const BLOCKS: u64 = 64;

/// Block numbers: mostly on the device or just past it, sometimes anything.
fn block() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..BLOCKS + 2, 1 => any::<u64>()]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..70, 1 => any::<u32>()]
}

fn blocks_of_data() -> impl Strategy<Value = Bytes> {
    (1usize..4, any::<u8>()).prop_map(|(n, byte)| Bytes::from(vec![byte; n * 4096]))
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Primary), Just(Role::Secondary)]
}

fn disk() -> impl Strategy<Value = DiskState> {
    prop_oneof![
        Just(DiskState::Diskless),
        Just(DiskState::Inconsistent),
        Just(DiskState::Outdated),
        Just(DiskState::UpToDate),
    ]
}

/// Any message a peer could send once connected (the handshake's own
/// messages included: a second Hello is a protocol error to survive).
fn message() -> impl Strategy<Value = Message> {
    let small = 0u64..8;
    prop_oneof![
        (role(), disk()).prop_map(|(role, disk)| Message::State { role, disk }),
        small
            .clone()
            .prop_map(|tid| Message::PromoteRequest { tid }),
        (small.clone(), any::<bool>())
            .prop_map(|(tid, granted)| Message::PromoteReply { tid, granted }),
        (small.clone(), small.clone(), block(), blocks_of_data()).prop_map(
            |(seq, epoch, block, data)| Message::Data {
                seq,
                epoch,
                block,
                data
            }
        ),
        small.clone().prop_map(|seq| Message::RecvAck { seq }),
        small.clone().prop_map(|seq| Message::WriteAck { seq }),
        small.clone().prop_map(|epoch| Message::Barrier { epoch }),
        small
            .clone()
            .prop_map(|epoch| Message::BarrierAck { epoch }),
        any::<bool>().prop_map(|full| Message::SyncStart { full }),
        (block(), blocks_of_data()).prop_map(|(block, data)| Message::ResyncData { block, data }),
        (block(), count()).prop_map(|(block, count)| Message::ResyncAck { block, count }),
        any::<u64>().prop_map(|current| Message::SyncDone { current }),
        (block(), 0usize..4, 1usize..5).prop_map(|(block, alg, n)| {
            let alg = VerifyAlg::ALL[alg];
            Message::OvRequest {
                block,
                alg,
                digests: vec![0; n * alg.digest_len()],
            }
        }),
        (block(), count(), any::<u64>()).prop_map(|(block, count, differ)| Message::OvReply {
            block,
            count,
            differ
        }),
        (block(), count(), any::<u64>()).prop_map(|(block, count, out_of_sync)| {
            Message::OvResult {
                block,
                count,
                out_of_sync,
            }
        }),
        any::<u64>().prop_map(|found| Message::VerifyDone { found }),
        Just(Message::SyncRequest),
        any::<u64>().prop_map(|current| Message::SkipSync { current }),
        any::<bool>().prop_map(|paused| Message::SyncPause { paused }),
        (small.clone(), block(), count()).prop_map(|(req, block, count)| Message::DataRequest {
            req,
            block,
            count
        }),
        (small.clone(), proptest::option::of(blocks_of_data()))
            .prop_map(|(req, data)| Message::DataReply { req, data }),
        small
            .clone()
            .prop_map(|tid| Message::KeepDiskRequest { tid }),
        (small, any::<bool>()).prop_map(|(tid, granted)| Message::KeepDiskReply { tid, granted }),
        (block(), count()).prop_map(|(block, count)| Message::OutOfSync { block, count }),
        proptest::collection::vec(any::<u64>(), 0..3).prop_map(|words| Message::Bitmap { words }),
        proptest::collection::vec(any::<u64>(), 0..3)
            .prop_map(|words| Message::TargetBitmap { words }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Receive(Message),
    /// Finish the disk action at this index (modulo those pending), or fail it.
    DiskDone(usize, bool),
    Tick,
    Write(u64),
    Read(u64),
    Flush,
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => message().prop_map(Step::Receive),
        4 => (any::<usize>(), prop::bool::weighted(0.9)).prop_map(|(i, ok)| Step::DiskDone(i, ok)),
        1 => Just(Step::Tick),
        1 => (0..BLOCKS).prop_map(Step::Write),
        1 => (0..BLOCKS).prop_map(Step::Read),
        1 => Just(Step::Flush),
        1 => Just(Step::Reconnect),
    ]
}

/// Node 0 after a handshake with node 1 in one of the usual situations:
/// Secondary under a Primary, Primary over a Secondary, sync source, sync
/// target.
fn engine(situation: u8) -> Resource {
    let config = Config::new(0, vec![1], BLOCKS);
    let g = 0x1000;
    let (mut engine, promote) = match situation % 4 {
        0 => (
            handshake(config, Some(g), Role::Primary, DiskState::UpToDate, g),
            false,
        ),
        1 => (
            handshake(config, Some(g), Role::Secondary, DiskState::UpToDate, g),
            true,
        ),
        2 => (
            handshake(
                config,
                Some(g),
                Role::Secondary,
                DiskState::Inconsistent,
                JUST_CREATED,
            ),
            false,
        ),
        _ => (
            handshake(config, None, Role::Primary, DiskState::UpToDate, g),
            false,
        ),
    };
    if promote {
        engine.handle(Event::Admin {
            id: 2,
            command: replication::Admin::Primary { force: true },
        });
    }
    engine
}

/// A disk action in flight: its token and, for a read, its length in bytes.
type Pending = (u64, Option<usize>);

fn track(actions: &[Action], pending: &mut Vec<Pending>) {
    for action in actions {
        match action {
            Action::DiskWrite { token, .. } | Action::DiskFlush { token } => {
                pending.push((*token, None));
            }
            Action::DiskRead { token, count, .. } => {
                pending.push((*token, Some(*count as usize * 4096)));
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_message_sequence_panics_the_engine(
        situation in any::<u8>(),
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut engine = engine(situation);
        let mut pending: Vec<Pending> = Vec::new();
        for (next_id, step) in (100..).zip(steps) {
            let event = match step {
                Step::Receive(message) => {
                    // Only what the wire decoder lets through reaches the engine.
                    let mut frame = Vec::new();
                    encode(&message, &mut frame);
                    match decode(&frame) {
                        Ok((message, _)) => Event::Received { peer: 1, message },
                        Err(_) => continue,
                    }
                }
                Step::DiskDone(i, ok) => {
                    if pending.is_empty() {
                        continue;
                    }
                    let (token, read) = pending.remove(i % pending.len());
                    let result = match (ok, read) {
                        (false, _) => Err(()),
                        (true, Some(len)) => Ok(Some(Bytes::from(vec![7u8; len]))),
                        (true, None) => Ok(None),
                    };
                    Event::DiskDone { token, result }
                }
                Step::Tick => Event::Tick,
                Step::Write(block) => Event::Write {
                    id: next_id,
                    block,
                    data: Bytes::from(vec![1u8; 4096]),
                },
                Step::Read(block) => Event::Read { id: next_id, block, count: 1 },
                Step::Flush => Event::Flush { id: next_id },
                Step::Reconnect => {
                    let actions = engine.handle(Event::Disconnected { peer: 1 });
                    track(&actions, &mut pending);
                    Event::Connected { peer: 1 }
                }
            };
            let actions = engine.handle(event);
            track(&actions, &mut pending);
            if let Some(n) = engine.out_of_sync(1) {
                prop_assert!(n <= BLOCKS, "{n} blocks out of sync of {BLOCKS}");
            }
        }
    }
}
