//! The drbdadm verbs that talk to the node daemon: `up`, `down`, `primary`,
//! `secondary`, `connect`, `disconnect`, `verify`, `invalidate`,
//! `invalidate-remote`, `new-current-uuid`, `outdate`, `pause-sync`, `resume-sync`,
//! `detach`, `attach`, `status`, `role`, `cstate`, `dstate`, `wait-connect`,
//! `wait-sync`, `adjust`.
//!
//! The configuration is read here; the daemon gets a resolved [`ResourceSpec`].
//! `up` starts the daemon when none answers (fully detached, logging to
//! `/run/tandem/tandemd.log`).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use drbd_config::{Config, Resource};
use node::control::{self, Request, ResourceStatus, Response};
use node::spec::{PeerSpec, ResourceSpec};

const EXIT_CONFIG: u8 = 10;
const EXIT_STATE_CHANGE: u8 = 11;
const EXIT_DAEMON: u8 = 20;
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Options {
    pub force: bool,
    pub discard_my_data: bool,
    pub clear_bitmap: bool,
}

pub fn run(verb: &str, config_path: &Path, names: &[String], options: &Options) -> ExitCode {
    match run_inner(verb, config_path, names, options) {
        Ok(code) => code,
        Err((message, code)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (String, u8);

fn load(config_path: &Path) -> Result<Config, Failure> {
    let options = drbd_config::LoadOptions {
        hostname: drbd_config::this_hostname(),
    };
    let config = drbd_config::load(config_path, &options).map_err(|e| {
        (
            e.to_string(),
            u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG),
        )
    })?;
    // Options as they apply: common → resource → connection.
    config.expand().map_err(|e| {
        (
            e.to_string(),
            u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG),
        )
    })
}

/// The resources named (`all` or none: every resource of this host).
fn resources<'a>(config: &'a Config, names: &[String]) -> Result<Vec<&'a Resource>, Failure> {
    let all = names.is_empty() || names.iter().any(|n| n == "all");
    if all {
        return Ok(config
            .resources
            .iter()
            .filter(|r| r.me().is_some())
            .collect());
    }
    names
        .iter()
        .map(|name| {
            config
                .resource(name)
                .filter(|r| r.me().is_some())
                .ok_or_else(|| {
                    (
                        format!("'{name}' not defined in your config (for this host)."),
                        EXIT_CONFIG,
                    )
                })
        })
        .collect()
}

