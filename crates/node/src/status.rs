//! `drbdadm status` text, in DRBD 9's shape:
//!
//! ```text
//! wwwdata role:Primary
//!   disk:UpToDate
//!   nodo2 role:Secondary
//!     replication:SyncSource peer-disk:Inconsistent done:76.26
//! ```

use crate::control::ResourceStatus;

pub fn format(status: &ResourceStatus) -> String {
    let mut out = format!(
        "{} role:{}\n  disk:{}\n",
        status.name, status.role, status.disk
    );
    for peer in &status.peers {
        let handshake_done = peer.connection == "Connected" && peer.replication != "Off";
        if !handshake_done {
            out.push_str(&format!("  {} connection:{}\n", peer.name, peer.connection));
            continue;
        }
        out.push_str(&format!(
            "  {} role:{}\n    replication:{} peer-disk:{}",
            peer.name,
            peer.role.as_deref().unwrap_or("Unknown"),
            peer.replication,
            peer.disk.as_deref().unwrap_or("DUnknown")
        ));
        if matches!(
            peer.replication.as_str(),
            "SyncSource" | "SyncTarget" | "PausedSyncS" | "PausedSyncT"
        ) {
            out.push_str(&format!(
                " done:{:.2}",
                done(peer.sync_total, peer.out_of_sync)
            ));
        }
        if let Some(who) = &peer.resync_suspended {
            out.push_str(&format!(" resync-suspended:{who}"));
        }
        if peer.replication == "VerifyS" || peer.replication == "VerifyT" {
            let left = peer.verify_total.saturating_sub(peer.verify_done);
            out.push_str(&format!(" done:{:.2}", done(peer.verify_total, left)));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Percent of a resync done, as DRBD prints it (two decimals, never 100 while
/// blocks remain).
pub fn done(total: u64, left: u64) -> f64 {
    if total == 0 {
        return 100.0;
    }
    let done = (total.saturating_sub(left)) as f64 * 100.0 / total as f64;
    if left > 0 {
        done.min(99.99)
    } else {
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PeerStatus;

    fn peer(connection: &str, replication: &str, disk: &str, left: u64) -> PeerStatus {
        PeerStatus {
            name: "nodo2".into(),
            node_id: 1,
            connection: connection.into(),
            replication: replication.into(),
            role: Some("Secondary".into()),
            disk: Some(disk.into()),
            out_of_sync: left,
            blocks: 262_144,
            sync_total: 262_144,
            verify_done: 131_072,
            verify_total: 262_144,
            resync_suspended: None,
        }
    }

    #[test]
    fn the_seed_lines() {
        let mut status = ResourceStatus {
            name: "wwwdata".into(),
            role: "Primary".into(),
            disk: "UpToDate".into(),
            peers: vec![peer("Connected", "SyncSource", "Inconsistent", 62_233)],
        };
        assert_eq!(
            format(&status),
            "wwwdata role:Primary\n  disk:UpToDate\n  nodo2 role:Secondary\n    replication:SyncSource peer-disk:Inconsistent done:76.26\n\n"
        );
        status.peers = vec![peer("Connected", "Established", "UpToDate", 0)];
        assert!(format(&status).contains("    replication:Established peer-disk:UpToDate\n"));
        status.peers = vec![peer("Connected", "VerifyS", "UpToDate", 0)];
        assert!(format(&status).contains("    replication:VerifyS peer-disk:UpToDate done:50.00\n"));
        let mut paused = peer("Connected", "PausedSyncS", "Inconsistent", 62_233);
        paused.resync_suspended = Some("user".into());
        status.peers = vec![paused];
        assert!(format(&status).contains(
            "    replication:PausedSyncS peer-disk:Inconsistent done:76.26 resync-suspended:user\n"
        ));
        status.peers = vec![peer("Connecting", "Off", "UpToDate", 0)];
        assert!(format(&status).contains("  nodo2 connection:Connecting\n"));
    }
}
