//! `drbdadm`: the DRBD administration tool's command line.
//!
//! Implemented so far: `dump`; the meta-data verbs `create-md`, `dump-md`,
//! `show-gi`, `get-gi`, `wipe-md`, `apply-al` ([`meta`], which does in-process
//! what drbdadm has `drbdmeta` do); and the verbs served by the node daemon
//! (`up`, `down`, `primary`, `secondary`, `connect`, `disconnect`, `verify`,
//! `invalidate`, `invalidate-remote`, `detach`, `attach`, `status`, `role`,
//! `cstate`, `dstate`, `wait-connect`, `wait-sync`, `adjust`: [`admin`]). The configuration file is found as drbd-utils
//! finds it (`-c FILE`, else the first of `/etc/drbd-90.conf` and `/etc/drbd.conf`
//! that exists); "this host" is `__DRBD_NODE__` or `uname -n`.

mod admin;
mod device;
mod meta;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// drbdadm's own exit code for a command it does not know.
const EXIT_UNKNOWN_COMMAND: u8 = 20;

#[derive(Parser)]
#[command(name = "drbdadm", about = "DRBD administration (tandem)")]
struct Args {
    /// Configuration file to read instead of /etc/drbd.conf.
    #[arg(short = 'c', long = "config-file")]
    config_file: Option<PathBuf>,
    /// Answer every confirmation question with yes (meta-data verbs); for
    /// `primary`, become Primary without UpToDate data.
    #[arg(long)]
    force: bool,
    /// connect: give up this node's data and take the peer's (split-brain recovery).
    #[arg(long = "discard-my-data")]
    discard_my_data: bool,
    /// create-md: number of peers to reserve bitmaps for (default: the peers with
    /// a disk in the configuration).
    #[arg(long = "max-peers")]
    max_peers: Option<u32>,
    /// The command: dump, create-md, dump-md, show-gi, get-gi, wipe-md, apply-al.
    command: String,
    /// Resources (`all` or none means every resource).
    resources: Vec<String>,
}

const DEFAULT_CONFIG_FILES: [&str; 2] = ["/etc/drbd-90.conf", "/etc/drbd.conf"];

pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(std::iter::once(OsString::from("drbdadm")).chain(args));
    match args.command.as_str() {
        "dump" => dump(&args),
        verb @ ("create-md" | "dump-md" | "show-gi" | "get-gi" | "wipe-md" | "apply-al") => {
            let options = meta::Options {
                force: args.force,
                max_peers: args.max_peers,
            };
            meta::run(verb, &config_file(&args), &args.resources, &options)
        }
        verb @ ("up" | "down" | "adjust" | "attach" | "primary" | "secondary" | "connect"
        | "disconnect" | "verify" | "invalidate" | "invalidate-remote" | "detach"
        | "status" | "role" | "cstate" | "dstate" | "wait-connect" | "wait-sync") => {
            let options = admin::Options {
                force: args.force,
                discard_my_data: args.discard_my_data,
            };
            admin::run(verb, &config_file(&args), &args.resources, &options)
        }
        other => {
            eprintln!(
                "drbdadm: '{other}' is not a command tandem implements yet (implemented: dump, \
                 create-md, dump-md, show-gi, get-gi, wipe-md, apply-al, up, down, adjust, attach, \
                 primary, secondary, connect, disconnect, verify, invalidate, invalidate-remote, detach, \
                 status, role, cstate, dstate, \
                 wait-connect, wait-sync)"
            );
            ExitCode::from(EXIT_UNKNOWN_COMMAND)
        }
    }
}

fn config_file(args: &Args) -> PathBuf {
    args.config_file.clone().unwrap_or_else(|| {
        DEFAULT_CONFIG_FILES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILES[1]))
    })
}

fn dump(args: &Args) -> ExitCode {
    let options = drbd_config::LoadOptions {
        hostname: drbd_config::this_hostname(),
    };
    let result = drbd_config::load(&config_file(args), &options).and_then(|config| {
        let wanted: Vec<&str> = args
            .resources
            .iter()
            .map(String::as_str)
            .filter(|r| *r != "all")
            .collect();
        if wanted.is_empty() {
            return config.dump(None);
        }
        let mut text = String::new();
        for resource in wanted {
            text.push_str(&config.dump(Some(resource))?);
        }
        Ok(text)
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
        }
    }
}
