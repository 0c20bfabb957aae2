//! After parsing: inheritance, implicit objects and consistency checks.
//!
//! The steps and their order follow drbdadm so that, of several problems,
//! the same one is reported first:
//! 1. resource-level volumes are inherited into every host section, and each
//!    host's volumes are checked for completeness;
//! 2. stacked resources learn their lower resource;
//! 3. connections: explicit paths need two ends, meshes and the implicit
//!    two-host connection are created, path ends are tied to host sections,
//!    and hosts without `node-id` get one (two hosts only) or are refused;
//! 4. no address may be used by two resources;
//! 5. "this host" is chosen for every resource;
//! 6. per-volume peer devices are filled in;
//! 7. final validation (`resync-after` targets, `after-sb-0pri` names).

use std::path::PathBuf;

use crate::error::Error;
use crate::model::*;
use crate::parser::{Ctx, PResult};
use crate::{crc32c, hostnames_equal};

fn err(file: &std::path::Path, line: u32, msg: impl Into<String>) -> Error {
    Error::config(file.to_path_buf(), line, 1, msg)
}

fn derror(res: &Resource, host: &Host, what: &str) -> Error {
    err(
        &res.file,
        host.line,
        format!(
            "in resource {}, on {} {{ ... }}: '{what}' keyword missing.",
            res.name,
            host.name()
        ),
    )
}

fn meta_key(md: &MetaDisk) -> Option<(String, String)> {
    match md {
        MetaDisk::Internal => None,
        MetaDisk::Flexible(d) => Some((d.clone(), "flexible".into())),
        MetaDisk::Indexed(d, i) => Some((d.clone(), i.clone())),
    }
}

fn unique(
    ctx: &mut Ctx,
    what: &str,
    key: String,
    file: &std::path::Path,
    line: u32,
) -> PResult<()> {
    if let Some(first) = ctx.unique.get(&key) {
        return Err(err(
            file,
            line,
            format!(
                "conflicting use of {what} '{key}' ...\n{first}: {what} '{key}' first used here."
            ),
        ));
    }
    ctx.unique
        .insert(key, format!("{}:{}", file.display(), line));
    Ok(())
}

pub(crate) fn post_parse(ctx: &mut Ctx) -> PResult<()> {
    let top = (ctx.top_file.clone(), ctx.top_last_line);
    let mut resources = std::mem::take(&mut ctx.cfg.resources);
    let r = run(ctx, &mut resources, &top);
    ctx.cfg.resources = resources;
    r
}

fn run(ctx: &mut Ctx, resources: &mut [Resource], top: &(PathBuf, u32)) -> PResult<()> {
    for res in resources.iter_mut() {
        inherit_and_check_volumes(ctx, res, top)?;
    }
    for i in 0..resources.len() {
        let lowers: Vec<String> = resources[i]
            .hosts
            .iter()
            .filter_map(|h| match &h.kind {
                HostKind::Stacked { lower } => Some(lower.clone()),
                _ => None,
            })
            .collect();
        for lower in lowers {
            let Some(l) = resources.iter().find(|r| r.name == lower) else {
                let res = &resources[i];
                return Err(err(
                    &res.file,
                    res.line,
                    format!(
                        "in resource {}, referenced resource '{lower}' not defined.",
                        res.name
                    ),
                ));
            };
            let names: Vec<String> = l
                .hosts
                .iter()
                .filter(|h| !matches!(h.kind, HostKind::Stacked { .. }))
                .flat_map(|h| h.names.clone())
                .collect();
            for h in resources[i].hosts.iter_mut() {
                if matches!(&h.kind, HostKind::Stacked { lower: x } if *x == lower) {
                    h.names = names.clone();
                }
            }
        }
    }
    for res in resources.iter_mut() {
        connections(res, top)?;
    }
    check_addr_conflict(resources)?;
    for stacked_pass in [false, true] {
        for i in 0..resources.len() {
            if resources[i].stacked == stacked_pass {
                set_me(ctx, resources, i)?;
            }
        }
    }
    for res in resources.iter_mut() {
        fixup_peer_devices(res)?;
    }
    let names: Vec<(String, bool)> = resources
        .iter()
        .map(|r| (r.name.clone(), r.this_host.is_none()))
        .collect();
    for res in resources.iter_mut() {
        validate(ctx, res, &names)?;
    }
    Ok(())
}

