//! `tandem`: one binary for every command-line tool of the project.
//!
//! Called as `tandem SUBCOMMAND ...`, or through a link named after the tool it
//! stands in for (`drbdadm`, `o2cb`, `mkfs.ocfs2`), so the seed's command lines run unchanged. The
//! commands are thin: they parse arguments and call the crates that do the work.

mod cli;

/// The daemon's write path allocates and frees a 4 KiB-aligned buffer per
/// block written; glibc's allocator spent about 4% of the CPU of a 4 KiB
/// random-write load doing it (consolidating free chunks, aligned splits).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Replicated block devices and a shared-disk cluster filesystem, in userspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The multi-node lab: simulated machines on this host.
    #[command(subcommand)]
    Lab(cli::lab::LabCommand),
    /// DRBD administration, as drbd-utils' drbdadm (also reachable as `drbdadm`).
    #[command(disable_help_flag = true)]
    Drbdadm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The o2cb cluster stack's configuration, as ocfs2-tools' o2cb (also reachable as `o2cb`).
    #[command(disable_help_flag = true)]
    O2cb {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Format a device as OCFS2, as ocfs2-tools' mkfs.ocfs2 (also reachable as `mkfs.ocfs2`).
    #[command(name = "mkfs.ocfs2", disable_help_flag = true)]
    MkfsOcfs2 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The node daemon (started by `drbdadm up`; runs until `drbdadm down` of
    /// everything and a shutdown request).
    Daemon,
    /// The lock manager from the shell: take, hold and release a lock; list locks.
    #[command(subcommand)]
    Dlm(cli::dlm::DlmCommand),
    /// Start, stop or show a service, as `systemctl` would (`service o2cb start`).
    Service {
        service: cli::service::Service,
        #[command(subcommand)]
        action: cli::service::Action,
    },
    /// Serve a resource over NBD, beside /dev/drbdN.
    #[command(subcommand)]
    Nbd(cli::nbd::NbdCommand),
    /// Mount an OCFS2 volume through FUSE (read-only so far: `-o ro`).
    Mount(cli::mount::MountArgs),
    /// Offline, read-only inspection of an OCFS2 volume.
    #[command(subcommand)]
    Ocfs2(cli::ocfs2::Ocfs2Command),
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let called_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match called_as.as_str() {
        "drbdadm" => {
            args.remove(0);
            return cli::drbdadm::main(args);
        }
        "o2cb" => {
            args.remove(0);
            return cli::o2cb::main(args);
        }
        "mkfs.ocfs2" => {
            args.remove(0);
            return cli::mkfs_ocfs2::main(args);
        }
        _ => {}
    }
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Lab(command) => cli::lab::main(command),
        Command::Drbdadm { args } => cli::drbdadm::main(args),
        Command::O2cb { args } => cli::o2cb::main(args),
        Command::MkfsOcfs2 { args } => cli::mkfs_ocfs2::main(args),
        Command::Ocfs2(command) => cli::ocfs2::main(command),
        Command::Mount(args) => cli::mount::main(args),
        Command::Dlm(command) => cli::dlm::main(command),
        Command::Nbd(command) => cli::nbd::main(command),
        Command::Service { service, action } => cli::service::main(service, action),
        Command::Daemon => match node::daemon::run(&node::control::socket_path()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tandemd: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
