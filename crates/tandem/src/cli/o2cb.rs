//! `o2cb`: the o2cb cluster stack's command line, as ocfs2-tools' `o2cb`.
//!
//! The configuration verbs edit `/etc/ocfs2/cluster.conf` (or `--config-file`)
//! with the rules of the `cluster` crate and write it back whole, through a
//! temporary file and a rename, so a failure never leaves half a file. The verbs
//! that drive the running cluster stack (`register-cluster`, `start-heartbeat`,
//! `cluster-status`, ...) resolve cluster.conf and `/etc/default/o2cb` into a
//! [`ClusterSpec`] and talk to the node daemon, starting it if needed.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cluster::conf::{heartbeat_stanza, node_stanza, ClusterConf, HeartbeatMode};
use cluster::settings::O2cbSettings;
use node::cluster_spec::{ClusterNode, ClusterSpec};
use node::control::{self, ClusterStatus, Request, Response};

const DEFAULT_CONFIG_FILE: &str = "/etc/ocfs2/cluster.conf";
/// The o2cb service's settings.
pub const SETTINGS_FILE: &str = "/etc/default/o2cb";

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
    /// Start the cluster stack for a cluster on this node (listening, not yet
    /// heartbeating).
    RegisterCluster { cluster: String },
    /// Stop the cluster stack.
    UnregisterCluster { cluster: String },
    /// Start the global heartbeat on the cluster's regions and join the cluster.
    StartHeartbeat { cluster: String },
    /// Stop the heartbeat: leave the cluster.
    StopHeartbeat { cluster: String },
    /// Show the state of the cluster stack: nodes, heartbeat, fencing.
    ClusterStatus { cluster: Option<String> },
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
    match &args.command {
        Verb::RegisterCluster { cluster } => return register_cluster(&conf, cluster),
        Verb::UnregisterCluster { cluster } => return unregister_cluster(cluster),
        Verb::StartHeartbeat { cluster } => return start_heartbeat(&conf, cluster),
        Verb::StopHeartbeat { cluster } => return stop_heartbeat(cluster),
        Verb::ClusterStatus { cluster } => return cluster_status(cluster.as_deref()),
        _ => {}
    }
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
        Verb::RegisterCluster { .. }
        | Verb::UnregisterCluster { .. }
        | Verb::StartHeartbeat { .. }
        | Verb::StopHeartbeat { .. }
        | Verb::ClusterStatus { .. } => unreachable!("handled above"),
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

/// `/etc/default/o2cb`; a missing file means the defaults.
pub fn read_settings() -> Result<O2cbSettings, String> {
    match std::fs::read_to_string(SETTINGS_FILE) {
        Ok(text) => O2cbSettings::parse(&text, SETTINGS_FILE).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(O2cbSettings::default()),
        Err(e) => Err(format!("{SETTINGS_FILE}: {e}")),
    }
}

/// What the daemon needs for `cluster`: its nodes, this node (by host name,
/// as o2cb finds it) and the timeouts.
pub fn cluster_spec(
    conf: &ClusterConf,
    cluster: &str,
    settings: &O2cbSettings,
) -> Result<ClusterSpec, String> {
    conf.cluster(cluster)
        .ok_or_else(|| format!("Unknown cluster '{cluster}'"))?;
    let host = drbd_config::this_hostname();
    let nodes: Vec<ClusterNode> = conf
        .nodes_of(cluster)
        .map(|n| ClusterNode {
            number: n.number,
            name: n.name.clone(),
            ip: n.ip_address,
            port: n.ip_port,
        })
        .collect();
    let local = nodes
        .iter()
        .find(|n| drbd_config::hostnames_equal(&n.name, &host))
        .ok_or_else(|| {
            format!("this host, '{host}', is not a node of cluster '{cluster}' in cluster.conf")
        })?
        .number;
    let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    Ok(ClusterSpec {
        cluster: cluster.to_string(),
        local,
        nodes,
        heartbeat_threshold: settings.heartbeat_threshold,
        idle_timeout_ms: ms(settings.idle_timeout),
        keepalive_delay_ms: ms(settings.keepalive_delay),
        reconnect_delay_ms: ms(settings.reconnect_delay),
    })
}