fn inherit_and_check_volumes(
    ctx: &mut Ctx,
    res: &mut Resource,
    top: &(PathBuf, u32),
) -> PResult<()> {
    let mut any_implicit = false;
    let mut any_nonzero = false;
    for hi in 0..res.hosts.len() {
        let from = res.volumes.clone();
        let names = res.hosts[hi].names.clone();
        for s in &from {
            let host = &mut res.hosts[hi];
            let idx = match host.volumes.iter().position(|v| v.number == s.number) {
                Some(i) => i,
                None => {
                    let mut t = Volume::new(s.number, s.implicit);
                    t.file = s.file.clone();
                    t.device_line = s.device_line;
                    t.disk_line = s.disk_line;
                    t.meta_disk_line = s.meta_disk_line;
                    let pos = host
                        .volumes
                        .iter()
                        .position(|x| x.number > t.number)
                        .unwrap_or(host.volumes.len());
                    host.volumes.insert(pos, t);
                    pos
                }
            };
            let t = &mut res.hosts[hi].volumes[idx];
            let mut checks: Vec<(&str, String, u32)> = Vec::new();
            if t.disk.is_none() && s.disk.is_some() {
                t.disk = s.disk.clone();
                for h in &names {
                    checks.push((
                        "disk",
                        format!("disk:{h}:{}", s.disk.as_deref().unwrap_or("")),
                        t.disk_line,
                    ));
                }
            }
            if t.device.is_none() && s.device.is_some() {
                t.device = s.device.clone();
            }
            if t.minor.is_none() && s.minor.is_some() {
                t.minor = s.minor;
                for h in &names {
                    checks.push((
                        "device-minor",
                        format!("device-minor:{h}:{}", s.minor.unwrap_or(0)),
                        t.device_line,
                    ));
                    if let Some(d) = &t.device {
                        checks.push(("device", format!("device:{h}:{d}"), t.device_line));
                    }
                }
            }
            if t.meta_disk.is_none() && s.meta_disk.is_some() {
                t.meta_disk = s.meta_disk.clone();
            }
            let file = t.file.clone();
            for (what, key, line) in checks {
                unique(ctx, what, key, &file, line)?;
            }
        }
        let host = &res.hosts[hi];
        for v in &host.volumes {
            any_implicit |= v.implicit;
            any_nonzero |= v.number != 0;
            if let Some((md, idx)) = v.meta_disk.as_ref().and_then(meta_key) {
                for h in &host.names {
                    unique(
                        ctx,
                        "meta-disk",
                        format!("{h}:{md}[{idx}]"),
                        &v.file.clone(),
                        v.meta_disk_line,
                    )?;
                }
            }
        }
        if res.hosts[hi].require_minor {
            for vi in 0..res.hosts[hi].volumes.len() {
                let v = &res.hosts[hi].volumes[vi];
                if v.device.is_none() && v.minor.is_none() {
                    return Err(derror(res, &res.hosts[hi], "device"));
                }
                if (v.disk.is_some() || v.meta_disk.is_some()) && v.disk.as_deref() != Some("none")
                {
                    if v.disk.is_none() {
                        return Err(derror(res, &res.hosts[hi], "disk"));
                    }
                    if v.meta_disk.is_none() {
                        res.hosts[hi].volumes[vi].meta_disk = Some(MetaDisk::Internal);
                    }
                }
            }
        }
    }
    // Every host section must define the same volumes.
    if let Some(first) = res.hosts.first() {
        for other in res.hosts.iter().skip(1) {
            let a: Vec<(u32, bool)> = first
                .volumes
                .iter()
                .map(|v| (v.number, v.implicit))
                .collect();
            let b: Vec<(u32, bool)> = other
                .volumes
                .iter()
                .map(|v| (v.number, v.implicit))
                .collect();
            if let Some(&(n, _)) = a.iter().find(|x| !b.iter().any(|y| y.0 == x.0)) {
                return Err(err(
                    &top.0,
                    top.1,
                    format!(
                        "in resource {}, on {} {{ ... }}: volume {n} not defined on {}",
                        res.name,
                        first.name(),
                        other.name()
                    ),
                ));
            }
            if let Some(&(n, _)) = b.iter().find(|y| !a.iter().any(|x| x.0 == y.0)) {
                return Err(err(
                    &top.0,
                    top.1,
                    format!(
                        "in resource {}, on {} {{ ... }}: volume {n} missing (present on {})",
                        res.name,
                        first.name(),
                        other.name()
                    ),
                ));
            }
            if let Some(&(n, _)) = a
                .iter()
                .find(|x| b.iter().any(|y| y.0 == x.0 && y.1 != x.1))
            {
                return Err(err(
                    &top.0,
                    top.1,
                    format!(
                        "in resource {}, on {} resp. {}: volume {n} must not be implicit on one but not the other",
                        res.name,
                        first.name(),
                        other.name()
                    ),
                ));
            }
        }
    }
    if any_implicit && any_nonzero {
        return Err(err(
            &top.0,
            top.1,
            format!(
                "in resource {}: you must not mix implicit and explicit volumes",
                res.name
            ),
        ));
    }
    Ok(())
}

