//! `drbdadm`: the DRBD administration tool's command line.
//!
//! Implemented so far: `dump`; the meta-data verbs `create-md`, `dump-md`,
//! `show-gi`, `get-gi`, `wipe-md`, `apply-al` ([`meta`], which does in-process
//! what drbdadm has `drbdmeta` do); and the verbs served by the node daemon
//! (`up`, `down`, `primary`, `secondary`, `connect`, `disconnect`, `verify`,
//! `invalidate`, `invalidate-remote`, `new-current-uuid`, `outdate`, `pause-sync`,
//! `resume-sync`, `detach`, `attach`, `status`, `role`, `cstate`, `dstate`,
//! `wait-connect`, `wait-sync`, `adjust`: [`admin`]). The configuration file is found as drbd-utils
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
    /// new-current-uuid: on fresh meta-data connected to every peer's, skip the
    /// initial sync (every disk becomes UpToDate).
    #[arg(long = "clear-bitmap")]
    clear_bitmap: bool,
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

/// drbdadm's older form `drbdadm -- --clear-bitmap new-current-uuid r0`
/// (options for the backend after `--`, before the command) as the newer
/// `drbdadm --clear-bitmap new-current-uuid r0`.
fn backend_options_first(mut args: Vec<OsString>) -> Vec<OsString> {
    if let Some(at) = args.iter().position(|a| a == "--") {
        let options = args[at + 1..]
            .iter()
            .take_while(|a| a.to_string_lossy().starts_with("--"))
            .count();
        if options > 0 {
            args.remove(at);
        }
    }
    args
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = backend_options_first(args);
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
        | "disconnect" | "verify" | "invalidate" | "invalidate-remote" | "outdate"
        | "pause-sync" | "resume-sync" | "new-current-uuid" | "detach" | "status"
        | "role" | "cstate" | "dstate" | "wait-connect" | "wait-sync") => {
            let options = admin::Options {
                force: args.force,
                discard_my_data: args.discard_my_data,
                clear_bitmap: args.clear_bitmap,
            };
            admin::run(verb, &config_file(&args), &args.resources, &options)
        }
        other => {
            eprintln!(
                "drbdadm: '{other}' is not a command tandem implements yet (implemented: dump, \
                 create-md, dump-md, show-gi, get-gi, wipe-md, apply-al, up, down, adjust, attach, \
                 primary, secondary, connect, disconnect, verify, invalidate, invalidate-remote, \
                 new-current-uuid, outdate, pause-sync, resume-sync, detach, \
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Args {
        let args = line.split(' ').map(OsString::from).collect();
        Args::parse_from(
            std::iter::once(OsString::from("drbdadm")).chain(backend_options_first(args)),
        )
    }

    #[test]
    fn backend_options_before_the_command_are_options() {
        for line in [
            "-- --clear-bitmap new-current-uuid r0",
            "--clear-bitmap new-current-uuid r0",
            "new-current-uuid --clear-bitmap r0",
        ] {
            let args = parse(line);
            assert!(args.clear_bitmap, "{line}");
            assert_eq!(args.command, "new-current-uuid", "{line}");
            assert_eq!(args.resources, ["r0"], "{line}");
        }
        let args = parse("new-current-uuid r0");
        assert!(!args.clear_bitmap);
    }
}
