//! `/etc/ocfs2/cluster.conf`: the cluster's members, in the real `o2cb` tool's format.
//!
//! The file is a list of *stanzas*. A stanza starts with its kind and a colon at the
//! start of a line (`cluster:`, `node:`, `heartbeat:`); its attributes follow on
//! indented lines, `key = value`. Blank lines separate stanzas; `#` starts a comment
//! line. The real tool writes each cluster's stanza first, then its heartbeat
//! regions, then its nodes, with a tab before each attribute:
//!
//! ```text
//! cluster:
//!     name = tclust
//!     heartbeat_mode = local
//!     node_count = 2
//!
//! node:
//!     cluster = tclust
//!     number = 0
//!     ip_port = 7777
//!     ip_address = 10.0.0.59
//!     name = nodo1
//! ```
//!
//! [`ClusterConf::parse`] reads any file in this shape and checks every value
//! (errors name `FILE:LINE:COL`); [`ClusterConf::to_text`] writes exactly what the
//! real tool writes (a tab before each attribute, shown as spaces above); the
//! `add_*`/`remove_*` methods are the edits of the `o2cb` verbs, with the real
//! tool's rules and messages.

use std::fmt;
use std::net::Ipv4Addr;

/// The port o2cb nodes talk on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7777;
/// Longest cluster name o2cb accepts (OCFS2 stores it in 16 bytes).
pub const MAX_CLUSTER_NAME: usize = 16;
/// Longest node name (o2nm's limit).
pub const MAX_NODE_NAME: usize = 64;
/// Node numbers are 0..=254 (o2nm has 255 slots).
pub const MAX_NODE_NUMBER: u8 = 254;

/// How nodes heartbeat on disk: one region per mounted volume, or the
/// configured regions for all volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatMode {
    Local,
    Global,
}

impl HeartbeatMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HeartbeatMode::Local => "local",
            HeartbeatMode::Global => "global",
        }
    }

    pub fn parse(text: &str) -> Option<HeartbeatMode> {
        match text {
            "local" => Some(HeartbeatMode::Local),
            "global" => Some(HeartbeatMode::Global),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub heartbeat_mode: HeartbeatMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub cluster: String,
    pub number: u8,
    pub name: String,
    pub ip_address: Ipv4Addr,
    pub ip_port: u16,
}

/// A global heartbeat region: the UUID of a volume (or a device) nodes beat on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub cluster: String,
    pub region: String,
}

/// The whole file, in file order within each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConf {
    pub clusters: Vec<Cluster>,
    pub heartbeats: Vec<Heartbeat>,
    pub nodes: Vec<Node>,
}

/// A problem in a cluster.conf, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// An edit the `o2cb` verbs refuse; the text is what the real tool says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EditError(pub String);

fn edit_error(message: impl Into<String>) -> EditError {
    EditError(message.into())
}

/// One attribute line as read, with where its value starts.
struct Attribute<'a> {
    key: &'a str,
    value: &'a str,
    line: usize,
    key_column: usize,
    value_column: usize,
}

struct Stanza<'a> {
    kind: &'a str,
    line: usize,
    attributes: Vec<Attribute<'a>>,
}