fn find_host_by_name(res: &Resource, name: &str) -> Option<usize> {
    res.hosts
        .iter()
        .position(|h| h.names.iter().any(|n| hostnames_equal(n, name)))
}

fn connections(res: &mut Resource, top: &(PathBuf, u32)) -> PResult<()> {
    for c in &res.connections {
        for p in &c.paths {
            if p.endpoints.len() != 2 {
                return Err(err(
                    &res.file,
                    p.line,
                    format!(
                        "Resource {}: {} needs to have two endpoints",
                        res.name,
                        if p.implicit { "connection" } else { "path" }
                    ),
                ));
            }
        }
    }
    // connection-mesh: one implicit connection per pair of hosts.
    for mi in 0..res.meshes.len() {
        let mesh = res.meshes[mi].clone();
        for (i, n1) in mesh.hosts.iter().enumerate() {
            let no_section = |n: &str| {
                err(
                    &res.file,
                    res.line,
                    format!(
                        "in resource {}:\n\tThere is no 'on' section for hostname '{n}' named in the connection-mesh",
                        res.name
                    ),
                )
            };
            let h1 = find_host_by_name(res, n1).ok_or_else(|| no_section(n1))?;
            for n2 in &mesh.hosts[i + 1..] {
                let h2 = find_host_by_name(res, n2).ok_or_else(|| no_section(n2))?;
                if h1 == h2 {
                    continue;
                }
                let mut net = mesh.net.clone();
                for e in &mut net.entries {
                    e.inherited = true;
                }
                net.entries.reverse();
                let ep = |h: usize| Endpoint {
                    kind: EndpointKind::Implicit,
                    host_name: res.hosts[h].names.first().cloned().unwrap_or_default(),
                    address: None,
                    host: Some(h),
                    proxy: None,
                    parsed_address: false,
                    parsed_port: false,
                    line: 0,
                };
                let path = Path {
                    implicit: true,
                    endpoints: vec![ep(h1), ep(h2)],
                    line: 0,
                };
                res.connections.push(implicit_connection(path, net));
            }
        }
    }
    if res.connections.is_empty() {
        let mut eps = Vec::new();
        let mut count = 0;
        for (i, h) in res.hosts.iter().enumerate() {
            count += 1;
            if count == 3 {
                break;
            }
            if h.address.is_some() {
                let stacked = matches!(h.kind, HostKind::Stacked { .. });
                eps.push(Endpoint {
                    kind: EndpointKind::Implicit,
                    host_name: if stacked {
                        h.names.join("_")
                    } else {
                        h.names.first().cloned().unwrap_or_default()
                    },
                    address: if stacked { h.address.clone() } else { None },
                    host: Some(i),
                    proxy: h.proxy.clone(),
                    parsed_address: stacked,
                    parsed_port: false,
                    line: 0,
                });
            }
        }
        if count == 2 {
            let path = Path {
                implicit: true,
                endpoints: eps,
                line: 0,
            };
            let net = Options::new(&crate::options::NET);
            res.connections.push(implicit_connection(path, net));
        }
    }
    for ci in 0..res.connections.len() {
        for pi in 0..res.connections[ci].paths.len() {
            tie_endpoints(res, ci, pi, top)?;
        }
    }
    for h in &res.hosts {
        if h.node_id.is_none() {
            return Err(derror(res, h, "node-id"));
        }
    }
    Ok(())
}

