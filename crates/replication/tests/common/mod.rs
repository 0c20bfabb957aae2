//! Driving one engine by hand: node 0, with node 1 played by the test.

// Each test file uses a part of it.
#![allow(dead_code)]

use replication::message::{Hello, Message};
use replication::uuids::HISTORY_LEN;
use replication::{Action, Admin, Config, DiskState, Event, Meta, Resource, Role};

/// Node 0 after its handshake with node 1. Its disk is `UpToDate` with
/// generation `current` if given, else fresh; node 1 says it is `role` with
/// a `disk` of generation `peer_current`, the same net options, and no bits
/// in its bitmap.
pub fn handshake(
    config: Config,
    current: Option<u64>,
    role: Role,
    disk: DiskState,
    peer_current: u64,
) -> Resource {
    handshake_with_actions(config, current, role, disk, peer_current).0
}

/// `handshake`, and the actions of its last step (the sync decision's).
pub fn handshake_with_actions(
    config: Config,
    current: Option<u64>,
    role: Role,
    disk: DiskState,
    peer_current: u64,
) -> (Resource, Vec<Action>) {
    let blocks = config.blocks;
    let protocol = config.protocol;
    let mut meta = Meta::fresh(&config);
    if let Some(current) = current {
        meta.disk = DiskState::UpToDate;
        meta.current = current;
    }
    let (mut engine, _) = Resource::open(config, meta, 7);
    let connect = Admin::Connect {
        peer: 1,
        discard_my_data: false,
    };
    engine.handle(Event::Admin {
        id: 1,
        command: connect,
    });
    engine.handle(Event::Connected { peer: 1 });
    let hello = Hello {
        node_id: 1,
        blocks,
        role,
        disk,
        protocol,
        allow_two_primaries: false,
        crashed_primary: false,
        discard_my_data: false,
        sync_paused: false,
        current: peer_current,
        bitmap: 0,
        history: [0; HISTORY_LEN],
    };
    engine.handle(received(Message::Hello(hello)));
    let words = blocks.div_ceil(64) as usize;
    let actions = engine.handle(received(Message::Bitmap {
        words: vec![0; words],
    }));
    (engine, actions)
}

pub fn received(message: Message) -> Event {
    Event::Received { peer: 1, message }
}

/// The messages `actions` send to node 1.
pub fn sent(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { peer: 1, message } => Some(message),
            _ => None,
        })
        .collect()
}
