//! `tandem lab`: bring the multi-node lab up and down, run commands in its nodes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use lab::Lab;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Create the nodes (nodo1, nodo2, ...): namespaces, two 1 GiB disks each, an address.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
    },
    /// Remove everything the lab made: processes, mounts, loop devices, namespaces, files.
    Down,
    /// List nodes, addresses, disks, processes and mounts.
    Status,
    /// Run a command inside a node; the exit status is the command's.
    Exec {
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// An interactive shell inside a node.
    Shell { node: String },
    /// (internal) Prepare a node from inside its fresh namespaces.
    #[command(hide = true)]
    SetupNode {
        #[arg(long)]
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// NAME=ADDRESS,...
        #[arg(long)]
        hosts: String,
        /// DISK=LOOPDEV,...
        #[arg(long)]
        disks: String,
    },
}

pub fn main(command: LabCommand) -> ExitCode {
    match run(command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem lab: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: LabCommand) -> Result<ExitCode> {
    let lab = Lab::from_env();
    match command {
        LabCommand::Up { nodes } => {
            let me = std::env::current_exe().context("finding the tandem binary")?;
            lab.up(nodes, &me)?;
            println!("lab up at {}", lab.dir().display());
            print_status(&lab)?;
        }
        LabCommand::Down => {
            if !lab.exists() {
                println!("no lab at {}: nothing to do", lab.dir().display());
                return Ok(ExitCode::SUCCESS);
            }
            let report = lab.down()?;
            println!(
                "lab down: {} processes stopped, {} namespaces and {} loop devices removed, {} deleted",
                report.processes_killed,
                report.namespaces_removed,
                report.loop_devices_detached,
                lab.dir().display()
            );
        }
        LabCommand::Status => {
            if !lab.exists() {
                println!(
                    "no lab at {} (`tandem lab up` makes one)",
                    lab.dir().display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            print_status(&lab)?;
        }
        LabCommand::Exec { node, command } => {
            lab.exec(&node, &command)?;
        }
        LabCommand::Shell { node } => {
            std::env::set_var("PS1", format!("[{node}] \\w\\$ "));
            let shell = [OsString::from("bash"), "--norc".into(), "-i".into()];
            lab.exec(&node, &shell)?;
        }
        LabCommand::SetupNode {
            name,
            dir,
            hosts,
            disks,
        } => {
            lab::setup_node(&name, &dir, &pairs(&hosts)?, &pairs(&disks)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `A=B,C=D` into pairs.
fn pairs(text: &str) -> Result<Vec<(String, String)>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (a, b) = pair
                .split_once('=')
                .with_context(|| format!("expected NAME=VALUE, got {pair:?}"))?;
            Ok((a.to_string(), b.to_string()))
        })
        .collect()
}

fn print_status(lab: &Lab) -> Result<()> {
    let nodes = lab.nodes()?;
    println!("lab {}: {} nodes", lab.dir().display(), nodes.len());
    for node in nodes {
        let state = if node.mount_namespace_id().is_some() {
            ""
        } else {
            " (no namespaces: half-made, run `tandem lab down`)"
        };
        println!("{}  address {}{state}", node.name, node.address);
        for disk in node.disks() {
            println!(
                "  disk /dev/{}: {} ({:.1} GiB, {})",
                disk.name,
                disk.loop_device.as_deref().unwrap_or("not attached"),
                disk.size as f64 / f64::from(1u32 << 30),
                disk.image.display()
            );
        }
        let processes = node.processes();
        if processes.is_empty() {
            println!("  processes: none");
        }
        for process in processes {
            println!("  process {}: {}", process.pid, process.command);
        }
        if node.mount_namespace_id().is_some() {
            let mounts = lab.node_mounts(&node.name)?;
            if mounts.is_empty() {
                println!("  mounts: none");
            }
            for mount in mounts {
                println!(
                    "  mount {} on {} type {}",
                    mount.source,
                    mount.mount_point.display(),
                    mount.fs_type
                );
            }
        }
    }
    Ok(())
}