fn implicit_connection(path: Path, net: Options) -> Connection {
    Connection {
        implicit: true,
        paths: vec![path],
        net,
        peer_device_options: Options::new(&crate::options::PEER_DEVICE),
        peer_devices: Vec::new(),
        standalone: false,
        peer_node_id: None,
        line: 0,
    }
}

fn tie_endpoints(res: &mut Resource, ci: usize, pi: usize, top: &(PathBuf, u32)) -> PResult<()> {
    let mut hashes: Vec<(i32, usize)> = Vec::new();
    for ei in 0..res.connections[ci].paths[pi].endpoints.len() {
        let ep = res.connections[ci].paths[pi].endpoints[ei].clone();
        let host = if let Some(h) = ep.host {
            let Some(a) = &res.hosts[h].address else {
                return Err(err(
                    &res.file,
                    res.line,
                    format!(
                        "\"connection-mesh\" (for \"{}\") with a host (\"{}\") that has no \"address\" defined",
                        res.name, ep.host_name
                    ),
                ));
            };
            hashes.push((crc32c(0x1a65_6f21, a.ip.as_bytes()) as i32, h));
            Some(h)
        } else if ep.kind == EndpointKind::Address {
            let a = ep.address.clone().unwrap_or_else(unreachable_address);
            let found = res.hosts.iter().position(|h| {
                h.address.as_ref().is_some_and(|b| {
                    b.ip == a.ip && b.family == a.family && b.port_text == a.port_text
                })
            });
            let Some(h) = found else {
                return Err(err(
                    &top.0,
                    ep.line,
                    format!(
                        "in resource {}: no host section has the address {}:{}",
                        res.name, a.ip, a.port_text
                    ),
                ));
            };
            res.connections[ci].paths[pi].endpoints[ei].host_name = res.hosts[h].names.join("_");
            Some(h)
        } else {
            find_host_by_name(res, &ep.host_name)
        };
        let Some(h) = host else {
            if ep.kind == EndpointKind::RemoteHost {
                continue;
            }
            return Err(err(
                &top.0,
                ep.line,
                format!(
                    "in resource {} a hostname (\"{}\") is given\nwith a \"host\" keyword, has no \"address\" keyword, and no matching\nhost section (\"on\" keyword)",
                    res.name, ep.host_name
                ),
            ));
        };
        let hostaddr = res.hosts[h].address.clone();
        let e = &mut res.connections[ci].paths[pi].endpoints[ei];
        e.host = Some(h);
        let mut a = e.address.clone();
        let have_ip = a.as_ref().is_some_and(|a| !a.ip.is_empty());
        let have_port = a.is_some();
        let (mut ok_addr, mut ok_port) = (true, true);
        if !have_ip {
            match &hostaddr {
                Some(ha) => {
                    let port_text = a
                        .as_ref()
                        .map_or(ha.port_text.clone(), |x| x.port_text.clone());
                    let port = a.as_ref().map_or(ha.port, |x| x.port);
                    a = Some(Address {
                        family: ha.family,
                        ip: ha.ip.clone(),
                        port,
                        port_text,
                    });
                }
                None => ok_addr = false,
            }
        }
        if !have_port && hostaddr.is_none() {
            ok_port = false;
        }
        if !(ok_addr && ok_port) {
            let what = match (ok_addr, ok_port) {
                (false, false) => "address and port",
                (false, true) => "address",
                _ => "port",
            };
            return Err(err(
                &top.0,
                e.line,
                format!(
                    "Resource {}, host {}: cannot determine which {what} to use",
                    res.name, e.host_name
                ),
            ));
        }
        e.address = a;
    }
    let conn = &res.connections[ci];
    if conn.implicit && hashes.len() == 2 {
        let (h0, h1) = (hashes[0].1, hashes[1].1);
        if res.hosts[h0].node_id.is_none() && res.hosts[h1].node_id.is_none() {
            let (a, b) = if hashes[0].0 > hashes[1].0 {
                (0, 1)
            } else if hashes[0].0 < hashes[1].0 {
                (1, 0)
            } else {
                return Err(err(&res.file, res.line, "BAD LUCK, equal hashes"));
            };
            res.hosts[h0].node_id = Some(a);
            res.hosts[h0].node_id_text = Some(a.to_string());
            res.hosts[h1].node_id = Some(b);
            res.hosts[h1].node_id_text = Some(b.to_string());
        }
    }
    Ok(())
}

