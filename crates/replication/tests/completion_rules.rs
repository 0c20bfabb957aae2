//! When a write and a flush complete, by protocol, on both sides of one
//! connection: A once written here; B once also received by the peer; C once
//! also written by the peer; a flush once every earlier write is stable here
//! and on the peer (its barrier acknowledged after its own flush).

mod common;

use bytes::Bytes;
use common::{handshake, handshake_with_actions, received, sent};
use replication::message::{Message, Protocol};
use replication::{Action, Admin, Config, DiskState, Event, Note, ReplState, Resource, Role};

const BLOCKS: u64 = 64;
const GENERATION: u64 = 0x1000;

fn config(protocol: Protocol) -> Config {
    let mut config = Config::new(0, vec![1], BLOCKS);
    config.protocol = protocol;
    config
}

/// Node 0 Primary, in sync with node 1, a Secondary of the same generation.
fn primary(protocol: Protocol) -> Resource {
    let mut engine = handshake(
        config(protocol),
        Some(GENERATION),
        Role::Secondary,
        DiskState::UpToDate,
        GENERATION,
    );
    assert_eq!(engine.repl_state(1), Some(ReplState::Established));
    let actions = engine.handle(Event::Admin {
        id: 2,
        command: Admin::Primary { force: false },
    });
    let tid = sent(&actions)
        .iter()
        .find_map(|m| match m {
            Message::PromoteRequest { tid } => Some(*tid),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the peer is not asked: {actions:?}"));
    let actions = engine.handle(received(Message::PromoteReply { tid, granted: true }));
    assert!(
        actions.contains(&Action::AdminDone {
            id: 2,
            result: Ok(())
        }),
        "{actions:?}"
    );
    engine
}

/// Node 0 Secondary, in sync with node 1, a Primary of the same generation.
fn secondary(protocol: Protocol) -> Resource {
    let engine = handshake(
        config(protocol),
        Some(GENERATION),
        Role::Primary,
        DiskState::UpToDate,
        GENERATION,
    );
    assert_eq!(engine.repl_state(1), Some(ReplState::Established));
    engine
}

fn block_of(byte: u8) -> Bytes {
    vec![byte; 4096].into()
}

fn completed(actions: &[Action], id: u64) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Complete { id: i, result: Ok(_) } if *i == id))
}

/// The token of the disk write (or flush) in `actions`.
fn disk_token(actions: &[Action]) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::DiskWrite { token, .. } | Action::DiskFlush { token } => Some(*token),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no disk write or flush in {actions:?}"))
}

fn disk_done(engine: &mut Resource, token: u64) -> Vec<Action> {
    engine.handle(Event::DiskDone {
        token,
        result: Ok(None),
    })
}