impl ClusterConf {
    /// Reads a cluster.conf. `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<ClusterConf, ParseError> {
        let error = |line: usize, column: usize, message: String| ParseError {
            file: file.to_string(),
            line,
            column,
            message,
        };
        let stanzas = split_stanzas(text).map_err(|(l, c, m)| error(l, c, m))?;
        let mut conf = ClusterConf::default();
        for stanza in &stanzas {
            conf.add_stanza(stanza)
                .map_err(|(l, c, m)| error(l, c, m))?;
        }
        // Nodes and regions may come before their cluster's stanza; check their
        // `cluster = ` references once everything is read.
        for stanza in stanzas.iter().filter(|s| s.kind != "cluster") {
            if let Some(a) = stanza.attributes.iter().find(|a| a.key == "cluster") {
                if conf.cluster(a.value).is_none() {
                    return Err(error(
                        a.line,
                        a.value_column,
                        format!("cluster '{}' has no cluster: stanza in this file", a.value),
                    ));
                }
            }
        }
        Ok(conf)
    }

    fn add_stanza(&mut self, stanza: &Stanza) -> Result<(), (usize, usize, String)> {
        let allowed: &[&str] = match stanza.kind {
            "cluster" => &["name", "heartbeat_mode", "node_count"],
            "node" => &["cluster", "number", "ip_port", "ip_address", "name"],
            "heartbeat" => &["cluster", "region"],
            other => {
                return Err((
                    stanza.line,
                    1,
                    format!("unknown stanza '{other}:' (expected cluster:, node: or heartbeat:)"),
                ))
            }
        };
        for (i, attribute) in stanza.attributes.iter().enumerate() {
            if !allowed.contains(&attribute.key) {
                return Err((
                    attribute.line,
                    attribute.key_column,
                    format!(
                        "unknown key '{}' in a {} stanza (known: {})",
                        attribute.key,
                        stanza.kind,
                        allowed.join(", ")
                    ),
                ));
            }
            if stanza.attributes[..i]
                .iter()
                .any(|a| a.key == attribute.key)
            {
                return Err((
                    attribute.line,
                    attribute.key_column,
                    format!(
                        "'{}' given twice in one {} stanza",
                        attribute.key, stanza.kind
                    ),
                ));
            }
        }
        let get = |key: &str| stanza.attributes.iter().find(|a| a.key == key);
        let require = |key: &str| {
            get(key).ok_or_else(|| {
                (
                    stanza.line,
                    1,
                    format!("this {} stanza has no '{key}'", stanza.kind),
                )
            })
        };
        let at = |a: &Attribute, message: String| (a.line, a.value_column, message);
        match stanza.kind {
            "cluster" => {
                let name = require("name")?;
                check_cluster_name(name.value).map_err(|e| at(name, e.0))?;
                let heartbeat_mode = match get("heartbeat_mode") {
                    None => HeartbeatMode::Local,
                    Some(a) => HeartbeatMode::parse(a.value).ok_or_else(|| {
                        at(
                            a,
                            format!("heartbeat_mode must be local or global, not '{}'", a.value),
                        )
                    })?,
                };
                if let Some(a) = get("node_count") {
                    // The real tool rewrites the count from the node stanzas; it only
                    // has to be a number here.
                    a.value
                        .parse::<u32>()
                        .map_err(|_| at(a, format!("node_count '{}' is not a number", a.value)))?;
                }
                if self.clusters.iter().any(|c| c.name == name.value) {
                    return Err(at(
                        name,
                        format!("cluster '{}' is defined twice", name.value),
                    ));
                }
                self.clusters.push(Cluster {
                    name: name.value.to_string(),
                    heartbeat_mode,
                });
            }
            "node" => {
                let cluster = require("cluster")?;
                let number = require("number")?;
                let name = require("name")?;
                let address = require("ip_address")?;
                let port = require("ip_port")?;
                let node = Node {
                    cluster: cluster.value.to_string(),
                    number: parse_node_number(number.value).map_err(|e| at(number, e.0))?,
                    name: name.value.to_string(),
                    ip_address: address
                        .value
                        .parse()
                        .map_err(|_| at(address, format!("Bad IP Address '{}'", address.value)))?,
                    ip_port: parse_port(port.value).map_err(|e| at(port, e.0))?,
                };
                check_node_name(&node.name).map_err(|e| at(name, e.0))?;
                if self.node(&node.cluster, &node.name).is_some() {
                    return Err(at(name, format!("node '{}' is defined twice", node.name)));
                }
                if self
                    .nodes
                    .iter()
                    .any(|n| n.cluster == node.cluster && n.number == node.number)
                {
                    return Err(at(
                        number,
                        format!(
                            "node number {} is used twice in cluster '{}'",
                            node.number, node.cluster
                        ),
                    ));
                }
                if self.nodes.iter().any(|n| {
                    n.cluster == node.cluster
                        && n.ip_address == node.ip_address
                        && n.ip_port == node.ip_port
                }) {
                    return Err(at(
                        address,
                        format!(
                            "address {}:{} is used by two nodes of cluster '{}'",
                            node.ip_address, node.ip_port, node.cluster
                        ),
                    ));
                }
                self.nodes.push(node);
            }
            _ => {
                let cluster = require("cluster")?;
                let region = require("region")?;
                self.heartbeats.push(Heartbeat {
                    cluster: cluster.value.to_string(),
                    region: region.value.to_string(),
                });
            }
        }
        Ok(())
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn node(&self, cluster: &str, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.cluster == cluster && n.name == name)
    }

    /// The nodes of one cluster, in file order.
    pub fn nodes_of<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.cluster == cluster)
    }

    pub fn heartbeats_of<'a>(
        &'a self,
        cluster: &'a str,
    ) -> impl Iterator<Item = &'a Heartbeat> + 'a {
        self.heartbeats.iter().filter(move |h| h.cluster == cluster)
    }

    /// The file as the real `o2cb` tool writes it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for cluster in &self.clusters {
            out.push_str(&cluster_stanza(
                cluster,
                self.nodes_of(&cluster.name).count(),
            ));
            for heartbeat in self.heartbeats_of(&cluster.name) {
                out.push_str(&heartbeat_stanza(heartbeat));
            }
            for node in self.nodes_of(&cluster.name) {
                out.push_str(&node_stanza(node));
            }
        }
        out
    }

    fn require_cluster(&self, cluster: &str) -> Result<&Cluster, EditError> {
        self.cluster(cluster)
            .ok_or_else(|| edit_error(format!("Unknown cluster '{cluster}'")))
    }

    /// `o2cb add-cluster NAME`.
    pub fn add_cluster(&mut self, name: &str) -> Result<(), EditError> {
        check_cluster_name(name)?;
        if self.cluster(name).is_some() {
            return Err(edit_error(format!("Cluster '{name}' already exists")));
        }
        self.clusters.push(Cluster {
            name: name.to_string(),
            heartbeat_mode: HeartbeatMode::Local,
        });
        Ok(())
    }

    /// `o2cb remove-cluster NAME`: the cluster with its nodes and regions.
    pub fn remove_cluster(&mut self, name: &str) -> Result<(), EditError> {
        self.require_cluster(name)?;
        self.clusters.retain(|c| c.name != name);
        self.nodes.retain(|n| n.cluster != name);
        self.heartbeats.retain(|h| h.cluster != name);
        Ok(())
    }

    /// `o2cb add-node CLUSTER NAME --ip IP [--port P] [--number N]`. Without a
    /// number the node gets the lowest free one.
    pub fn add_node(
        &mut self,
        cluster: &str,
        name: &str,
        ip_address: Ipv4Addr,
        ip_port: Option<u16>,
        number: Option<u8>,
    ) -> Result<(), EditError> {
        self.require_cluster(cluster)?;
        check_node_name(name)?;
        if self.node(cluster, name).is_some() {
            return Err(edit_error(format!("Node '{name}' already exists")));
        }
        let used = |n: u8| self.nodes_of(cluster).any(|node| node.number == n);
        let number = match number {
            Some(n) if n > MAX_NODE_NUMBER => {
                return Err(edit_error(format!(
                    "Node number {n} is out of range 0-{MAX_NODE_NUMBER}"
                )))
            }
            Some(n) if used(n) => {
                return Err(edit_error(format!(
                    "Choose another node number as '{n}' is in use"
                )))
            }
            Some(n) => n,
            None => (0..=MAX_NODE_NUMBER)
                .find(|n| !used(*n))
                .ok_or_else(|| edit_error("No free node number: the cluster is full"))?,
        };
        let ip_port = ip_port.unwrap_or(DEFAULT_PORT);
        if ip_port == 0 {
            return Err(edit_error("Port 0 is not a valid port"));
        }
        self.nodes.push(Node {
            cluster: cluster.to_string(),
            number,
            name: name.to_string(),
            ip_address,
            ip_port,
        });
        Ok(())
    }

    /// `o2cb remove-node CLUSTER NAME`.
    pub fn remove_node(&mut self, cluster: &str, name: &str) -> Result<(), EditError> {
        self.require_cluster(cluster)?;
        if self.node(cluster, name).is_none() {
            return Err(edit_error(format!("Unknown node '{name}'")));
        }
        self.nodes
            .retain(|n| !(n.cluster == cluster && n.name == name));
        Ok(())
    }

    /// `o2cb add-heartbeat CLUSTER REGION`.
    pub fn add_heartbeat(&mut self, cluster: &str, region: &str) -> Result<(), EditError> {
        self.require_cluster(cluster)?;
        if region.is_empty() || region.chars().any(char::is_whitespace) {
            return Err(edit_error(format!("Invalid heartbeat region '{region}'")));
        }
        if self.heartbeats_of(cluster).any(|h| h.region == region) {
            return Err(edit_error(format!(
                "Heartbeat region '{region}' already exists"
            )));
        }
        self.heartbeats.push(Heartbeat {
            cluster: cluster.to_string(),
            region: region.to_string(),
        });
        Ok(())
    }

    /// `o2cb remove-heartbeat CLUSTER REGION`.
    pub fn remove_heartbeat(&mut self, cluster: &str, region: &str) -> Result<(), EditError> {
        self.require_cluster(cluster)?;
        if !self.heartbeats_of(cluster).any(|h| h.region == region) {
            return Err(edit_error(format!("Unknown heartbeat region '{region}'")));
        }
        self.heartbeats
            .retain(|h| !(h.cluster == cluster && h.region == region));
        Ok(())
    }

    /// `o2cb heartbeat-mode CLUSTER local|global`.
    pub fn set_heartbeat_mode(
        &mut self,
        cluster: &str,
        mode: HeartbeatMode,
    ) -> Result<(), EditError> {
        self.require_cluster(cluster)?;
        for c in self.clusters.iter_mut().filter(|c| c.name == cluster) {
            c.heartbeat_mode = mode;
        }
        Ok(())
    }
}