/// What the daemon needs, from the configuration.
pub fn spec_of(r: &Resource) -> Result<ResourceSpec, Failure> {
    let fail = |what: String| (format!("{}: {what}", r.name), EXIT_CONFIG);
    let me = r
        .me()
        .ok_or_else(|| fail("no section for this host".into()))?;
    let volume = me
        .volumes
        .first()
        .or(r.volumes.first())
        .ok_or_else(|| fail("no volume".into()))?;
    if me.volumes.len() > 1 {
        return Err(fail(
            "more than one volume per resource is not implemented yet".into(),
        ));
    }
    let device = volume
        .device_path()
        .ok_or_else(|| fail("no device".into()))?;
    let minor = volume.minor.ok_or_else(|| fail("no minor number".into()))?;
    let disk = volume
        .disk
        .clone()
        .filter(|d| d != "none")
        .ok_or_else(|| fail("diskless nodes are not implemented yet".into()))?;
    if !matches!(volume.meta_disk, Some(drbd_config::MetaDisk::Internal)) {
        return Err(fail("only 'meta-disk internal' is implemented".into()));
    }
    let address = |host: &drbd_config::Host| {
        host.address
            .as_ref()
            .map(|a| match a.ip.contains(':') {
                true => format!("[{}]:{}", a.ip, a.port),
                false => format!("{}:{}", a.ip, a.port),
            })
            .ok_or_else(|| fail(format!("host {} has no address", host.name())))
    };
    let node_id = |host: &drbd_config::Host| {
        host.node_id
            .and_then(|id| u8::try_from(id).ok())
            .ok_or_else(|| fail(format!("host {} has no node-id", host.name())))
    };
    let peers = r
        .peers()
        .map(|h| {
            Ok(PeerSpec {
                node_id: node_id(h)?,
                name: h.name(),
                address: address(h)?,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(ResourceSpec {
        name: r.name.clone(),
        device,
        minor,
        disk,
        node_id: node_id(me)?,
        host: me.name(),
        address: address(me)?,
        peers,
        protocol: r.protocol().to_string(),
        allow_two_primaries: r.sections.net.flag("allow-two-primaries").unwrap_or(false),
        resync_rate: resync_rate_of(r),
        on_io_error_detach: r
            .sections
            .disk
            .get("on-io-error")
            .is_none_or(|policy| policy == "detach"),
    })
}

/// The resync rate limit in bytes per second, as DRBD reads its options:
/// `c-plan-ahead 0` turns the dynamic controller off and a resync goes at
/// `resync-rate` (default 250 KiB/s); otherwise the controller may go up to
/// `c-max-rate`. Only a `c-max-rate` given in the configuration limits it
/// here (0: no limit): DRBD's default, 100 MiB/s, would hold back a resync
/// between disks that are faster, and none is what we measure against.
fn resync_rate_of(r: &Resource) -> Option<u64> {
    let option = |name| {
        r.sections
            .peer_device
            .number(name)
            .or_else(|| r.sections.disk.number(name))
    };
    let kib = if option("c-plan-ahead") == Some(0) {
        Some(option("resync-rate").unwrap_or(250))
    } else {
        option("c-max-rate").filter(|&kib| kib > 0)
    };
    kib.map(|kib| kib.saturating_mul(1024))
}

fn call(request: &Request) -> Result<Response, Failure> {
    let socket = control::socket_path();
    control::call(&socket, request, CALL_TIMEOUT).map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "{}: permission denied: only root talks to the daemon",
                socket.display()
            )
        } else {
            format!(
                "no tandem daemon answers on {} ({e}); `drbdadm up` starts it",
                socket.display()
            )
        };
        (message, EXIT_DAEMON)
    })
}

fn expect_ok(response: Response) -> Result<(), Failure> {
    match response {
        Response::Error { message, code } => Err((message, u8::try_from(code).unwrap_or(1))),
        _ => Ok(()),
    }
}

fn statuses(name: Option<&str>) -> Result<Vec<ResourceStatus>, Failure> {
    match call(&Request::Status {
        resource: name.map(str::to_string),
    })? {
        Response::Status(all) => Ok(all),
        Response::Error { message, code } => Err((message, u8::try_from(code).unwrap_or(1))),
        _ => Ok(Vec::new()),
    }
}