fn call(request: &Request) -> Result<Response, String> {
    control::call(
        &control::socket_path(),
        request,
        std::time::Duration::from_secs(60),
    )
    .map_err(|e| format!("the tandem daemon does not answer: {e}"))
}

fn expect_ok(response: Response) -> Result<(), String> {
    match response {
        Response::Error { message, .. } => Err(message),
        _ => Ok(()),
    }
}

pub fn register_cluster(conf: &ClusterConf, cluster: &str) -> Result<(), String> {
    let spec = cluster_spec(conf, cluster, &read_settings()?)?;
    crate::cli::daemon::ensure()?;
    expect_ok(call(&Request::ClusterRegister(spec))?)
}

pub fn unregister_cluster(cluster: &str) -> Result<(), String> {
    if call(&Request::Ping).is_err() {
        // No daemon: nothing is registered.
        return Ok(());
    }
    expect_ok(call(&Request::ClusterUnregister {
        cluster: cluster.to_string(),
    })?)
}

pub fn start_heartbeat(conf: &ClusterConf, cluster: &str) -> Result<(), String> {
    let c = conf
        .cluster(cluster)
        .ok_or_else(|| format!("Unknown cluster '{cluster}'"))?;
    if c.heartbeat_mode != HeartbeatMode::Global {
        return Err(format!(
            "cluster '{cluster}' uses local heartbeat, which starts when a volume is mounted; \
             for a cluster-wide heartbeat set `o2cb heartbeat-mode {cluster} global` and add a \
             region with `o2cb add-heartbeat`"
        ));
    }
    let regions = conf
        .heartbeats_of(cluster)
        .map(|h| resolve_region(&h.region))
        .collect::<Result<Vec<_>, _>>()?;
    expect_ok(call(&Request::HeartbeatStart {
        cluster: cluster.to_string(),
        regions,
    })?)
}

pub fn stop_heartbeat(cluster: &str) -> Result<(), String> {
    expect_ok(call(&Request::HeartbeatStop {
        cluster: cluster.to_string(),
    })?)
}

/// A heartbeat region is a path, or the UUID of an OCFS2 volume on one of
/// this machine's block devices (as the real tool records it).
fn resolve_region(region: &str) -> Result<String, String> {
    if region.starts_with('/') {
        return Ok(region.to_string());
    }
    let wanted = region.replace('-', "").to_ascii_uppercase();
    let entries = std::fs::read_dir("/dev").map_err(|e| format!("/dev: {e}"))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_block = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
            .unwrap_or(false);
        if !is_block {
            continue;
        }
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if let Ok(volume) = ocfs2::Volume::open(file) {
            if volume.superblock().uuid_hex().to_ascii_uppercase() == wanted {
                return Ok(path.display().to_string());
            }
        }
    }
    Err(format!(
        "heartbeat region {region}: no OCFS2 volume with that UUID on this machine's block devices"
    ))
}

pub fn status() -> Result<Option<ClusterStatus>, String> {
    if call(&Request::Ping).is_err() {
        return Ok(None);
    }
    match call(&Request::ClusterStatus)? {
        Response::Cluster(status) => Ok(Some(status)),
        _ => Ok(None),
    }
}

fn cluster_status(cluster: Option<&str>) -> Result<(), String> {
    let status = status()?.filter(|s| cluster.is_none_or(|c| c == s.cluster));
    let Some(s) = status else {
        match cluster {
            Some(c) => println!("Cluster '{c}' is offline"),
            None => println!("No cluster is online"),
        }
        return Ok(());
    };
    match (&s.fenced, s.online) {
        (Some(reason), _) => println!("Cluster '{}' is fenced: {reason}", s.cluster),
        (None, true) => println!("Cluster '{}' is online", s.cluster),
        (None, false) => println!(
            "Cluster '{}' is registered; heartbeat not started",
            s.cluster
        ),
    }
    for region in &s.regions {
        println!("  Global heartbeat region {region}");
    }
    for n in &s.nodes {
        let mut state = Vec::new();
        if n.local {
            state.push("this node");
        }
        if n.member {
            state.push("member");
        }
        if n.connected {
            state.push("connected");
        }
        if n.heartbeating {
            state.push("heartbeating");
        }
        if state.is_empty() {
            state.push("down");
        }
        println!(
            "  Node {} {} {}: {}",
            n.number,
            n.name,
            n.address,
            state.join(", ")
        );
    }
    Ok(())
}
