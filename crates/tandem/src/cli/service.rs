//! `tandem service o2cb start|stop|status`: what `systemctl start o2cb` runs
//! on a machine with ocfs2-tools (its `o2cb.init`). With `O2CB_ENABLED=true`
//! in `/etc/default/o2cb`, `start` registers `O2CB_BOOTCLUSTER` and, in global
//! heartbeat mode, starts the heartbeat; `stop` undoes both.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
pub enum Service {
    O2cb,
}

#[derive(Clone, Copy, Subcommand)]
pub enum Action {
    Start,
    Stop,
    Status,
}

const CLUSTER_CONF: &str = "/etc/ocfs2/cluster.conf";

pub fn main(_service: Service, action: Action) -> ExitCode {
    match run(action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("o2cb: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(action: Action) -> Result<(), String> {
    let settings = crate::cli::o2cb::read_settings()?;
    let cluster = settings.boot_cluster.clone();
    match action {
        Action::Start => {
            if !settings.enabled {
                println!(
                    "o2cb is not enabled (O2CB_ENABLED in {})",
                    crate::cli::o2cb::SETTINGS_FILE
                );
                return Ok(());
            }
            let cluster = cluster.ok_or_else(|| {
                format!(
                    "O2CB_BOOTCLUSTER is not set in {}",
                    crate::cli::o2cb::SETTINGS_FILE
                )
            })?;
            let text = std::fs::read_to_string(CLUSTER_CONF)
                .map_err(|e| format!("{CLUSTER_CONF}: {e}"))?;
            let conf = cluster::conf::ClusterConf::parse(&text, CLUSTER_CONF)
                .map_err(|e| e.to_string())?;
            println!("Registering O2CB cluster \"{cluster}\": ");
            crate::cli::o2cb::register_cluster(&conf, &cluster)?;
            let global = conf
                .cluster(&cluster)
                .is_some_and(|c| c.heartbeat_mode == cluster::conf::HeartbeatMode::Global);
            if global {
                println!("Starting global heartbeat for cluster \"{cluster}\": ");
                crate::cli::o2cb::start_heartbeat(&conf, &cluster)?;
            }
            println!("OK");
            Ok(())
        }
        Action::Stop => {
            let Some(status) = crate::cli::o2cb::status()? else {
                return Ok(());
            };
            if status.online {
                crate::cli::o2cb::stop_heartbeat(&status.cluster)?;
            }
            println!("Unregistering O2CB cluster \"{}\": OK", status.cluster);
            crate::cli::o2cb::unregister_cluster(&status.cluster)
        }
        Action::Status => {
            match crate::cli::o2cb::status()? {
                Some(s) if s.fenced.is_some() => {
                    println!("O2CB cluster {} fenced", s.cluster)
                }
                Some(s) if s.online => println!("O2CB cluster {} online", s.cluster),
                Some(s) => println!("O2CB cluster {} registered, offline", s.cluster),
                None => println!("O2CB offline"),
            }
            Ok(())
        }
    }
}