fn run_inner(
    verb: &str,
    config_path: &Path,
    names: &[String],
    options: &Options,
) -> Result<ExitCode, Failure> {
    let config = load(config_path)?;
    let targets = resources(&config, names)?;
    match verb {
        "attach" => {
            crate::cli::daemon::ensure().map_err(|e| (e, EXIT_DAEMON))?;
            for r in &targets {
                expect_ok(call(&Request::Attach(spec_of(r)?))?)?;
            }
        }
        "detach" => {
            for r in &targets {
                expect_ok(call(&Request::Detach {
                    resource: r.name.clone(),
                })?)?;
            }
        }
        "up" | "adjust" => {
            crate::cli::daemon::ensure().map_err(|e| (e, EXIT_DAEMON))?;
            for r in &targets {
                expect_ok(call(&Request::Up(spec_of(r)?))?)?;
            }
        }
        "down" => {
            for r in &targets {
                match call(&Request::Down {
                    resource: r.name.clone(),
                }) {
                    Err(_) => {} // no daemon: nothing is up
                    Ok(response) => expect_ok(response)?,
                }
            }
        }
        "primary" => each(&targets, |resource| Request::Primary {
            resource,
            force: options.force,
        })?,
        "secondary" => each(&targets, |resource| Request::Secondary { resource })?,
        "connect" => each(&targets, |resource| Request::Connect {
            resource,
            discard_my_data: options.discard_my_data,
        })?,
        "verify" => {
            for r in &targets {
                // syncer { verify-alg } is moved to net by the configuration model.
                let alg = r.sections.net.get("verify-alg").ok_or_else(|| {
                    (
                        format!(
                            "{}: State change failed: (-14) Need a verify algorithm to start online verify",
                            r.name
                        ),
                        EXIT_STATE_CHANGE,
                    )
                })?;
                replication::VerifyAlg::from_name(alg)
                    .map_err(|e| (format!("{}: {e}", r.name), EXIT_CONFIG))?;
                expect_ok(call(&Request::Verify {
                    resource: r.name.clone(),
                    alg: alg.to_string(),
                })?)?;
            }
        }
        "disconnect" => each(&targets, |resource| Request::Disconnect { resource })?,
        "invalidate" => each(&targets, |resource| Request::Invalidate { resource })?,
        "outdate" => each(&targets, |resource| Request::Outdate { resource })?,
        verb @ ("pause-sync" | "resume-sync") => each(&targets, |resource| Request::PauseSync {
            resource,
            paused: verb == "pause-sync",
        })?,
        "new-current-uuid" => each(&targets, |resource| Request::NewCurrentUuid {
            resource,
            clear_bitmap: options.clear_bitmap,
        })?,
        "invalidate-remote" => each(&targets, |resource| Request::InvalidateRemote { resource })?,
        "status" => {
            for r in &targets {
                for s in statuses(Some(&r.name))? {
                    print!("{}", node::status::format(&s));
                }
            }
        }
        "role" => {
            for r in &targets {
                for s in statuses(Some(&r.name))? {
                    println!("{}", s.role);
                }
            }
        }
        "cstate" => {
            for r in &targets {
                for s in statuses(Some(&r.name))? {
                    for p in &s.peers {
                        println!("{}", p.connection);
                    }
                }
            }
        }
        "dstate" => {
            for r in &targets {
                for s in statuses(Some(&r.name))? {
                    for p in &s.peers {
                        println!("{}/{}", s.disk, p.disk.as_deref().unwrap_or("DUnknown"));
                    }
                }
            }
        }
        "wait-connect" => {
            for r in &targets {
                wait(&r.name, "connected", |s| {
                    s.peers
                        .iter()
                        .all(|p| p.connection == "Connected" && p.replication != "Off")
                })?;
            }
        }
        "wait-sync" => {
            for r in &targets {
                wait(&r.name, "in sync", |s| {
                    s.peers.iter().all(|p| {
                        p.connection == "Connected"
                            && p.replication == "Established"
                            && p.disk.as_deref() == Some("UpToDate")
                    }) && s.disk == "UpToDate"
                })?;
            }
        }
        other => {
            return Err((
                format!("drbdadm: '{other}' is not implemented by tandem yet"),
                EXIT_DAEMON,
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the daemon the request `make` builds for each target resource, in
/// turn; the first refusal ends the command.
fn each(targets: &[&Resource], make: impl Fn(String) -> Request) -> Result<(), Failure> {
    for r in targets {
        expect_ok(call(&make(r.name.clone()))?)?;
    }
    Ok(())
}

/// Polls the status until `done`; on a terminal, shows resync progress.
fn wait(name: &str, what: &str, done: impl Fn(&ResourceStatus) -> bool) -> Result<(), Failure> {
    let terminal = std::io::stdout().is_terminal();
    let mut shown = String::new();
    loop {
        let all = statuses(Some(name))?;
        let Some(status) = all.first() else {
            return Err((format!("{name}: not up"), EXIT_CONFIG));
        };
        if done(status) {
            if terminal {
                println!("\r{name}: {what}{:40}", "");
            }
            return Ok(());
        }
        if terminal {
            let syncing = status.peers.iter().find(|p| p.replication.contains("Sync"));
            if let Some(p) = syncing {
                let done = node::status::done(p.sync_total, p.out_of_sync);
                let filled = (done / 5.0) as usize;
                let line = format!(
                    "\r{name} {}: [{}{}] {done:.2}%",
                    p.replication,
                    "#".repeat(filled),
                    ".".repeat(20 - filled.min(20))
                );
                if line != shown {
                    print!("{line}");
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                    shown = line;
                }
            }
        }
        // A status costs the daemon a fraction of a millisecond: ask often,
        // so the command ends within 10 ms of what it waits for.
        std::thread::sleep(Duration::from_millis(10));
    }
}
