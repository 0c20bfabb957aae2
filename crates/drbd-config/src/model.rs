//! The typed configuration model: what the parser builds and what the
//! replication daemon reads.
//!
//! Option values are kept as written (so `dump` can print them back the way
//! drbdadm does) and decoded on demand with [`Options::value`].

use std::path::PathBuf;

use crate::options::{self, OptionDef, OptionKind};

/// A whole configuration: `global`, `common` and the resources, in file order.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The canonical path of the top-level file.
    pub source: PathBuf,
    /// The name this configuration was resolved for ("this host").
    pub hostname: String,
    pub global: Global,
    /// The `common` section, if there is one.
    pub common: Option<Sections>,
    pub resources: Vec<Resource>,
}

/// `usage-count` in `global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageCount {
    Yes,
    No,
    #[default]
    Ask,
}

/// The `global` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub disable_ip_verification: bool,
    pub udev_always_use_vnr: bool,
    /// `minor-count` (0 = not set).
    pub minor_count: u32,
    /// `dialog-refresh` (default 1).
    pub dialog_refresh: u32,
    pub usage_count: UsageCount,
    pub cmd_timeout_short: Option<u32>,
    pub cmd_timeout_medium: Option<u32>,
    pub cmd_timeout_long: Option<u32>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            disable_ip_verification: false,
            udev_always_use_vnr: false,
            minor_count: 0,
            dialog_refresh: 1,
            usage_count: UsageCount::Ask,
            cmd_timeout_short: None,
            cmd_timeout_medium: None,
            cmd_timeout_long: None,
        }
    }
}

/// A decoded option value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    /// A number converted to the option's base unit (see [`OptionKind`]).
    Number(u64),
    /// An enumerated word (`protocol` is upper-cased: `A`, `B`, `C`).
    Enum(String),
    /// A symbolic value of a number-or-symbol option (`quorum majority`).
    Symbol(String),
    Text(String),
}

/// One `name value;` line of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionEntry {
    pub name: String,
    /// The value as written (`yes`/`no` for bare boolean flags); `None` only
    /// for value-less entries such as `stacked-timeouts` and proxy plugins.
    pub value: Option<String>,
    /// Set when the entry was copied from an enclosing level.
    pub inherited: bool,
}

/// An ordered list of options of one section kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub entries: Vec<OptionEntry>,
    /// The table the names come from (for decoding); `None` for free-form lists.
    pub(crate) table: Option<&'static [OptionDef]>,
}

impl Options {
    pub(crate) fn new(table: &'static [OptionDef]) -> Self {
        Options {
            entries: Vec::new(),
            table: Some(table),
        }
    }

    pub(crate) fn free() -> Self {
        Options {
            entries: Vec::new(),
            table: None,
        }
    }

