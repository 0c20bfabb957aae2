//! Printing a configuration in the shape of `drbdadm dump`.
//!
//! The layout (indentation of four spaces, option names padded so values
//! line up, `device ... minor N;`, `address ipv4 IP:PORT;`) is what
//! drbdadm prints; values are printed as they were written, quoted when
//! they contain characters outside `[a-zA-Z0-9/._-]` or are long.

use std::fmt::Write;

use crate::model::*;

pub(crate) struct Printer {
    out: String,
    indent: usize,
}

/// Quotes a word the way drbdadm does so that a dump parses back the same.
pub fn esc(s: &str) -> String {
    if s.is_empty() {
        return "\"\"".into();
    }
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
    if plain && s.len() <= 80 {
        return s.into();
    }
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
    o
}

/// printf's `%*s` with a possibly negative width.
fn pad(s: &str, width: i64) -> String {
    let w = width.unsigned_abs() as usize;
    if width < 0 {
        format!("{s:<w$}")
    } else {
        format!("{s:>w$}")
    }
}

impl Printer {
    pub fn new() -> Self {
        Printer {
            out: String::new(),
            indent: 0,
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn ind(&self) -> String {
        " ".repeat(4 * self.indent)
    }

    fn line(&mut self, s: &str) {
        let i = self.ind();
        self.out.push_str(&i);
        self.out.push_str(s);
        self.out.push('\n');
    }

    /// An aligned `name value;` line.
    fn opt(&mut self, name: &str, value: &str) {
        let w = -24 + 4 * self.indent as i64;
        let i = self.ind();
        let _ = writeln!(self.out, "{i}{} {};", pad(name, w), pad(value, 3));
    }

    fn entries(&mut self, o: &Options) {
        for e in &o.entries {
            match &e.value {
                Some(v) => self.opt(&e.name, &esc(v)),
                None => self.line(&format!("{};", e.name)),
            }
        }
    }

    fn section(
        &mut self,
        name: &str,
        o: &Options,
        extra: Option<&Options>,
        extra_name: Option<&str>,
    ) {
        let extra_empty = extra.is_none_or(Options::is_empty);
        if o.is_empty() && extra_empty {
            return;
        }
        self.line(&format!("{name} {{"));
        self.indent += 1;
        self.entries(o);
        if let Some(x) = extra {
            match extra_name {
                Some(n) => self.section(n, x, None, None),
                None => self.entries(x),
            }
        }
        self.indent -= 1;
        self.line("}");
    }

    fn address(&mut self, name: &str, a: &Address, postfix: &str) {
        let i = self.ind();
        let addr = if a.family == AddressFamily::Ipv6 {
            format!("[{}]:{}", a.ip, a.port_text)
        } else {
            format!("{}:{}", a.ip, a.port_text)
        };
        let _ = write!(
            self.out,
            "{i}{name:<16} {} {addr}{postfix}",
            a.family.as_str()
        );
    }

    fn sections(&mut self, s: &Sections) {
        let mut startup = s.startup.clone();
        if s.stacked_timeouts {
            startup.entries.push(OptionEntry {
                name: "stacked-timeouts".into(),
                value: None,
                inherited: false,
            });
        }
        self.section("options", &s.options, None, None);
        self.section("net", &s.net, None, None);
        self.section("disk", &s.disk, Some(&s.peer_device), None);
        self.section("startup", &startup, None, None);
        self.section("proxy", &s.proxy, Some(&s.proxy_plugins), Some("plugin"));
        self.section("handlers", &s.handlers, None, None);
    }

    pub fn global(&mut self, g: &Global) {
        if g.minor_count == 0
            && !g.disable_ip_verification
            && g.dialog_refresh == 1
            && g.usage_count == UsageCount::Ask
        {
            return;
        }
        self.line("global {");
        self.indent += 1;
        if g.disable_ip_verification {
            self.line("disable-ip-verification;");
        }
        if g.minor_count != 0 {
            self.line(&format!("minor-count {};", g.minor_count));
        }
        if g.dialog_refresh != 1 {
            self.line(&format!("dialog-refresh {};", g.dialog_refresh));
        }
        match g.usage_count {
            UsageCount::Yes => self.line("usage-count yes;"),
            UsageCount::No => self.line("usage-count no;"),
            UsageCount::Ask => {}
        }
        self.indent -= 1;
        self.line("}");
        self.out.push('\n');
    }

    pub fn common(&mut self, c: &Sections) {
        self.line("common {");
        self.indent += 1;
        self.sections(c);
        self.indent -= 1;
        self.out.push_str("}\n\n");
    }

    fn proxy(&mut self, prefix: &str, p: &Proxy) {
        self.line(&format!("{prefix}proxy on {} {{", p.on_hosts.join(" ")));
        self.indent += 1;
        self.address("inside", &p.inside, ";\n");
        self.address("outside", &p.outside, ";\n");
        self.section("options", &p.options, Some(&p.plugins), Some("plugin"));
        self.indent -= 1;
        self.line("}");
    }

    fn volume(&mut self, has_lower: bool, v: &Volume) {
        if !v.implicit {
            self.line(&format!("volume {} {{", v.number));
            self.indent += 1;
        }
        self.section("disk", &v.disk_options, Some(&v.peer_device_options), None);
        if v.parsed_device {
            let i = self.ind();
            let w = -19 + 4 * self.indent as i64;
            let _ = write!(self.out, "{i}device{}", pad("", w));
            if let Some(d) = &v.device {
                let _ = write!(self.out, "{} ", esc(d));
            }
            let m = v.minor.map_or(-1, i64::from);
            let _ = writeln!(self.out, "minor {m};");
        }
        if !has_lower && v.parsed_disk {
            self.opt("disk", &esc(v.disk.as_deref().unwrap_or("none")));
        }
        if !has_lower && v.parsed_meta_disk {
            let i = self.ind();
            match &v.meta_disk {
                Some(MetaDisk::Internal) => self.opt("meta-disk", "internal"),
                Some(MetaDisk::Flexible(d)) => {
                    let _ = writeln!(self.out, "{i}{:<16} {};", "meta-disk", esc(d));
                }
                Some(MetaDisk::Indexed(d, idx)) => {
                    let _ = writeln!(self.out, "{i}{:<16} {} [{idx}];", "meta-disk", esc(d));
                }
                None => {}
            }
        }
        if !v.implicit {
            self.indent -= 1;
            self.line("}");
        }
    }

    fn host(&mut self, h: &Host) {
        let stacked = match &h.kind {
            HostKind::PeerNodeId => return,
            HostKind::Stacked { lower } => {
                self.line(&format!("stacked-on-top-of {} {{", esc(lower)));
                self.indent += 1;
                self.line(&format!("# on {} ", h.name()));
                true
            }
            HostKind::Floating => {
                if let Some(a) = &h.address {
                    self.address("floating", a, " {\n");
                }
                self.indent += 1;
                false
            }
            _ => {
                self.line(&format!("on {} {{", h.name()));
                self.indent += 1;
                false
            }
        };
        self.line(&format!(
            "node-id {};",
            h.node_id_text.as_deref().unwrap_or("(null)")
        ));
        self.section("options", &h.options, None, None);
        for v in &h.volumes {
            if v.parsed_device || v.parsed_disk || v.parsed_meta_disk {
                self.volume(stacked, v);
            }
        }
        if h.kind != HostKind::Floating {
            if let Some(a) = &h.address {
                self.address("address", a, ";\n");
            }
        }
        if let Some(p) = &h.proxy {
            self.proxy("", p);
        }
        self.indent -= 1;
        self.line("}");
    }

    fn endpoints(&mut self, eps: &[Endpoint]) {
        for e in eps {
            let by_address = e.kind == EndpointKind::Address
                || (e.kind == EndpointKind::Implicit && e.parsed_address);
            if by_address {
                let post = format!(
                    "{}# on {}\n",
                    if e.proxy.is_some() { " " } else { "; " },
                    e.host_name
                );
                if let Some(a) = &e.address {
                    self.address("address", a, &post);
                }
            } else {
                let i = self.ind();
                let _ = write!(self.out, "{i}host {}", e.host_name);
                if e.parsed_address {
                    if let Some(a) = &e.address {
                        self.address(" address", a, "");
                    }
                } else if e.parsed_port {
                    if let Some(a) = &e.address {
                        let _ = write!(self.out, " port {}", a.port_text);
                    }
                }
            }
            match &e.proxy {
                Some(p) => self.proxy(" via ", p),
                None => self.out.push_str(";\n"),
            }
        }
    }

    fn connection(&mut self, c: &Connection) {
        if c.implicit {
            return;
        }
        self.line("connection {");
        self.indent += 1;
        if c.paths.first().is_some_and(|p| p.implicit) {
            self.endpoints(&c.paths[0].endpoints);
        } else {
            for p in &c.paths {
                self.line("path {");
                self.indent += 1;
                self.endpoints(&p.endpoints);
                self.indent -= 1;
                self.line("}");
            }
        }
        self.section("net", &c.net, None, None);
        self.section("disk", &c.peer_device_options, None, None);
        for pd in &c.peer_devices {
            if pd.implicit {
                continue;
            }
            self.line(&format!("volume {} {{", pd.volume));
            self.indent += 1;
            self.section("disk", &pd.options, None, None);
            self.indent -= 1;
            self.line("}");
        }
        self.indent -= 1;
        self.line("}");
    }

    pub fn resource(&mut self, r: &Resource, hostname: &str) {
        self.line(&format!(
            "# resource {} on {hostname}: {}, {}",
            esc(&r.name),
            if r.this_host.is_none() {
                "ignored"
            } else {
                "not ignored"
            },
            if r.me()
                .is_some_and(|h| matches!(h.kind, HostKind::Stacked { .. }))
            {
                "stacked"
            } else {
                "not stacked"
            }
        ));
        self.line(&format!("# defined at {}:{}", r.file.display(), r.line));
        self.line(&format!("resource {} {{", esc(&r.name)));
        self.indent += 1;
        if let Some(t) = &r.template_file {
            self.line(&format!("template-file {};", esc(&t.to_string_lossy())));
        }
        let stacked = r
            .me()
            .is_some_and(|h| matches!(h.kind, HostKind::Stacked { .. }));
        for v in &r.volumes {
            if v.parsed_device || v.parsed_disk || v.parsed_meta_disk {
                self.volume(stacked, v);
            }
        }
        for h in &r.hosts {
            self.host(h);
        }
        for c in &r.connections {
            self.connection(c);
        }
        for m in &r.meshes {
            self.line("connection-mesh {");
            self.indent += 1;
            let mut s = "hosts".to_string();
            for h in &m.hosts {
                s.push(' ');
                s.push_str(h);
            }
            s.push(';');
            self.line(&s);
            self.section("net", &m.net, None, None);
            self.indent -= 1;
            self.line("}");
        }
        self.sections(&r.sections);
        self.indent -= 1;
        self.out.push_str("}\n\n");
    }
}
