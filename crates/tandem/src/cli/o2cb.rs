//! `o2cb`: the o2cb cluster stack's command line, as ocfs2-tools' `o2cb`.
//!
//! The configuration verbs edit `/etc/ocfs2/cluster.conf` (or `--config-file`)
//! with the rules of the `cluster` crate and write it back whole, through a
//! temporary file and a rename, so a failure never leaves half a file. The verbs
//! that talk to a running cluster stack (`register-cluster`, `start-heartbeat`,
//! ...) come with tandem's membership layer.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cluster::conf::{heartbeat_stanza, node_stanza, ClusterConf, HeartbeatMode};

const DEFAULT_CONFIG_FILE: &str = "/etc/ocfs2/cluster.conf";

#[derive(Parser)]
#[command(name = "o2cb", about = "Configure the o2cb cluster stack (tandem)")]
struct Args {
    /// The cluster configuration file.
    #[arg(long = "config-file", default_value = DEFAULT_CONFIG_FILE, global = true)]
    config_file: PathBuf,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Add a cluster to the config file.
    AddCluster { cluster: String },
    /// Remove a cluster, its nodes and its heartbeat regions.
    RemoveCluster { cluster: String },
    /// Add a node to a cluster.
    AddNode {
        cluster: String,
        node: String,
        /// The node's IPv4 address (default: its name looked up).
        #[arg(long)]
        ip: Option<String>,
        /// Its cluster port (default 7777).
        #[arg(long)]
        port: Option<String>,
        /// Its node number (default: the lowest free one).
        #[arg(long)]
        number: Option<String>,
    },
    /// Remove a node from a cluster.
    RemoveNode { cluster: String, node: String },
    /// Add a global heartbeat region.
    AddHeartbeat { cluster: String, region: String },
    /// Remove a global heartbeat region.
    RemoveHeartbeat { cluster: String, region: String },
    /// Set the heartbeat mode: global or local.
    HeartbeatMode { cluster: String, mode: String },
    /// List the clusters.
    ListClusters,
    /// List a cluster's stanza, nodes and heartbeat regions.
    ListCluster { cluster: String },
    /// List a cluster's nodes.
    ListNodes { cluster: String },
    /// List a cluster's heartbeat regions.
    ListHeartbeats { cluster: String },
}

pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let args = Args::parse_from(std::iter::once("o2cb".into()).chain(args));
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("o2cb: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let path = &args.config_file;
    let mut conf = read(path)?;
    let cluster_of = |conf: &ClusterConf, name: &str| {
        conf.cluster(name)
            .cloned()
            .ok_or_else(|| format!("Unknown cluster '{name}'"))
    };
    match &args.command {
        Verb::AddCluster { cluster } if conf.cluster(cluster).is_some() => {
            // The real tool says so but succeeds, which lets setup scripts (the
            // seed's among them) run twice; do the same.
            eprintln!("o2cb: Cluster '{cluster}' already exists");
            return Ok(());
        }
        Verb::AddCluster { cluster } => conf.add_cluster(cluster).map_err(|e| e.0)?,
        Verb::RemoveCluster { cluster } => conf.remove_cluster(cluster).map_err(|e| e.0)?,
        Verb::AddNode {
            cluster,
            node,
            ip,
            port,
            number,
        } => {
            cluster_of(&conf, cluster)?;
            let address = match ip {
                Some(ip) => ip
                    .parse::<Ipv4Addr>()
                    .map_err(|_| format!("Bad IP Address '{ip}'"))?,
                None => look_up(node)?,
            };
            let port = port
                .as_deref()
                .map(cluster::conf::parse_port)
                .transpose()
                .map_err(|e| e.0)?;
            let number = number
                .as_deref()
                .map(cluster::conf::parse_node_number)
                .transpose()
                .map_err(|e| e.0)?;
            conf.add_node(cluster, node, address, port, number)
                .map_err(|e| e.0)?;
        }
        Verb::RemoveNode { cluster, node } => conf.remove_node(cluster, node).map_err(|e| e.0)?,
        Verb::AddHeartbeat { cluster, region } => {
            conf.add_heartbeat(cluster, region).map_err(|e| e.0)?
        }
        Verb::RemoveHeartbeat { cluster, region } => {
            conf.remove_heartbeat(cluster, region).map_err(|e| e.0)?
        }
        Verb::HeartbeatMode { cluster, mode } => {
            let mode = HeartbeatMode::parse(mode)
                .ok_or("usage: heartbeat-mode <clustername> {global|local}")?;
            conf.set_heartbeat_mode(cluster, mode).map_err(|e| e.0)?;
        }
        Verb::ListClusters => {
            for cluster in &conf.clusters {
                println!("{}", cluster.name);
            }
            return Ok(());
        }
        Verb::ListCluster { cluster } => {
            cluster_of(&conf, cluster)?;
            let only = ClusterConf {
                clusters: conf
                    .clusters
                    .iter()
                    .filter(|c| &c.name == cluster)
                    .cloned()
                    .collect(),
                heartbeats: conf.heartbeats_of(cluster).cloned().collect(),
                nodes: conf.nodes_of(cluster).cloned().collect(),
            };
            print!("{}", only.to_text());
            return Ok(());
        }
        Verb::ListNodes { cluster } => {
            cluster_of(&conf, cluster)?;
            conf.nodes_of(cluster)
                .for_each(|n| print!("{}", node_stanza(n)));
            return Ok(());
        }
        Verb::ListHeartbeats { cluster } => {
            cluster_of(&conf, cluster)?;
            conf.heartbeats_of(cluster)
                .for_each(|h| print!("{}", heartbeat_stanza(h)));
            return Ok(());
        }
    }
    write(path, &conf)
}

/// The file's configuration; a missing file is an empty one.
fn read(path: &Path) -> Result<ClusterConf, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            ClusterConf::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterConf::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Replaces the file in one step: a temporary file beside it, then a rename.
fn write(path: &Path, conf: &ClusterConf) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tandem-new");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, conf.to_text()).map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

/// A node's address from its name, as the real tool does without `--ip`.
fn look_up(node: &str) -> Result<Ipv4Addr, String> {
    let not_found =
        || format!("Name or service not known, while looking up the IP address for '{node}'");
    (node, 0)
        .to_socket_addrs()
        .map_err(|_| not_found())?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(not_found)
}