    pub(crate) fn push(&mut self, name: &str, value: Option<String>) {
        self.entries.push(OptionEntry {
            name: name.to_string(),
            value,
            inherited: false,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw text of the first entry called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    /// The decoded value of `name`, using its type from the option tables.
    pub fn value(&self, name: &str) -> Option<Value> {
        let raw = self.get(name)?;
        let kind = self
            .table
            .and_then(|t| options::find(t, name).0)
            .map(|d| d.kind);
        Some(decode(kind.as_ref(), raw))
    }

    /// A boolean option (`allow-two-primaries`, `disk-flushes`, ...).
    pub fn flag(&self, name: &str) -> Option<bool> {
        match self.value(name)? {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A numeric option in its base unit.
    pub fn number(&self, name: &str) -> Option<u64> {
        match self.value(name)? {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }
}

fn decode(kind: Option<&OptionKind>, raw: &str) -> Value {
    match kind {
        Some(OptionKind::Bool { .. }) => Value::Bool(raw == "yes"),
        Some(OptionKind::Numeric { scale, .. }) => options::parse_scaled(raw, *scale)
            .map_or_else(|| Value::Text(raw.into()), Value::Number),
        Some(OptionKind::Enum { nocase: true, .. }) => Value::Enum(raw.to_ascii_uppercase()),
        Some(OptionKind::Enum { .. }) => Value::Enum(raw.into()),
        Some(OptionKind::EnumNum { symbols, .. }) if symbols.contains(&raw) => {
            Value::Symbol(raw.into())
        }
        Some(OptionKind::EnumNum { .. }) => {
            options::parse_scaled(raw, '1').map_or_else(|| Value::Text(raw.into()), Value::Number)
        }
        _ => Value::Text(raw.into()),
    }
}

/// The option sections that `common`, a resource and (partly) hosts carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    /// `options { }`: resource options.
    pub options: Options,
    /// `net { }` (plus `protocol` and the net part of `syncer`).
    pub net: Options,
    /// `disk { }`: attach options.
    pub disk: Options,
    /// Peer-device options given inside `disk { }`.
    pub peer_device: Options,
    pub startup: Options,
    pub handlers: Options,
    /// `proxy { }` options and plugins.
    pub proxy: Options,
    pub proxy_plugins: Options,
    /// `startup { stacked-timeouts; }`.
    pub stacked_timeouts: bool,
}

impl Default for Sections {
    fn default() -> Self {
        Sections {
            options: Options::new(&options::RESOURCE),
            net: Options::new(&options::NET),
            disk: Options::new(&options::DISK),
            peer_device: Options::new(&options::PEER_DEVICE),
            startup: Options::new(&options::STARTUP),
            handlers: Options::new(&options::HANDLERS),
            proxy: Options::new(&options::PROXY),
            proxy_plugins: Options::free(),
            stacked_timeouts: false,
        }
    }
}

/// Address family of an `address` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
    Ssocks,
    Sdp,
}

impl AddressFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressFamily::Ipv4 => "ipv4",
            AddressFamily::Ipv6 => "ipv6",
            AddressFamily::Ssocks => "ssocks",
            AddressFamily::Sdp => "sdp",
        }
    }
}

/// `address [FAMILY] IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub family: AddressFamily,
    /// The address text (IPv6 without brackets, possibly with `%scope`).
    pub ip: String,
    /// The port as a number.
    pub port: u16,
    /// The port as written (drbdadm prints it back verbatim, e.g. `1K`).
    pub port_text: String,
}

impl Address {
    /// Loopback addresses are exempt from the address-conflict check.
    pub(crate) fn is_loopback(&self) -> bool {
        match self.ip.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => false,
        }
    }
}

/// Where a volume keeps its meta data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaDisk {
    /// At the end of the backing disk.
    Internal,
    /// On a separate device, sized to fit.
    Flexible(String),
    /// On a separate device, in 128 MiB slot `index`.
    Indexed(String, String),
}

/// A volume: one replicated block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub number: u32,
    /// The single volume 0 of a resource written without `volume` sections.
    pub implicit: bool,
    /// The device path (`/dev/drbd1`), if given by name.
    pub device: Option<String>,
    /// The minor number, from `minor N` or the device name.
    pub minor: Option<u32>,
    /// The backing disk (`none` for an intentionally diskless node).
    pub disk: Option<String>,
    pub meta_disk: Option<MetaDisk>,
    pub disk_options: Options,
    pub peer_device_options: Options,
    pub(crate) parsed_device: bool,
    pub(crate) parsed_disk: bool,
    pub(crate) parsed_meta_disk: bool,
    pub(crate) file: PathBuf,
    pub(crate) device_line: u32,
    pub(crate) disk_line: u32,
    pub(crate) meta_disk_line: u32,
}

impl Volume {
    pub(crate) fn new(number: u32, implicit: bool) -> Self {
        Volume {
            number,
            implicit,
            device: None,
            minor: None,
            disk: None,
            meta_disk: None,
            disk_options: Options::new(&options::DISK),
            peer_device_options: Options::new(&options::PEER_DEVICE),
            parsed_device: false,
            parsed_disk: false,
            parsed_meta_disk: false,
            file: PathBuf::new(),
            device_line: 0,
            disk_line: 0,
            meta_disk_line: 0,
        }
    }

    /// The device path, `/dev/drbdN` when only a minor was given.
    pub fn device_path(&self) -> Option<String> {
        self.device
            .clone()
            .or_else(|| self.minor.map(|m| format!("/dev/drbd{m}")))
    }
}

/// How a host section was introduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// `on NAME [NAME...] { }`.
    On,
    /// `floating [FAMILY] IP:PORT { }`: matched by address.
    Floating,
    /// `_this_host { }` (drbdsetup show syntax).
    ThisHost,
    /// `stacked-on-top-of LOWER { }`.
    Stacked { lower: String },
    /// Created by `_peer_node_id` in a connection.
    PeerNodeId,
}

/// A proxy definition (`proxy on HOST { inside ...; outside ...; }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub on_hosts: Vec<String>,
    pub inside: Address,
    pub outside: Address,
    pub options: Options,
    pub plugins: Options,
}