fn unreachable_address() -> Address {
    Address {
        family: AddressFamily::Ipv4,
        ip: String::new(),
        port: 0,
        port_text: String::new(),
    }
}

fn same_ip(a: &Address, b: &Address) -> bool {
    match (
        a.ip.parse::<std::net::IpAddr>(),
        b.ip.parse::<std::net::IpAddr>(),
    ) {
        (Ok(x), Ok(y))
            if a.family == b.family
                && matches!(a.family, AddressFamily::Ipv4 | AddressFamily::Ipv6) =>
        {
            x == y
        }
        _ => a.ip == b.ip,
    }
}

fn addresses_equal(a: &Address, b: &Address) -> bool {
    same_ip(a, b) && a.port_text == b.port_text && a.family == b.family
}

fn check_addr_conflict(resources: &[Resource]) -> PResult<()> {
    let mut seen: Vec<(Address, usize)> = Vec::new();
    for (ri, res) in resources.iter().enumerate() {
        for conn in &res.connections {
            for path in &conn.paths {
                let mut addrs: Vec<&Address> = Vec::new();
                for ep in &path.endpoints {
                    let Some(a) = &ep.address else { continue };
                    if a.is_loopback() {
                        continue;
                    }
                    if let Some((_, other)) = seen.iter().find(|(b, _)| addresses_equal(a, b)) {
                        if *other != ri {
                            let o = &resources[*other];
                            let oline = o
                                .connections
                                .iter()
                                .flat_map(|c| &c.paths)
                                .flat_map(|p| &p.endpoints)
                                .find(|e| e.address.as_ref().is_some_and(|x| addresses_equal(x, a)))
                                .map_or(0, |e| e.line);
                            return Err(err(
                                &res.file,
                                ep.line,
                                format!(
                                    "in resource {}\n    {}:{}:{} is also used {}:{} (resource {})",
                                    res.name,
                                    a.family.as_str(),
                                    a.ip,
                                    a.port_text,
                                    o.file.display(),
                                    oline,
                                    o.name
                                ),
                            ));
                        }
                    } else {
                        seen.push((a.clone(), ri));
                    }
                    addrs.push(a);
                }
                if addrs.len() == 2 && addresses_equal(addrs[0], addrs[1]) {
                    return Err(err(
                        &res.file,
                        conn.line,
                        format!(
                            "in resource {} {}:{}:{} is used for both endpoints",
                            res.name,
                            addrs[0].family.as_str(),
                            addrs[0].ip,
                            addrs[0].port_text
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn set_me(ctx: &Ctx, resources: &mut [Resource], ri: usize) -> PResult<()> {
    let hostname = ctx.cfg.hostname.clone();
    let mut me: Option<usize> = None;
    for (hi, h) in resources[ri].hosts.iter().enumerate() {
        let matched = match &h.kind {
            HostKind::Floating => h.address.as_ref().is_some_and(|a| a.ip == hostname),
            HostKind::Stacked { lower } => resources
                .iter()
                .any(|r| r.name == *lower && r.this_host.is_some()),
            HostKind::ThisHost => true,
            HostKind::On => {
                h.names.iter().any(|n| hostnames_equal(n, &hostname))
                    || h.names.first().is_some_and(|n| n == "_this_host")
            }
            HostKind::PeerNodeId => false,
        };
        if !matched {
            continue;
        }
        if let Some(prev) = me {
            let res = &resources[ri];
            let kind = |h: &Host| match &h.kind {
                HostKind::Stacked { lower } => format!("stacked-on-top-of {lower}"),
                _ => format!("on {}", h.name()),
            };
            return Err(err(
                &res.file,
                h.line,
                format!(
                    "in resource {}, {} {{ ... }} ... {} {{ ... }}:\n\tThere are multiple host sections for this node.",
                    res.name,
                    kind(&res.hosts[prev]),
                    kind(h)
                ),
            ));
        }
        me = Some(hi);
    }
    resources[ri].this_host = me;
    // A stacked resource sits on the lower resource's device.
    if let Some(hi) = me {
        if let HostKind::Stacked { lower } = resources[ri].hosts[hi].kind.clone() {
            if let Some(lr) = resources.iter().find(|r| r.name == lower) {
                if let Some(lme) = lr.me() {
                    let lvols = lme.volumes.clone();
                    for v in resources[ri].hosts[hi].volumes.iter_mut() {
                        if let Some(l) = lvols.iter().find(|l| l.number == v.number) {
                            v.disk = l.device_path();
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn fixup_peer_devices(res: &mut Resource) -> PResult<()> {
    for ci in 0..res.connections.len() {
        let Some(path) = res.connections[ci].paths.first().cloned() else {
            continue;
        };
        for pd in &res.connections[ci].peer_devices {
            for ep in &path.endpoints {
                if ep.host_name == "_remote_host" {
                    continue;
                }
                let Some(h) = ep.host else { continue };
                if res.hosts[h].volume(pd.volume).is_none() {
                    return Err(err(
                        &res.file,
                        pd.line,
                        format!(
                            "Resource {}: There is a reference to a volume {} that is not known in this resource on host {}",
                            res.name, pd.volume, ep.host_name
                        ),
                    ));
                }
            }
        }
        let Some(h) = path.endpoints.first().and_then(|e| e.host) else {
            continue;
        };
        let numbers: Vec<u32> = res.hosts[h].volumes.iter().map(|v| v.number).collect();
        let conn = &mut res.connections[ci];
        for n in numbers {
            if !conn.peer_devices.iter().any(|p| p.volume == n) {
                conn.peer_devices.push(PeerDevice {
                    volume: n,
                    options: Options::new(&crate::options::PEER_DEVICE),
                    implicit: true,
                    line: 0,
                });
            }
        }
    }
    Ok(())
}

fn validate(ctx: &Ctx, res: &mut Resource, names: &[(String, bool)]) -> PResult<()> {
    // An unknown `resync-after` target is dropped (drbdadm does so when
    // it is not run on a terminal, so that scripts keep working).
    res.sections.disk.entries.retain(|o| {
        if o.name != "resync-after" {
            return true;
        }
        let target = o.value.as_deref().unwrap_or("");
        let target = target.split('/').next().unwrap_or("");
        names.iter().any(|(n, ignored)| n == target && !ignored)
    });
    if res.hosts.is_empty() {
        return Err(err(
            &res.file,
            res.line,
            format!(
                "in resource {}:\n\ta host sections ('on {} {{ ... }}') is missing.",
                res.name, ctx.cfg.hostname
            ),
        ));
    }
    if res.this_host.is_none() {
        return Ok(());
    }
    if let Some(v) = res.sections.net.get("after-sb-0pri") {
        if let Some(node) = v.strip_prefix("discard-node-") {
            if find_host_by_name(res, node).is_none() {
                return Err(err(
                    &res.file,
                    res.line,
                    format!(
                        "in resource {}:\n\tthe nodename in the '{v}' option is not known.",
                        res.name
                    ),
                ));
            }
        }
    }
    let with_proxy = res.hosts.iter().filter(|h| h.proxy.is_some()).count();
    if with_proxy != 0 && with_proxy != res.hosts.len() {
        return Err(err(
            &res.file,
            res.line,
            format!(
                "in resource {}:\n\tEither all 'on' sections must contain a proxy subsection, or none.",
                res.name
            ),
        ));
    }
    Ok(())
}