/// The Primary's write of block 5 as application request 10: the token of
/// its local write and the sequence number of the copy sent to the peer.
fn app_write(engine: &mut Resource) -> (u64, u64) {
    let actions = engine.handle(Event::Write {
        id: 10,
        block: 5,
        data: block_of(0xa5),
    });
    let seq = sent(&actions)
        .iter()
        .find_map(|m| match m {
            Message::Data { seq, block: 5, .. } => Some(*seq),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the write is not sent to the peer: {actions:?}"));
    assert!(!completed(&actions, 10));
    (disk_token(&actions), seq)
}

#[test]
fn protocol_a_completes_a_write_once_written_here() {
    let mut engine = primary(Protocol::A);
    let (token, _) = app_write(&mut engine);
    assert!(completed(&disk_done(&mut engine, token), 10));
}

#[test]
fn protocols_b_and_c_complete_a_write_only_with_the_peers_ack_and_the_local_write() {
    for (protocol, ack) in [
        (Protocol::B, Message::RecvAck { seq: 0 }),
        (Protocol::C, Message::WriteAck { seq: 0 }),
    ] {
        // Written here first, acknowledged after.
        let mut engine = primary(protocol);
        let (token, seq) = app_write(&mut engine);
        assert!(
            !completed(&disk_done(&mut engine, token), 10),
            "{protocol:?}"
        );
        let ack = match ack {
            Message::RecvAck { .. } => Message::RecvAck { seq },
            _ => Message::WriteAck { seq },
        };
        assert!(completed(&engine.handle(received(ack.clone())), 10));

        // Acknowledged first, written here after.
        let mut engine = primary(protocol);
        let (token, seq) = app_write(&mut engine);
        let early = match ack {
            Message::RecvAck { .. } => Message::RecvAck { seq },
            _ => Message::WriteAck { seq },
        };
        assert!(
            !completed(&engine.handle(received(early)), 10),
            "{protocol:?}"
        );
        assert!(
            completed(&disk_done(&mut engine, token), 10),
            "{protocol:?}"
        );
    }
}

/// What the Secondary sends back for one replicated write: before its disk
/// write is done, and after.
fn secondary_acks(protocol: Protocol) -> (Vec<Message>, Vec<Message>) {
    let mut engine = secondary(protocol);
    let actions = engine.handle(received(Message::Data {
        seq: 3,
        epoch: 1,
        block: 5,
        data: block_of(0x5a),
    }));
    let before = sent(&actions).into_iter().cloned().collect();
    let token = disk_token(&actions);
    let after = sent(&disk_done(&mut engine, token))
        .into_iter()
        .cloned()
        .collect();
    (before, after)
}

#[test]
fn the_secondary_acks_a_write_as_its_protocol_says() {
    assert_eq!(secondary_acks(Protocol::A), (vec![], vec![]));
    assert_eq!(
        secondary_acks(Protocol::B),
        (vec![Message::RecvAck { seq: 3 }], vec![])
    );
    assert_eq!(
        secondary_acks(Protocol::C),
        (vec![], vec![Message::WriteAck { seq: 3 }])
    );
}

#[test]
fn a_flush_completes_once_stable_here_and_on_the_peer() {
    for protocol in [Protocol::A, Protocol::B, Protocol::C] {
        let mut engine = primary(protocol);
        let (token, seq) = app_write(&mut engine);
        let mut actions = disk_done(&mut engine, token);
        if protocol != Protocol::A {
            actions = engine.handle(received(Message::WriteAck { seq }));
        }
        assert!(completed(&actions, 10), "{protocol:?}");

        let actions = engine.handle(Event::Flush { id: 11 });
        let epoch = sent(&actions)
            .iter()
            .find_map(|m| match m {
                Message::Barrier { epoch } => Some(*epoch),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no barrier sent: {actions:?}"));
        let flush = disk_token(&actions);
        assert!(
            !completed(&disk_done(&mut engine, flush), 11),
            "{protocol:?}"
        );
        let actions = engine.handle(received(Message::BarrierAck { epoch }));
        assert!(completed(&actions, 11), "{protocol:?}");
    }
}

#[test]
fn the_secondary_acks_a_barrier_only_after_its_writes_and_a_flush() {
    let mut engine = secondary(Protocol::C);
    let actions = engine.handle(received(Message::Data {
        seq: 1,
        epoch: 1,
        block: 5,
        data: block_of(0x5a),
    }));
    let write = disk_token(&actions);
    let actions = engine.handle(received(Message::Barrier { epoch: 1 }));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::DiskFlush { .. })),
        "flushed before the epoch's write is done: {actions:?}"
    );
    assert!(sent(&actions).is_empty(), "{actions:?}");
    let actions = disk_done(&mut engine, write);
    assert_eq!(sent(&actions), [&Message::WriteAck { seq: 1 }]);
    let flush = actions
        .iter()
        .find_map(|a| match a {
            Action::DiskFlush { token } => Some(*token),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no flush once the epoch is written: {actions:?}"));
    let actions = disk_done(&mut engine, flush);
    assert_eq!(sent(&actions), [&Message::BarrierAck { epoch: 1 }]);
}

#[test]
fn unrelated_data_refuses_the_connection_and_syncs_nothing() {
    let (mut engine, actions) = handshake_with_actions(
        config(Protocol::C),
        Some(GENERATION),
        Role::Secondary,
        DiskState::UpToDate,
        0x2000,
    );
    assert!(
        actions.contains(&Action::Note(Note::UnrelatedData { peer: 1 }))
            && actions.contains(&Action::Disconnect { peer: 1 }),
        "{actions:?}"
    );
    assert_eq!(engine.repl_state(1), Some(ReplState::Off));
    assert_eq!(engine.out_of_sync(1), Some(0));
    // It stays away (StandAlone) rather than retrying.
    let actions = engine.handle(Event::Tick);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Connect { .. })),
        "{actions:?}"
    );
}