/// The text of a `cluster:` stanza.
pub fn cluster_stanza(cluster: &Cluster, node_count: usize) -> String {
    format!(
        "cluster:\n\tname = {}\n\theartbeat_mode = {}\n\tnode_count = {node_count}\n\n",
        cluster.name,
        cluster.heartbeat_mode.as_str()
    )
}

/// The text of a `node:` stanza.
pub fn node_stanza(node: &Node) -> String {
    format!(
        "node:\n\tcluster = {}\n\tnumber = {}\n\tip_port = {}\n\tip_address = {}\n\tname = {}\n\n",
        node.cluster, node.number, node.ip_port, node.ip_address, node.name
    )
}

/// The text of a `heartbeat:` stanza.
pub fn heartbeat_stanza(heartbeat: &Heartbeat) -> String {
    format!(
        "heartbeat:\n\tcluster = {}\n\tregion = {}\n\n",
        heartbeat.cluster, heartbeat.region
    )
}

impl fmt::Display for ClusterConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

fn check_cluster_name(name: &str) -> Result<(), EditError> {
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME || !name.chars().all(is_name_char) {
        return Err(edit_error(format!(
            "Cluster name is invalid ; max {MAX_CLUSTER_NAME} characters"
        )));
    }
    Ok(())
}