/// A host section of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub kind: HostKind,
    /// The host names (`on a b { }` has two); for `floating` the address text.
    pub names: Vec<String>,
    pub node_id: Option<u32>,
    pub(crate) node_id_text: Option<String>,
    pub address: Option<Address>,
    /// Volumes of this host, sorted by number, with resource-level
    /// `device`/`disk`/`meta-disk` inherited.
    pub volumes: Vec<Volume>,
    /// Host-level resource `options { }`.
    pub options: Options,
    pub proxy: Option<Proxy>,
    /// 1-based line of the section in `file`.
    pub line: u32,
    pub(crate) col: u32,
    pub(crate) require_minor: bool,
}

impl Host {
    /// The names joined by spaces, as drbdadm prints them.
    pub fn name(&self) -> String {
        self.names.join(" ")
    }

    /// The volume with number `n`.
    pub fn volume(&self, n: u32) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.number == n)
    }
}

/// Which kind of statement an endpoint of a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// `host NAME [address ...|port N];`
    Host,
    /// `address ...;` without a host name.
    Address,
    /// `_this_host address ...;`
    ThisHost,
    /// `_remote_host address ...;`
    RemoteHost,
    /// Made up by drbdadm for an implicit connection.
    Implicit,
}

/// One end of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub host_name: String,
    /// The address of this end (given here or taken from the host section).
    pub address: Option<Address>,
    /// Index into [`Resource::hosts`].
    pub host: Option<usize>,
    pub proxy: Option<Proxy>,
    pub(crate) parsed_address: bool,
    pub(crate) parsed_port: bool,
    pub(crate) line: u32,
}

/// A network path between two hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Written without `path { }` (the host statements sit in the connection).
    pub implicit: bool,
    pub endpoints: Vec<Endpoint>,
    pub(crate) line: u32,
}

/// Per-volume options of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDevice {
    pub volume: u32,
    pub options: Options,
    pub(crate) implicit: bool,
    pub(crate) line: u32,
}

/// A connection between two hosts of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Made up by drbdadm (two `on` sections, or a `connection-mesh`).
    pub implicit: bool,
    pub paths: Vec<Path>,
    pub net: Options,
    /// Peer-device options of `disk { }` in the connection.
    pub peer_device_options: Options,
    pub peer_devices: Vec<PeerDevice>,
    pub standalone: bool,
    /// `_peer_node_id N;` (drbdsetup show syntax).
    pub peer_node_id: Option<u32>,
    pub(crate) line: u32,
}

impl Connection {
    /// The hosts at the ends of the first path.
    pub fn hosts(&self) -> Vec<usize> {
        self.paths
            .first()
            .map(|p| p.endpoints.iter().filter_map(|e| e.host).collect())
            .unwrap_or_default()
    }
}

/// `connection-mesh { hosts ...; net { } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    pub hosts: Vec<String>,
    pub net: Options,
}

/// A resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// The canonical path of the file it is defined in, and the line.
    pub file: PathBuf,
    pub line: u32,
    pub(crate) col: u32,
    /// Resource-level volumes (inherited into every host).
    pub volumes: Vec<Volume>,
    pub hosts: Vec<Host>,
    pub connections: Vec<Connection>,
    pub meshes: Vec<Mesh>,
    pub sections: Sections,
    /// `template-file` path, if given.
    pub template_file: Option<PathBuf>,
    pub(crate) template: Option<Box<Sections>>,
    /// Index into `hosts` of this host's section; `None` = ignored here.
    pub this_host: Option<usize>,
    pub stacked: bool,
}

impl Resource {
    /// The host section of this machine, if the resource runs here.
    pub fn me(&self) -> Option<&Host> {
        self.this_host.map(|i| &self.hosts[i])
    }

    /// The host sections of the other machines.
    pub fn peers(&self) -> impl Iterator<Item = &Host> {
        self.hosts
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != self.this_host)
            .map(|(_, h)| h)
    }

    /// The replication protocol (`A`, `B` or `C`; drbd's default is `C`).
    pub fn protocol(&self) -> char {
        self.sections
            .net
            .get("protocol")
            .and_then(|p| p.chars().next())
            .map_or('C', |c| c.to_ascii_uppercase())
    }

    /// The host section called `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts
            .iter()
            .find(|h| h.names.iter().any(|n| crate::hostnames_equal(n, name)))
    }
}
