//! What the daemon needs to run the o2cb cluster stack: resolved by the
//! command-line tool from `/etc/ocfs2/cluster.conf` and `/etc/default/o2cb` and
//! sent with `register-cluster`, as [`ResourceSpec`](crate::spec::ResourceSpec)
//! is for a resource. The daemon never reads those files.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub cluster: String,
    /// This node's number.
    pub local: u8,
    pub nodes: Vec<ClusterNode>,
    /// O2CB_HEARTBEAT_THRESHOLD, in beats.
    pub heartbeat_threshold: u32,
    pub idle_timeout_ms: u32,
    pub keepalive_delay_ms: u32,
    pub reconnect_delay_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub number: u8,
    pub name: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl ClusterSpec {
    pub fn node(&self, number: u8) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.number == number)
    }

    pub fn local_node(&self) -> Option<&ClusterNode> {
        self.node(self.local)
    }

    /// The node cluster.conf gives this address, if any (how an incoming
    /// connection is attributed).
    pub fn node_at(&self, ip: Ipv4Addr) -> Option<&ClusterNode> {
        self.nodes
            .iter()
            .find(|n| n.ip == ip && n.number != self.local)
    }
}
