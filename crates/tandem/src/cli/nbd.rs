//! `tandem nbd export|unexport RES`: a resource served over NBD by the node
//! daemon, beside `/dev/drbdN`, for clients such as `qemu-io`, `qemu-img`,
//! `nbdcopy` or a virtual machine's disk. I/O follows the role: refused on a
//! Secondary.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use node::control::{self, Request, Response};

#[derive(Subcommand)]
pub enum NbdCommand {
    /// Serve a resource that is up over NBD (export name: the resource's).
    Export {
        resource: String,
        /// IP:PORT to listen on (default: this node's address in the
        /// resource, port 10809).
        #[arg(long, value_name = "IP:PORT")]
        listen: Option<String>,
    },
    /// Stop serving a resource over NBD.
    Unexport { resource: String },
}

pub fn main(command: NbdCommand) -> ExitCode {
    let request = match &command {
        NbdCommand::Export { resource, listen } => Request::NbdExport {
            resource: resource.clone(),
            listen: listen.clone(),
        },
        NbdCommand::Unexport { resource } => Request::NbdUnexport {
            resource: resource.clone(),
        },
    };
    let socket = control::socket_path();
    match control::call(&socket, &request, Duration::from_secs(30)) {
        Ok(Response::Exported { address }) => {
            if let NbdCommand::Export { resource, .. } = &command {
                println!("{resource}: exported over NBD on {address} (nbd://{address}/{resource})");
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message, .. }) => {
            eprintln!("tandem nbd: {message}");
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "tandem nbd: no tandem daemon answers on {} ({e}); `drbdadm up` starts it",
                socket.display()
            );
            ExitCode::FAILURE
        }
    }
}
