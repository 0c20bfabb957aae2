//! The engine against a peer that sends what it should not: requests beyond
//! the device, replies to nothing, asks this node cannot grant. Every one is
//! refused (a protocol error drops the connection, a request it cannot serve
//! gets a negative answer) and none panics.

mod common;

use common::{received, sent};
use replication::message::Message;
use replication::uuids::JUST_CREATED;
use replication::{Action, Admin, Config, DiskState, Event, Note, Resource, Role};

const BLOCKS: u64 = 64;

/// Node 0, its handshake with node 1 done: two fresh disks, nothing to sync.
fn connected() -> Resource {
    let engine = handshake(None, Role::Secondary, DiskState::Inconsistent, JUST_CREATED);
    assert_eq!(
        engine.repl_state(1),
        Some(replication::ReplState::Established)
    );
    engine
}

/// Node 0 after its handshake with node 1 (see `common::handshake`).
fn handshake(current: Option<u64>, role: Role, disk: DiskState, peer_current: u64) -> Resource {
    common::handshake(
        Config::new(0, vec![1], BLOCKS),
        current,
        role,
        disk,
        peer_current,
    )
}

/// The reason of the protocol error in `actions`, which must also drop the
/// connection.
fn protocol_error(actions: &[Action]) -> String {
    let reason = actions.iter().find_map(|a| match a {
        Action::Note(Note::ProtocolError { reason, .. }) => Some(reason.clone()),
        _ => None,
    });
    let dropped = actions
        .iter()
        .any(|a| matches!(a, Action::Disconnect { peer: 1 }));
    match reason {
        Some(reason) if dropped => reason,
        _ => panic!("no protocol error and dropped connection in {actions:?}"),
    }
}

#[test]
fn a_data_request_beyond_the_device_drops_the_connection() {
    let mut engine = connected();
    let actions = engine.handle(received(Message::DataRequest {
        req: 1,
        block: BLOCKS - 1,
        count: 2,
    }));
    let reason = protocol_error(&actions);
    assert!(reason.contains("beyond the device"), "{reason}");
}

#[test]
fn a_data_request_to_a_disk_without_uptodate_data_is_answered_with_none() {
    let mut engine = connected();
    let actions = engine.handle(received(Message::DataRequest {
        req: 9,
        block: 0,
        count: 4,
    }));
    assert_eq!(
        sent(&actions),
        [&Message::DataReply { req: 9, data: None }],
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::DiskRead { .. })));
}

#[test]
fn a_reply_to_a_data_request_never_made_drops_the_connection() {
    let mut engine = connected();
    let actions = engine.handle(received(Message::DataReply {
        req: 3,
        data: Some(vec![0; 4096].into()),
    }));
    let reason = protocol_error(&actions);
    assert!(reason.contains("not asked"), "{reason}");
}

#[test]
fn out_of_sync_blocks_beyond_the_device_drop_the_connection() {
    let mut engine = connected();
    let actions = engine.handle(received(Message::OutOfSync {
        block: BLOCKS,
        count: 1,
    }));
    protocol_error(&actions);
    assert_eq!(engine.out_of_sync(1), Some(0));
}

#[test]
fn out_of_sync_blocks_are_marked_and_kept() {
    let mut engine = connected();
    let actions = engine.handle(received(Message::OutOfSync { block: 8, count: 3 }));
    assert_eq!(engine.out_of_sync(1), Some(3));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::PersistMeta(m) if m.peers[0].bitmap.count() == 3)),
        "{actions:?}"
    );
}

#[test]
fn a_disk_without_uptodate_data_is_not_promised_to_a_detaching_primary() {
    let mut engine = connected();
    let actions = engine.handle(received(Message::KeepDiskRequest { tid: 5 }));
    assert_eq!(
        sent(&actions),
        [&Message::KeepDiskReply {
            tid: 5,
            granted: false
        }]
    );
    // Not promised, so its own detach is not held back.
    let actions = engine.handle(Event::Admin {
        id: 2,
        command: Admin::Detach,
    });
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::AdminDone {
            id: 2,
            result: Ok(())
        }
    )));
}

/// Node 0 with an UpToDate disk, connected to node 1, a diskless Primary
/// of the same generation.
fn connected_up_to_date() -> Resource {
    handshake(Some(0x1000), Role::Primary, DiskState::Diskless, 0x1000)
}

fn disk_token(actions: &[Action]) -> Option<(u64, bool)> {
    actions.iter().find_map(|a| match a {
        Action::DiskWrite { token, .. } => Some((*token, true)),
        Action::DiskRead { token, .. } => Some((*token, false)),
        _ => None,
    })
}

#[test]
fn a_diskless_primarys_read_waits_for_its_earlier_write_then_gets_the_blocks() {
    let mut engine = connected_up_to_date();
    // The diskless Primary writes block 2, then reads blocks 0..4.
    let actions = engine.handle(received(Message::Data {
        seq: 1,
        epoch: 1,
        block: 2,
        data: vec![0xab; 4096].into(),
    }));
    let (write, is_write) = disk_token(&actions).expect("the write is issued");
    assert!(is_write);
    let actions = engine.handle(received(Message::DataRequest {
        req: 7,
        block: 0,
        count: 4,
    }));
    assert_eq!(disk_token(&actions), None, "read before the write is done");
    let actions = engine.handle(Event::DiskDone {
        token: write,
        result: Ok(None),
    });
    // Its copy is the only one: acknowledged once written, and marked.
    assert!(sent(&actions).contains(&&Message::WriteAck { seq: 1 }));
    assert_eq!(engine.out_of_sync(1), Some(1));
    let (read, is_write) = disk_token(&actions).expect("the read follows the write");
    assert!(!is_write);
    let blocks: bytes::Bytes = vec![0xcd; 4 * 4096].into();
    let actions = engine.handle(Event::DiskDone {
        token: read,
        result: Ok(Some(blocks.clone())),
    });
    assert_eq!(
        sent(&actions),
        [&Message::DataReply {
            req: 7,
            data: Some(blocks)
        }]
    );
}

#[test]
fn acks_and_verify_results_beyond_the_device_drop_the_connection() {
    for message in [
        Message::ResyncAck {
            block: 0,
            count: u32::MAX,
        },
        Message::ResyncAck {
            block: u64::MAX,
            count: 1,
        },
        Message::OvReply {
            block: u64::MAX - 3,
            count: 64,
            differ: u64::MAX,
        },
        Message::OvResult {
            block: BLOCKS - 1,
            count: 2,
            out_of_sync: 3,
        },
    ] {
        let mut engine = connected();
        let reason = protocol_error(&engine.handle(received(message.clone())));
        assert!(
            reason.contains("beyond the device"),
            "{message:?}: {reason}"
        );
        assert_eq!(engine.out_of_sync(1), Some(0), "{message:?}");
    }
}
