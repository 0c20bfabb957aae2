//! Option inheritance: `common` (or a `template-file`) → resource →
//! volumes and connections → peer devices.
//!
//! An option set at a level wins over the inherited one. When one place
//! inherits the same option from two parents with different values (two
//! volumes' peer-device options meeting in one connection, or a
//! `connection-mesh` and its resource), drbdadm refuses the configuration
//! with "ambiguous inheritance"; so do we.

use crate::error::Error;
use crate::model::*;
use crate::options;

fn expand(res: &Resource, from: &Options, to: &mut Options) -> Result<(), Error> {
    for o in &from.entries {
        match to.entries.iter().find(|e| e.name == o.name) {
            None => to.entries.insert(
                0,
                OptionEntry {
                    inherited: true,
                    ..o.clone()
                },
            ),
            Some(existing) if existing.inherited => {
                let kind = from
                    .table
                    .and_then(|t| options::find(t, &o.name).0)
                    .map(|d| d.kind);
                let (a, b) = (
                    existing.value.as_deref().unwrap_or(""),
                    o.value.as_deref().unwrap_or(""),
                );
                let equal = kind.map_or(a == b, |k| options::values_equal(&k, a, b));
                if !equal {
                    return Err(Error::config(
                        res.file.clone(),
                        res.line,
                        res.col,
                        format!(
                            "in resource {}, ambiguous inheritance for option \"{}\".\nshould be \"{a}\" and \"{b}\" at the same time",
                            res.name, o.name
                        ),
                    ));
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl Config {
    /// A copy with every option pushed down to where it applies, as drbdadm
    /// does before it configures the kernel: `common` into resources,
    /// resource `disk`/peer-device options into each host's volumes,
    /// resource `net` options into each connection, and volume and
    /// connection peer-device options into each peer device.
    pub fn expand(&self) -> Result<Config, Error> {
        let mut cfg = self.clone();
        for res in &mut cfg.resources {
            let r0 = res.clone();
            for h in &mut res.hosts {
                for v in &mut h.volumes {
                    if v.disk.as_deref() == Some("none") {
                        v.disk = None;
                        v.meta_disk = None;
                    }
                }
            }
            if let Some(t) = r0.template.as_deref().or(self.common.as_ref()) {
                let s = &mut res.sections;
                expand(&r0, &t.net, &mut s.net)?;
                expand(&r0, &t.disk, &mut s.disk)?;
                expand(&r0, &t.peer_device, &mut s.peer_device)?;
                expand(&r0, &t.startup, &mut s.startup)?;
                expand(&r0, &t.proxy, &mut s.proxy)?;
                expand(&r0, &t.handlers, &mut s.handlers)?;
                expand(&r0, &t.options, &mut s.options)?;
                s.stacked_timeouts |= t.stacked_timeouts;
            }
            let s = res.sections.clone();
            for h in &mut res.hosts {
                for v in &mut h.volumes {
                    expand(&r0, &s.disk, &mut v.disk_options)?;
                    expand(&r0, &s.peer_device, &mut v.peer_device_options)?;
                }
            }
            for rv in &r0.volumes {
                for h in &mut res.hosts {
                    if let Some(v) = h.volumes.iter_mut().find(|v| v.number == rv.number) {
                        expand(&r0, &rv.disk_options, &mut v.disk_options)?;
                        expand(&r0, &rv.peer_device_options, &mut v.peer_device_options)?;
                    }
                }
            }
            let hosts = res.hosts.clone();
            for c in &mut res.connections {
                expand(&r0, &s.net, &mut c.net)?;
                let conn_pd = c.peer_device_options.clone();
                for pd in &mut c.peer_devices {
                    expand(&r0, &conn_pd, &mut pd.options)?;
                }
                let ends: Vec<usize> = c.hosts();
                for h in ends {
                    for v in &hosts[h].volumes {
                        if let Some(pd) = c.peer_devices.iter_mut().find(|p| p.volume == v.number) {
                            expand(&r0, &v.peer_device_options, &mut pd.options)?;
                        }
                    }
                }
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse_bytes, LoadOptions};
    use std::path::Path;

    fn cfg(s: &str) -> crate::Config {
        parse_bytes(
            Path::new("t.conf"),
            s.as_bytes(),
            &LoadOptions {
                hostname: "a".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn common_flows_into_resources_and_connections() {
        let c = cfg(
            "common { net { protocol B; max-buffers 8000; } disk { resync-rate 10M; } }\n\
                     resource r { device /dev/drbd0; disk /dev/sda; net { max-buffers 100; }\n\
                     on a { address 127.0.0.1:7000; } on b { address 10.0.0.2:7000; } }",
        );
        let e = c.expand().unwrap();
        let r = &e.resources[0];
        assert_eq!(r.sections.net.get("protocol"), Some("B"));
        assert_eq!(r.sections.net.number("max-buffers"), Some(100));
        assert_eq!(r.connections[0].net.get("protocol"), Some("B"));
        assert_eq!(
            r.hosts[0].volumes[0]
                .peer_device_options
                .number("resync-rate"),
            Some(10240)
        );
        assert_eq!(r.protocol(), 'B');
    }

    #[test]
    fn ambiguous_inheritance_is_refused() {
        let c = cfg("resource r { device /dev/drbd0; disk /dev/sda;\n\
                     on a { address 127.0.0.1:7000; node-id 0; disk { resync-rate 1M; } }\n\
                     on b { address 10.0.0.2:7000; node-id 1; disk { resync-rate 2M; } }\n\
                     connection { host a; host b; } }");
        let e = c.expand().unwrap_err();
        assert!(e.message.contains("ambiguous inheritance"), "{e}");
        assert_eq!((e.line, e.exit_code()), (1, 10));
    }
}