fn check_node_name(name: &str) -> Result<(), EditError> {
    if name.is_empty() || name.len() > MAX_NODE_NAME || !name.chars().all(is_name_char) {
        return Err(edit_error(format!(
            "Node name '{name}' is invalid ; max {MAX_NODE_NAME} characters of letters, digits, '.', '-' and '_'"
        )));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A node number: 0..=254.
pub fn parse_node_number(text: &str) -> Result<u8, EditError> {
    match text.parse::<u32>() {
        Ok(n) if n <= u32::from(MAX_NODE_NUMBER) => Ok(n as u8),
        Ok(n) => Err(edit_error(format!(
            "node number {n} is out of range 0-{MAX_NODE_NUMBER}"
        ))),
        Err(_) => Err(edit_error(format!("node number '{text}' is not a number"))),
    }
}

/// A TCP port: 1..=65535.
pub fn parse_port(text: &str) -> Result<u16, EditError> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(edit_error(format!("port {p} is out of range 1-65535"))),
        Err(_) => Err(edit_error(format!("port '{text}' is not a number"))),
    }
}

/// Splits the text into stanzas; errors carry (line, column, message).
fn split_stanzas(text: &str) -> Result<Vec<Stanza<'_>>, (usize, usize, String)> {
    let mut stanzas: Vec<Stanza> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        if !indented {
            let Some(kind) = trimmed.strip_suffix(':') else {
                return Err((
                    line_number,
                    1,
                    format!("expected a stanza header such as 'node:', found '{trimmed}'"),
                ));
            };
            if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((line_number, 1, format!("bad stanza name '{kind}'")));
            }
            stanzas.push(Stanza {
                kind,
                line: line_number,
                attributes: Vec::new(),
            });
            continue;
        }
        let key_column = line.len() - line.trim_start().len() + 1;
        let Some(stanza) = stanzas.last_mut() else {
            return Err((
                line_number,
                key_column,
                "an attribute before any stanza header".to_string(),
            ));
        };
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err((
                line_number,
                key_column,
                format!("expected 'key = value', found '{trimmed}'"),
            ));
        };
        let key = key.trim_end();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((line_number, key_column, format!("bad key '{key}'")));
        }
        let value_offset = trimmed.len() - value.trim_start().len();
        let value = value.trim();
        if value.is_empty() {
            return Err((
                line_number,
                key_column + value_offset,
                format!("'{key}' has no value"),
            ));
        }
        stanza.attributes.push(Attribute {
            key,
            value,
            line: line_number,
            key_column,
            value_column: key_column + value_offset,
        });
    }
    Ok(stanzas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the real tool writes for the seed's three commands.
    const SEED: &str = "cluster:\n\tname = tclust\n\theartbeat_mode = local\n\tnode_count = 2\n\nnode:\n\tcluster = tclust\n\tnumber = 0\n\tip_port = 7777\n\tip_address = 10.0.0.59\n\tname = nodo1\n\nnode:\n\tcluster = tclust\n\tnumber = 1\n\tip_port = 7777\n\tip_address = 10.0.0.218\n\tname = nodo2\n\n";

    #[test]
    fn the_seed_commands_write_the_seed_file() {
        let mut conf = ClusterConf::default();
        conf.add_cluster("tclust").unwrap();
        conf.add_node("tclust", "nodo1", "10.0.0.59".parse().unwrap(), None, None)
            .unwrap();
        conf.add_node("tclust", "nodo2", "10.0.0.218".parse().unwrap(), None, None)
            .unwrap();
        assert_eq!(conf.to_text(), SEED);
        assert_eq!(ClusterConf::parse(SEED, "cluster.conf").unwrap(), conf);
    }

    #[test]
    fn the_verbs_refuse_what_the_real_tool_refuses() {
        let mut conf = ClusterConf::parse(SEED, "c").unwrap();
        let ip = "10.0.0.1".parse().unwrap();
        assert_eq!(
            conf.add_cluster("tclust").unwrap_err().0,
            "Cluster 'tclust' already exists"
        );
        assert!(conf.add_cluster("averyveryverylongclustername").is_err());
        assert_eq!(
            conf.add_node("nope", "x", ip, None, None).unwrap_err().0,
            "Unknown cluster 'nope'"
        );
        assert_eq!(
            conf.add_node("tclust", "nodo1", ip, None, None)
                .unwrap_err()
                .0,
            "Node 'nodo1' already exists"
        );
        assert_eq!(
            conf.add_node("tclust", "nodo3", ip, None, Some(0))
                .unwrap_err()
                .0,
            "Choose another node number as '0' is in use"
        );
        assert_eq!(
            conf.remove_node("tclust", "zz").unwrap_err().0,
            "Unknown node 'zz'"
        );
        conf.add_node("tclust", "nodo3", ip, Some(7000), None)
            .unwrap();
        assert_eq!(conf.node("tclust", "nodo3").unwrap().number, 2);
        conf.remove_node("tclust", "nodo1").unwrap();
        conf.add_node("tclust", "nodo4", "10.0.0.4".parse().unwrap(), None, None)
            .unwrap();
        assert_eq!(
            conf.node("tclust", "nodo4").unwrap().number,
            0,
            "lowest free number"
        );
        conf.remove_cluster("tclust").unwrap();
        assert_eq!(conf, ClusterConf::default());
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            ("cluster:\n\tname = tclust\n\theartbeat_mode = sometimes\n", 3, 19, "heartbeat_mode"),
            ("cluster:\n\tname = c\n\nnode:\n\tcluster = c\n\tnumber = 0\n\tip_port = 99999\n\tip_address = 1.2.3.4\n\tname = a\n", 7, 12, "out of range"),
            ("cluster:\n\tname = c\n\nnode:\n\tcluster = c\n\tnumber = 0\n\tip_port = 7777\n\tip_address = 1.2.3.400\n\tname = a\n", 8, 15, "Bad IP Address"),
            ("\tname = c\n", 1, 2, "before any stanza"),
            ("cluster\n", 1, 1, "stanza header"),
            ("cluster:\n\tname c\n", 2, 2, "key = value"),
            ("cluster:\n\tname = c\n\tcolour = blue\n", 3, 2, "unknown key"),
            ("volume:\n\tname = c\n", 1, 1, "unknown stanza"),
            ("node:\n\tcluster = c\n", 1, 1, "no 'number'"),
            ("cluster:\n\tname = c\n\tname = d\n", 3, 2, "twice"),
            ("node:\n\tcluster = c\n\tnumber = 0\n\tip_port = 7777\n\tip_address = 1.2.3.4\n\tname = a\n", 2, 12, "no cluster: stanza"),
        ];
        for (text, line, column, needle) in cases {
            let err = ClusterConf::parse(text, "f.conf").unwrap_err();
            assert_eq!((err.line, err.column), (line, column), "{text:?}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("f.conf:{line}:{column}: ")),
                "{err}"
            );
            assert!(err.message.contains(needle), "{text:?}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_round_trips(text in "[a-z_:=# \t\n0-9.]{0,200}") {
            if let Ok(conf) = ClusterConf::parse(&text, "p") {
                let again = ClusterConf::parse(&conf.to_text(), "p").unwrap();
                proptest::prop_assert_eq!(again, conf);
            }
        }

        #[test]
        fn mutated_seed_never_panics(cut in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let mut bytes = SEED.as_bytes().to_vec();
            let at = cut % bytes.len();
            bytes[at] = byte;
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = ClusterConf::parse(&text, "m") {
                proptest::prop_assert!(e.line >= 1 && e.column >= 1);
            }
        }
    }
}
