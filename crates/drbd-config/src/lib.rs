//! # drbd-config: the DRBD 9 configuration language
//!
//! This crate reads `drbd.conf`-style files the way drbd-utils 9.22's
//! `drbdadm` reads them, builds a typed model of the resources, and prints
//! that model back in the shape of `drbdadm dump`.
//!
//! ## Pipeline
//!
//! 1. **Lexer** (`lexer`): bytes to tokens. drbdadm's scanner is a flex
//!    grammar whose rule is "longest match wins, earlier rule breaks ties";
//!    the lexer reproduces it, including its quirks (nine digits make a word,
//!    not a number; `10k` is a word, `10K` a number).
//! 2. **Parser** (`parser`): tokens to the model, one recursive-descent
//!    function per section, following drbdadm's grammar and error positions.
//!    `include` statements are expanded here (globs, relative to the
//!    including file's directory; files already read are skipped, so include
//!    loops end by themselves). The deprecated `syncer` section is spread
//!    over `net`, `disk` and `options` as drbdadm does.
//! 3. **Model** ([`Config`], [`Resource`], [`Host`], [`Volume`],
//!    [`Connection`], [`Path`], [`Options`]): option values are kept as
//!    written and decoded on demand ([`Options::value`]).
//! 4. **Post-parse** (`postparse`): resource-level volumes are inherited by
//!    each host section, implicit connections and node ids are made, names
//!    in paths are tied to host sections, addresses are checked for
//!    conflicts, and the host section of "this host" is chosen.
//! 5. **Dump** ([`Config::dump`]): the text `drbdadm dump` would print.
//!
//! 6. **Inheritance** ([`Config::expand`]): option sections flow
//!    `common` → resource → volumes/connections → peer devices. Like
//!    `drbdadm dump`, the dump shows each level as written; `expand` gives
//!    the effective options, and refuses two different values reaching one
//!    place from two parents (drbdadm's "ambiguous inheritance").
//!
//! The only I/O is reading the configuration files and the host name.
//!
//! ```no_run
//! let opts = drbd_config::LoadOptions { hostname: drbd_config::this_hostname() };
//! let cfg = drbd_config::load(std::path::Path::new("/etc/drbd.conf"), &opts)?;
//! for r in &cfg.resources {
//!     if let Some(me) = r.me() {
//!         println!("{} runs here as node {:?}, protocol {}", r.name, me.node_id, r.protocol());
//!     }
//! }
//! print!("{}", cfg.dump(None)?);
//! # Ok::<(), drbd_config::Error>(())
//! ```

mod dump;
mod error;
mod inherit;
mod lexer;
mod model;
pub mod options;
mod parser;
mod postparse;

use std::path::Path as FsPath;

pub use dump::esc;
pub use error::{Error, ErrorKind, EXIT_CONFIG_INVALID, EXIT_EXEC_ERROR, EXIT_USAGE};
pub use model::*;
pub use options::{OptionDef, OptionKind};

/// How to load a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The name of "this host", matched against `on` sections.
    pub hostname: String,
}

/// The name of this host as drbdadm sees it: the `__DRBD_NODE__`
/// environment variable if set and not empty, else the kernel's node name
/// (`uname -n`).
pub fn this_hostname() -> String {
    if let Ok(n) = std::env::var("__DRBD_NODE__") {
        if !n.is_empty() {
            return n;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Reads, parses and checks the configuration at `path` (and its includes).
pub fn load(path: &FsPath, opts: &LoadOptions) -> Result<Config, Error> {
    let src = std::fs::read(path).map_err(|e| Error {
        kind: ErrorKind::Io,
        file: path.to_path_buf(),
        line: 0,
        col: 0,
        message: format!("Can not open '{}': {e}", path.display()),
    })?;
    parse_bytes(path, &src, opts)
}

/// Parses `src` as if read from `path` (includes are still read from disk,
/// relative to `path`'s directory).
pub fn parse_bytes(path: &FsPath, src: &[u8], opts: &LoadOptions) -> Result<Config, Error> {
    let mut ctx = parser::Ctx::new(&opts.hostname, path);
    let canon = parser::canonical(path);
    ctx.cfg.source = canon.clone();
    parser::parse_file(&mut ctx, path, canon, src)?;
    postparse::post_parse(&mut ctx)?;
    Ok(ctx.cfg)
}

impl Config {
    /// The text `drbdadm dump` prints: for `None`, the file header, `global`,
    /// `common` and every resource; for `Some(name)`, that resource only,
    /// which must have a section for this host (as with `drbdadm dump NAME`).
    pub fn dump(&self, resource: Option<&str>) -> Result<String, Error> {
        let mut p = dump::Printer::new();
        match resource {
            None => {
                let mut head = format!("# {}\n", self.source.display());
                let mut g = dump::Printer::new();
                g.global(&self.global);
                if let Some(c) = &self.common {
                    g.common(c);
                }
                head.push_str(&g.finish());
                for r in &self.resources {
                    p.resource(r, &self.hostname);
                }
                Ok(head + &p.finish())
            }
            Some(name) => {
                let r = self
                    .resources
                    .iter()
                    .find(|r| r.name == name && r.this_host.is_some());
                let Some(r) = r else {
                    let at = self.resources.iter().find(|r| r.name == name);
                    return Err(Error {
                        kind: ErrorKind::Usage,
                        file: at.map_or_else(|| self.source.clone(), |r| r.file.clone()),
                        line: at.map_or(0, |r| r.line),
                        col: at.map_or(0, |r| r.col),
                        message: format!("'{name}' not defined in your config (for this host)."),
                    });
                };
                p.resource(r, &self.hostname);
                Ok(p.finish())
            }
        }
    }

    /// The resource called `name`.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }
}

/// drbdadm's host name comparison: case-insensitive; if either name is
/// short (no dot), only the parts before the first dot are compared.
pub fn hostnames_equal(a: &str, b: &str) -> bool {
    match (a.find('.'), b.find('.')) {
        (Some(_), Some(_)) => a.eq_ignore_ascii_case(b),
        (da, db) => {
            let sa = &a[..da.unwrap_or(a.len())];
            let sb = &b[..db.unwrap_or(b.len())];
            sa.eq_ignore_ascii_case(sb)
        }
    }
}

/// CRC32C (Castagnoli), reflected, without pre/post inversion: the form
/// drbdadm uses to order two hosts when it makes up their node ids.
pub(crate) fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(hostnames_equal("nodo1", "NODO1.example.com"));
        assert!(hostnames_equal("a.b", "A.B"));
        assert!(!hostnames_equal("a.b", "a.c"));
        assert!(!hostnames_equal("nodo1", "nodo12"));
    }

    #[test]
    fn implicit_node_ids_follow_drbdadm() {
        // drbdadm gives node-id 0 to the host whose address hashes higher.
        let h59 = crc32c(0x1a65_6f21, b"10.0.0.59") as i32;
        let h218 = crc32c(0x1a65_6f21, b"10.0.0.218") as i32;
        assert!(h59 > h218);
    }
}
