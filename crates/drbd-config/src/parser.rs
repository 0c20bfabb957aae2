//! Recursive-descent parser: tokens to the [`Config`] model.
//!
//! The grammar and the error positions follow drbdadm's hand-written parser:
//! an unexpected token is reported on the line where it was read, a bad
//! option value on the line of the value, a duplicate statement on the line
//! of the statement. Where drbdadm would keep going after an error and
//! report more, we stop at the first one.

use std::collections::{HashMap, HashSet};
use std::path::{Path as FsPath, PathBuf};

use crate::error::{Error, ErrorKind};
use crate::hostnames_equal;
use crate::lexer::{Kw, Lexer, Tok, Token};
use crate::model::*;
use crate::options::{self, OptionDef, OptionKind};

/// Include nesting limit (drbdadm skips files it has seen, which already
/// prevents loops; this bounds pathological glob chains).
const MAX_INCLUDE_DEPTH: usize = 64;

/// Limits from the DRBD headers.
const PORT_MAX: u64 = 0xffff;
const NODE_ID_MAX: u64 = 32;

pub(crate) type PResult<T> = Result<T, Error>;

/// State shared by the top-level file and everything it includes.
pub(crate) struct Ctx {
    pub cfg: Config,
    /// drbdadm's global uniqueness tree: key -> "file:line" of first use.
    pub unique: HashMap<String, String>,
    seen: HashSet<PathBuf>,
    depth: usize,
    global_seen: bool,
    /// The top-level file as named by the caller, and its last line.
    pub top_file: PathBuf,
    pub top_last_line: u32,
}

impl Ctx {
    pub fn new(hostname: &str, top: &FsPath) -> Self {
        Ctx {
            cfg: Config {
                hostname: hostname.to_string(),
                ..Config::default()
            },
            unique: HashMap::new(),
            seen: HashSet::new(),
            depth: 0,
            global_seen: false,
            top_file: top.to_path_buf(),
            top_last_line: 1,
        }
    }
}

pub(crate) fn canonical(path: &FsPath) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        }
    })
}

/// Parses one file (and, recursively, its includes) into `ctx`.
pub(crate) fn parse_file(
    ctx: &mut Ctx,
    display: &FsPath,
    canon: PathBuf,
    src: &[u8],
) -> PResult<()> {
    ctx.seen.insert(canon.clone());
    let mut p = FileParser {
        ctx,
        lx: Lexer::new(src),
        file: display.to_path_buf(),
        canon,
        tok: Token {
            tok: Tok::Eof,
            text: String::new(),
            line: 1,
            col: 1,
        },
        fline: 1,
        upr: HashMap::new(),
    };
    let r = p.parse_top();
    if p.ctx.depth == 0 {
        p.ctx.top_last_line = p.lx.line();
    }
    r
}

struct FileParser<'c> {
    ctx: &'c mut Ctx,
    lx: Lexer<'c>,
    /// The file as drbdadm names it in parse errors.
    file: PathBuf,
    /// Its canonical path (drbdadm's `config_save`).
    canon: PathBuf,
    /// The last token read (drbdadm's `yytext`).
    tok: Token,
    /// The line of the statement being parsed (drbdadm's `fline`).
    fline: u32,
    /// Per-resource uniqueness tree.
    upr: HashMap<String, String>,
}

/// What a section being parsed as a resource is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResKind {
    Resource,
    /// `common` or a template: no host sections allowed.
    Common,
}

fn lead_int(s: &str) -> u32 {
    let d: String = s.chars().take_while(char::is_ascii_digit).collect();
    d.parse::<u64>()
        .map_or(if d.is_empty() { 0 } else { u32::MAX }, |v| {
            u32::try_from(v).unwrap_or(u32::MAX)
        })
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(20).collect();
    if s.chars().count() > 20 {
        out.push_str("...");
    }
    out
}

impl<'c> FileParser<'c> {
    // ----- tokens and errors ------------------------------------------------

    fn next(&mut self) -> Token {
        self.tok = self.lx.next_token();
        self.tok.clone()
    }

    fn err_at(&self, line: u32, col: u32, msg: impl Into<String>) -> Error {
        Error::config(self.file.clone(), line, col, msg)
    }

    /// An error at the last token read.
    fn err_here(&self, msg: impl Into<String>) -> Error {
        self.err_at(self.tok.line, self.tok.col, msg)
    }

    fn pe_expected(&self, what: &str) -> Error {
        self.err_here(format!(
            "Parse error: '{what}' expected,\n\tbut got '{}'",
            short(&self.tok.text)
        ))
    }

    fn string_error(&self) -> Option<Error> {
        let msg = match self.tok.tok {
            Tok::ErrStringTooLong => "Token too long",
            Tok::ErrDqStringTooLong => "Double quoted string too long",
            Tok::ErrDqString => {
                "Unterminated double quoted string\n  we don't allow embedded newlines\n "
            }
            _ => return None,
        };
        Some(self.err_here(format!("{msg} >>>{}...<<<", short(&self.tok.text))))
    }

    fn expect(&mut self, want: Tok, name: &str) -> PResult<Token> {
        let t = self.next();
        if t.tok != want {
            if want == Tok::Str {
                if let Some(e) = self.string_error() {
                    return Err(e);
                }
            }
            return Err(self.pe_expected(name));
        }
        Ok(t)
    }

    fn expect_punct(&mut self, c: u8) -> PResult<Token> {
        self.expect(Tok::Punct(c), &(c as char).to_string())
    }

    fn expect_int(&mut self) -> PResult<Token> {
        self.expect(Tok::Integer, "TK_INTEGER")
    }

    /// drbdadm's `check_uniq`/`check_upr`: the first use of `key` wins, a
    /// second one is an error on the current statement line.
    fn unique(&mut self, global: bool, what: &str, key: String, line: u32) -> PResult<()> {
        let here = format!("{}:{}", self.file.display(), line);
        let map = if global {
            &mut self.ctx.unique
        } else {
            &mut self.upr
        };
        if let Some(first) = map.get(&key).cloned() {
            return Err(self.err_at(
                line,
                self.tok.col,
                format!("conflicting use of {what} '{key}' ...\n{first}: {what} '{key}' first used here."),
            ));
        }
        map.insert(key, here);
        Ok(())
    }

    fn range(&self, what: &str, text: &str, min: u64, max: u64) -> PResult<()> {
        let v = options::parse_scaled(text, '1');
        match v {
            Some(v) if (min..=max).contains(&v) => Ok(()),
            Some(v) => Err(self.err_at(
                self.fline,
                self.tok.col,
                format!("{what} {text} => {v} out of range [{min}..{max}]."),
            )),
            None => Err(self.err_at(
                self.fline,
                self.tok.col,
                format!("{text} is not a valid number"),
            )),
        }
    }

    // ----- top level ----------------------------------------------------------

    fn parse_top(&mut self) -> PResult<()> {
        loop {
            let t = self.next();
            self.fline = t.line;
            match t.tok {
                Tok::Kw(Kw::Global) => self.parse_global()?,
                Tok::Kw(Kw::Common) => {
                    self.expect_punct(b'{')?;
                    self.upr.clear();
                    self.unique(true, "resource section", "common".into(), t.line)?;
                    let (sections, _) = self.parse_resource_body("common", ResKind::Common)?;
                    self.ctx.cfg.common = Some(sections.sections);
                }
                Tok::Kw(Kw::Resource) => {
                    let name = self.expect(Tok::Str, "TK_STRING")?;
                    if name.text.is_empty() {
                        return Err(self.err_here("Resource name is empty."));
                    }
                    if name.text.bytes().any(|b| b < b' ' || b == 0x7f) {
                        return Err(self.err_here(
                            "Resource name is invalid - please don't use control characters.",
                        ));
                    }
                    self.expect_punct(b'{')?;
                    let (mut res, _) = self.parse_resource_body(&name.text, ResKind::Resource)?;
                    res.col = t.col;
                    self.ctx.cfg.resources.push(res);
                }
                Tok::Kw(Kw::Skip) => self.parse_skip()?,
                Tok::Kw(Kw::Include) => {
                    let f = self.expect(Tok::Str, "TK_STRING")?;
                    self.expect_punct(b';')?;
                    self.include(&f)?;
                }
                Tok::Kw(
                    Kw::ModuleEq | Kw::ModuleNe | Kw::ModuleGt | Kw::ModuleGe | Kw::ModuleLt | Kw::ModuleLe,
                ) => {
                    // The module version cannot be known without a kernel;
                    // the requirement is parsed and not enforced.
                    self.expect(Tok::KmodVers, "TK_KMODVERS")?;
                    self.expect_punct(b';')?;
                }
                Tok::Eof => return Ok(()),
                _ => {
                    return Err(self.pe_expected(
                        "global | common | resource | skip | include |\n\trequire-drbd-module-version-{eq,ne,gt,ge,lt,le}",
                    ))
                }
            }
        }
    }

    fn include(&mut self, pattern: &Token) -> PResult<()> {
        let dir = self
            .canon
            .parent()
            .map(FsPath::to_path_buf)
            .unwrap_or_default();
        let pat = &pattern.text;
        let is_glob = pat.contains(['?', '*', '[']);
        let full = if FsPath::new(pat).is_absolute() {
            PathBuf::from(pat)
        } else {
            dir.join(pat)
        };
        let mut matches: Vec<(PathBuf, PathBuf)> = Vec::new();
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        match glob::glob_with(&full.to_string_lossy(), opts) {
            Ok(paths) => {
                for p in paths.flatten() {
                    // Name the file as drbdadm does: relative to the including
                    // file's directory when the pattern was relative.
                    let shown = if FsPath::new(pat).is_absolute() {
                        p.clone()
                    } else {
                        p.strip_prefix(&dir)
                            .map(FsPath::to_path_buf)
                            .unwrap_or_else(|_| p.clone())
                    };
                    matches.push((p, shown));
                }
            }
            Err(_) => {
                if is_glob {
                    return Ok(());
                }
            }
        }
        matches.sort_by(|a, b| {
            a.1.as_os_str()
                .as_encoded_bytes()
                .cmp(b.1.as_os_str().as_encoded_bytes())
        });
        if matches.is_empty() && !is_glob {
            return Err(Error {
                kind: ErrorKind::Io,
                ..self.err_at(
                    self.tok.line,
                    pattern.col,
                    format!("Failed to open include file '{pat}'."),
                )
            });
        }
        if self.ctx.depth >= MAX_INCLUDE_DEPTH {
            return Err(self.err_at(pattern.line, pattern.col, "Includes nested too deeply"));
        }
        for (path, shown) in matches {
            let canon = canonical(&path);
            if self.ctx.seen.contains(&canon) {
                continue;
            }
            if !path.is_file() {
                // glob(3) also returns directories (reading them yields
                // nothing) and device nodes; only regular files are read.
                self.ctx.seen.insert(canon);
                continue;
            }
            let Ok(src) = std::fs::read(&path) else {
                return Err(Error {
                    kind: ErrorKind::Io,
                    ..self.err_at(
                        self.tok.line,
                        pattern.col,
                        format!("Failed to open include file '{}'.", shown.display()),
                    )
                });
            };
            self.ctx.depth += 1;
            let r = parse_file(self.ctx, &shown, canon, &src);
            self.ctx.depth -= 1;
            r?;
        }
        Ok(())
    }

    fn parse_global(&mut self) -> PResult<()> {
        let line = self.tok.line;
        if self.ctx.global_seen {
            return Err(self.err_at(
                line,
                self.tok.col,
                "conflicting use of global section 'global' ...".to_string(),
            ));
        }
        self.ctx.global_seen = true;
        self.expect_punct(b'{')?;
        loop {
            let t = self.next();
            self.fline = t.line;
            let g = &mut self.ctx.cfg.global;
            match t.tok {
                Tok::Kw(Kw::UdevAlwaysUseVnr) => g.udev_always_use_vnr = true,
                Tok::Kw(Kw::DisableIpVerification) => g.disable_ip_verification = true,
                Tok::Kw(Kw::MinorCount) => {
                    let v = self.expect_int()?;
                    self.range("minor-count", &v.text, 1, 255)?;
                    self.ctx.cfg.global.minor_count = lead_int(&v.text);
                }
                Tok::Kw(Kw::DialogRefresh) => {
                    let v = self.expect_int()?;
                    self.range("dialog-refresh", &v.text, 0, 600)?;
                    self.ctx.cfg.global.dialog_refresh = lead_int(&v.text);
                }
                Tok::Kw(k @ (Kw::CmdTimeoutShort | Kw::CmdTimeoutMedium | Kw::CmdTimeoutLong)) => {
                    let v = self.expect_int()?;
                    let name = t.text.clone();
                    self.range(&name, &v.text, 0, 900)?;
                    let g = &mut self.ctx.cfg.global;
                    let slot = match k {
                        Kw::CmdTimeoutShort => &mut g.cmd_timeout_short,
                        Kw::CmdTimeoutMedium => &mut g.cmd_timeout_medium,
                        _ => &mut g.cmd_timeout_long,
                    };
                    *slot = Some(lead_int(&v.text));
                }
                Tok::Kw(Kw::UsageCount) => {
                    let v = self.next();
                    self.ctx.cfg.global.usage_count = match v.tok {
                        Tok::Kw(Kw::Yes) => UsageCount::Yes,
                        Tok::Kw(Kw::No) => UsageCount::No,
                        Tok::Kw(Kw::Ask) => UsageCount::Ask,
                        _ => return Err(self.pe_expected("yes | no | ask")),
                    };
                }
                Tok::Punct(b'}') => return Ok(()),
                _ => {
                    return Err(
                        self.pe_expected("dialog-refresh | minor-count | disable-ip-verification")
                    )
                }
            }
            self.expect_punct(b';')?;
        }
    }

    fn parse_skip(&mut self) -> PResult<()> {
        let start = (self.tok.line, self.tok.col);
        let mut level = 0i64;
        loop {
            let t = self.next();
            match t.tok {
                Tok::Punct(b'{') => level += 1,
                Tok::Punct(b'}') => {
                    level -= 1;
                    if level == 0 {
                        return Ok(());
                    }
                }
                Tok::Eof => {
                    return Err(self.err_at(
                        start.0,
                        start.1,
                        "reached eof while parsing this skip block.",
                    ))
                }
                _ => {}
            }
        }
    }

    // ----- options -------------------------------------------------------------

    /// The value after an option name: `;` alone means yes (or no with a
    /// `no-` prefix); anything else is checked against the option's type.
    fn option_value(&mut self, d: &OptionDef, no: bool) -> PResult<String> {
        let t = self.next();
        if t.tok == Tok::Punct(b';') {
            return Ok(if no { "no" } else { "yes" }.to_string());
        }
        if let Err(e) = options::check(&d.kind, &t.text) {
            let mut msg = format!(
                "Parse error: while parsing value ('{}')\nfor {}. Value is {}.",
                short(&t.text),
                d.name,
                e.describe()
            );
            match d.kind {
                OptionKind::Enum { values, .. } if e == options::ValueError::NotAnEnum => {
                    msg.push_str(&format!("\nAllowed values are: {}", values.join(" | ")));
                }
                OptionKind::String { max_len: Some(m) } => {
                    msg.push_str(&format!("\nmax len: {}", m - 1))
                }
                _ => {}
            }
            return Err(self.err_at(t.line, t.col, msg));
        }
        self.expect_punct(b';')?;
        Ok(t.text)
    }

    /// Reads `name value;` lines up to `}`. Names not in `table` go to
    /// `delegate`, which returns false to refuse them.
    fn parse_options(
        &mut self,
        table: &'static [OptionDef],
        mut delegate: impl FnMut(&mut Self) -> PResult<bool>,
        expected: &str,
    ) -> PResult<Options> {
        let mut out = Options::new(table);
        loop {
            let t = self.next();
            if t.tok == Tok::Punct(b'}') {
                return Ok(out);
            }
            let (d, no) = options::find(table, &t.text);
            match d {
                Some(d) => {
                    let v = self.option_value(d, no)?;
                    out.push(d.name, Some(v));
                }
                None => {
                    if !delegate(self)? {
                        let exp = if expected.is_empty() {
                            options::names(table)
                        } else {
                            expected.to_string()
                        };
                        return Err(self.pe_expected(&exp));
                    }
                }
            }
        }
    }

    fn parse_plain_options(&mut self, table: &'static [OptionDef]) -> PResult<Options> {
        self.parse_options(table, |_| Ok(false), "")
    }

    /// `disk { }`: attach options, with peer-device options mixed in.
    fn parse_disk_options(&mut self) -> PResult<(Options, Options)> {
        let mut pd = Options::new(&options::PEER_DEVICE);
        let disk = self.parse_options(
            &options::DISK,
            |p| {
                let (d, no) = options::find(&options::PEER_DEVICE, &p.tok.text);
                match d {
                    Some(d) => {
                        let v = p.option_value(d, no)?;
                        pd.push(d.name, Some(v));
                        Ok(true)
                    }
                    None => Err(p.pe_expected(&options::names(&options::PEER_DEVICE))),
                }
            },
            "",
        )?;
        Ok((disk, pd))
    }

    fn parse_net_options(&mut self) -> PResult<Options> {
        self.parse_options(&options::NET, |_| Ok(false), "an option keyword")
    }

    /// `proxy { options... plugin { ... } }`.
    fn parse_proxy_options(&mut self) -> PResult<(Options, Options)> {
        self.expect_punct(b'{')?;
        let mut plugins = Options::free();
        let opts = self.parse_options(
            &options::PROXY,
            |p| {
                if p.tok.text != "plugin" {
                    return Ok(false);
                }
                let t = p.next();
                if t.tok != Tok::Punct(b'{') {
                    return Err(p.err_here("expected \"{\" after \"proxy\" keyword"));
                }
                let mut list = Options::free();
                loop {
                    let mut words: Vec<String> = Vec::new();
                    loop {
                        let t = p.next();
                        match t.tok {
                            Tok::Punct(b';') => break,
                            Tok::Punct(b'}') if words.is_empty() => {
                                plugins = list;
                                return Ok(true);
                            }
                            Tok::Punct(b'}') => {
                                return Err(p.err_here("Missing \";\" before  \"}\""))
                            }
                            Tok::Eof => return Err(p.pe_expected("}")),
                            _ => words.push(t.text),
                        }
                    }
                    list.push(&words.join(" "), None);
                }
            },
            "",
        )?;
        Ok((opts, plugins))
    }

    fn parse_syncer(&mut self, s: &mut Sections) -> PResult<()> {
        loop {
            let t = self.next();
            self.fline = t.line;
            if t.tok == Tok::Punct(b'}') {
                return Ok(());
            }
            let name = match t.text.as_str() {
                "outdate-peer" => "fence-peer",
                "rate" => "resync-rate",
                "after" => "resync-after",
                other => other,
            };
            let targets: [(&'static [OptionDef], u8); 3] = [
                (&options::NET, 0),
                (&options::DISK, 1),
                (&options::RESOURCE, 2),
            ];
            let found = targets.iter().find_map(|(tab, which)| {
                let (d, no) = options::find(tab, name);
                d.map(|d| (d, no, *which))
            });
            let Some((d, no, which)) = found else {
                return Err(self.pe_expected("a syncer option keyword"));
            };
            let v = self.option_value(d, no)?;
            let target = match which {
                0 => &mut s.net,
                1 => &mut s.disk,
                _ => &mut s.options,
            };
            target.push(d.name, Some(v));
        }
    }

    // ----- addresses, devices, volumes -------------------------------------------

    fn parse_address_inner(&mut self) -> PResult<Address> {
        let t = self.next();
        let (family, ip) = match t.tok {
            Tok::Kw(Kw::Sci) | Tok::Kw(Kw::Ssocks) => (
                AddressFamily::Ssocks,
                self.expect(Tok::IpAddr, "TK_IPADDR")?.text,
            ),
            Tok::Kw(Kw::Sdp) => (
                AddressFamily::Sdp,
                self.expect(Tok::IpAddr, "TK_IPADDR")?.text,
            ),
            Tok::Kw(Kw::Ipv4) => (
                AddressFamily::Ipv4,
                self.expect(Tok::IpAddr, "TK_IPADDR")?.text,
            ),
            Tok::Kw(Kw::Ipv6) => {
                self.expect_punct(b'[')?;
                let ip = self.expect(Tok::IpAddr6, "TK_IPADDR6")?.text;
                self.expect_punct(b']')?;
                (AddressFamily::Ipv6, ip)
            }
            Tok::IpAddr => (AddressFamily::Ipv4, t.text),
            _ => return Err(self.pe_expected("ssocks | sdp | ipv4 | ipv6 | <ipv4 address> ")),
        };
        self.expect_punct(b':')?;
        let port = self.expect_int()?;
        self.range("port", &port.text, 1, PORT_MAX)?;
        let n = options::parse_scaled(&port.text, '1').unwrap_or(0);
        Ok(Address {
            family,
            ip,
            port: u16::try_from(n).unwrap_or(0),
            port_text: port.text,
        })
    }

    fn parse_address(&mut self) -> PResult<Address> {
        let a = self.parse_address_inner()?;
        self.expect_punct(b';')?;
        Ok(a)
    }

    /// `device`: `/dev/drbdN`, `drbdN`, `NAME minor N` or `minor N`.
    fn parse_device(&mut self, hosts: Option<&[String]>, vol: &mut Volume) -> PResult<()> {
        let applies =
            hosts.is_none_or(|h| h.iter().any(|n| hostnames_equal(n, &self.ctx.cfg.hostname)));
        let t = self.next();
        let mut minor_tok = None;
        match t.tok {
            Tok::Str => {
                let dev = if t.text.starts_with("drbd") {
                    format!("/dev/{}", t.text)
                } else {
                    t.text.clone()
                };
                if applies && !dev.starts_with("/dev/drbd") {
                    return Err(self.err_at(
                        self.fline,
                        t.col,
                        "device name must start with /dev/drbd\n\t(/dev/ is optional, but drbd is required)",
                    ));
                }
                vol.device = Some(dev.clone());
                let n = self.next();
                match n.tok {
                    Tok::Punct(b';') => {
                        let digits = dev.strip_prefix("/dev/drbd").unwrap_or(&dev);
                        let only = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                        let num = if only {
                            digits.parse::<u64>().ok()
                        } else {
                            None
                        };
                        match num.and_then(|n| u32::try_from(n).ok()) {
                            Some(m) => vol.minor = Some(m),
                            None => {
                                return Err(self.err_at(
                                    self.fline,
                                    t.col,
                                    "no minor given nor device name contains a minor number",
                                ))
                            }
                        }
                    }
                    Tok::Kw(Kw::Minor) => minor_tok = Some(()),
                    _ => return Err(self.pe_expected("minor | ;")),
                }
            }
            Tok::Kw(Kw::Minor) => minor_tok = Some(()),
            // drbdadm silently accepts anything else here (`device;`).
            _ => {}
        }
        if minor_tok.is_some() {
            let m = self.expect_int()?;
            let minor = lead_int(&m.text);
            vol.minor = Some(minor);
            self.expect_punct(b';')?;
            if applies {
                if let Some(dev) = &vol.device {
                    let rest = dev.get(9..).unwrap_or("");
                    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                        if lead_int(rest) != minor {
                            return Err(self.err_at(
                                self.fline,
                                t.col,
                                format!(
                                    "explicit minor number must match with device name\n\tTry \"device /dev/drbd{minor} minor {minor};\",\n\tor leave off either device name or explicit minor.\n\tArbitrary device names must start with /dev/drbd_\n\tmind the '_'! (/dev/ is optional, but drbd_ is required)"
                                ),
                            ));
                        }
                    } else if !rest.starts_with('_') {
                        return Err(self.err_at(
                            self.fline,
                            t.col,
                            "arbitrary device name must start with /dev/drbd_\n\tmind the '_'! (/dev/ is optional, but drbd_ is required)",
                        ));
                    }
                }
            }
        }
        if let Some(hosts) = hosts {
            let line = self.fline;
            for h in hosts {
                let m = vol.minor.map_or(u32::MAX, |m| m);
                self.unique(true, "device-minor", format!("device-minor:{h}:{m}"), line)?;
                if let Some(d) = vol.device.clone() {
                    self.unique(true, "device", format!("device:{h}:{d}"), line)?;
                }
            }
        }
        Ok(())
    }

    fn parse_meta_disk(&mut self, vol: &mut Volume) -> PResult<()> {
        let t = self.expect(Tok::Str, "TK_STRING")?;
        if t.text == "internal" {
            vol.meta_disk = Some(MetaDisk::Internal);
            self.expect_punct(b';')?;
            return Ok(());
        }
        let n = self.next();
        match n.tok {
            Tok::Punct(b'[') => {
                let idx = self.expect_int()?;
                self.expect_punct(b']')?;
                self.expect_punct(b';')?;
                vol.meta_disk = Some(MetaDisk::Indexed(t.text, idx.text));
            }
            Tok::Punct(b';') => vol.meta_disk = Some(MetaDisk::Flexible(t.text)),
            _ => return Err(self.pe_expected("[ | ;")),
        }
        Ok(())
    }

    /// One statement valid inside a volume; `Ok(false)` if `t` is not one.
    fn parse_volume_stmt(
        &mut self,
        vol: &mut Volume,
        hosts: Option<&[String]>,
        t: &Token,
    ) -> PResult<bool> {
        if vol.file.as_os_str().is_empty() {
            vol.file = self.canon.clone();
        }
        match t.tok {
            Tok::Kw(Kw::Disk) => {
                let n = self.next();
                match n.tok {
                    Tok::Str => {
                        vol.disk = Some(n.text);
                        self.expect_punct(b';')?;
                    }
                    Tok::Punct(b'{') => {
                        let (d, pd) = self.parse_disk_options()?;
                        vol.disk_options.entries.extend(d.entries);
                        vol.peer_device_options.entries.extend(pd.entries);
                    }
                    _ => {
                        if let Some(e) = self.string_error() {
                            return Err(e);
                        }
                        return Err(self.pe_expected("TK_STRING | {"));
                    }
                }
                vol.parsed_disk = true;
                vol.disk_line = self.fline;
            }
            Tok::Kw(Kw::Device) => {
                self.parse_device(hosts, vol)?;
                vol.parsed_device = true;
                vol.device_line = self.fline;
            }
            Tok::Kw(Kw::MetaDisk) => {
                self.parse_meta_disk(vol)?;
                vol.parsed_meta_disk = true;
                vol.meta_disk_line = self.fline;
            }
            Tok::Kw(Kw::FlexMetaDisk) => {
                let s = self.expect(Tok::Str, "TK_STRING")?;
                vol.meta_disk = Some(if s.text == "internal" {
                    MetaDisk::Internal
                } else {
                    MetaDisk::Flexible(s.text)
                });
                self.expect_punct(b';')?;
                vol.parsed_meta_disk = true;
                vol.meta_disk_line = self.fline;
            }
            Tok::Kw(Kw::Skip) => self.parse_skip()?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn parse_volume(&mut self, hosts: Option<&[String]>) -> PResult<Volume> {
        let n = self.expect_int()?;
        let mut vol = Volume::new(lead_int(&n.text), false);
        self.expect_punct(b'{')?;
        loop {
            let t = self.next();
            if t.tok == Tok::Punct(b'}') {
                return Ok(vol);
            }
            if !self.parse_volume_stmt(&mut vol, hosts, &t)? {
                return Err(self.pe_expected("device | disk | meta-disk | flex-meta-disk | }"));
            }
        }
    }

    /// The implicit volume 0 (statements outside `volume` sections).
    fn volume0<'v>(&self, vols: &'v mut Vec<Volume>) -> PResult<&'v mut Volume> {
        if vols.is_empty() {
            vols.push(Volume::new(0, true));
        } else if !(vols.len() == 1 && vols[0].number == 0 && vols[0].implicit) {
            return Err(self.err_here("mixing explicit and implicit volumes is not allowed"));
        }
        Ok(&mut vols[0])
    }

    // ----- hosts -----------------------------------------------------------------

    fn parse_host_names(&mut self, delim: u8) -> PResult<Vec<String>> {
        let mut names = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Str => names.push(t.text),
                Tok::Punct(c) if c == delim => {
                    if names.is_empty() {
                        return Err(self.pe_expected("TK_STRING"));
                    }
                    return Ok(names);
                }
                _ => return Err(self.pe_expected(&format!("TK_STRING | '{}'", delim as char))),
            }
        }
    }

    fn parse_proxy_section(&mut self) -> PResult<Proxy> {
        let start = self.tok.clone();
        self.expect(Tok::Kw(Kw::On), "TK_ON")?;
        let on_hosts = self.parse_host_names(b'{')?;
        let (mut inside, mut outside) = (None, None);
        let (mut opts, mut plugins) = (Options::new(&options::PROXY), Options::free());
        loop {
            let t = self.next();
            match t.tok {
                Tok::Kw(Kw::Inside) => inside = Some(self.parse_address()?),
                Tok::Kw(Kw::Outside) => outside = Some(self.parse_address()?),
                Tok::Kw(Kw::Options) => (opts, plugins) = self.parse_proxy_options()?,
                Tok::Punct(b'}') => break,
                _ => return Err(self.pe_expected("inside | outside")),
            }
        }
        let missing = |what: &str| {
            self.err_at(
                start.line,
                start.col,
                format!(
                    "in section: proxy on {} {{ ... }} }}: '{what}' keyword missing.",
                    on_hosts.join(" ")
                ),
            )
        };
        let inside = inside.ok_or_else(|| missing("inside"))?;
        let outside = outside.ok_or_else(|| missing("outside"))?;
        Ok(Proxy {
            on_hosts,
            inside,
            outside,
            options: opts,
            plugins,
        })
    }

    fn parse_host_section(
        &mut self,
        res: &mut Resource,
        names: Vec<String>,
        kind: HostKind,
    ) -> PResult<()> {
        let start = self.tok.clone();
        let mut host = Host {
            kind: kind.clone(),
            names,
            node_id: None,
            node_id_text: None,
            address: None,
            volumes: Vec::new(),
            options: Options::new(&options::RESOURCE),
            proxy: None,
            line: start.line,
            col: start.col,
            require_minor: matches!(kind, HostKind::On | HostKind::Floating),
        };
        let mut in_braces = true;
        if kind == HostKind::Floating {
            let a = self.parse_address_inner()?;
            let fake = if a.family == AddressFamily::Ipv6 {
                format!("ipv6 [{}]:{}", a.ip, a.port_text)
            } else {
                format!("{}:{}", a.ip, a.port_text)
            };
            host.names.insert(0, fake);
            host.address = Some(a);
            let t = self.next();
            match t.tok {
                Tok::Punct(b'{') => {}
                Tok::Punct(b';') => in_braces = false,
                _ => return Err(self.pe_expected("{ | ;")),
            }
        }
        let names = host.names.clone();
        let on_names: Vec<String> = if kind == HostKind::Floating {
            Vec::new()
        } else {
            names.clone()
        };
        for h in &on_names {
            self.unique(
                false,
                "host section",
                format!("{}: on {h}", res.name),
                start.line,
            )?;
        }
        while in_braces {
            let t = self.next();
            self.fline = t.line;
            let stmt = match t.tok {
                Tok::Kw(Kw::Disk) => Some("disk"),
                Tok::Kw(Kw::Device) => Some("device"),
                Tok::Kw(Kw::MetaDisk) | Tok::Kw(Kw::FlexMetaDisk) => Some("meta-disk"),
                _ => None,
            };
            if let Some(what) = stmt {
                for h in &on_names {
                    self.unique(
                        false,
                        &format!("{what} statement"),
                        format!("{}:{h}:{what}", res.name),
                        t.line,
                    )?;
                }
                let mut vols = std::mem::take(&mut host.volumes);
                let r = (|| -> PResult<bool> {
                    let v = self.volume0(&mut vols)?;
                    self.parse_volume_stmt(v, Some(&on_names), &t)
                })();
                host.volumes = vols;
                if !r? {
                    return Err(self.pe_expected(
                        "disk | device | address | meta-disk | flexible-meta-disk | node-id | skip",
                    ));
                }
                continue;
            }
            match t.tok {
                Tok::Kw(Kw::Address) => {
                    if kind == HostKind::Floating {
                        return Err(self.err_at(
                            t.line,
                            t.col,
                            "address statement not allowed for floating {} host sections",
                        ));
                    }
                    for h in &on_names {
                        self.unique(
                            false,
                            "address statement",
                            format!("{}:{h}:address", res.name),
                            t.line,
                        )?;
                    }
                    host.address = Some(self.parse_address()?);
                }
                Tok::Kw(Kw::Proxy) => host.proxy = Some(self.parse_proxy_section()?),
                Tok::Kw(Kw::Volume) => {
                    let v = self.parse_volume(Some(&on_names))?;
                    insert_volume(&mut host.volumes, v);
                }
                Tok::Kw(Kw::NodeId) => {
                    let v = self.expect_int()?;
                    self.range("node-id", &v.text, 0, NODE_ID_MAX)?;
                    host.node_id = Some(lead_int(&v.text));
                    host.node_id_text = Some(v.text.clone());
                    for h in &on_names {
                        self.unique(
                            false,
                            "node-id statement",
                            format!("{}:{h}:node-id", res.name),
                            t.line,
                        )?;
                    }
                    self.unique(false, "node-id", format!("{}:{}", res.name, v.text), t.line)?;
                    self.expect_punct(b';')?;
                }
                Tok::Kw(Kw::Options) => {
                    self.expect_punct(b'{')?;
                    host.options = self.parse_plain_options(&options::RESOURCE)?;
                }
                Tok::Kw(Kw::Skip) => self.parse_skip()?,
                Tok::Punct(b'}') => in_braces = false,
                _ => {
                    return Err(self.pe_expected(
                        "disk | device | address | meta-disk | flexible-meta-disk | node-id | skip",
                    ))
                }
            }
        }
        res.hosts.push(host);
        Ok(())
    }

    fn parse_stacked_section(&mut self, res: &mut Resource) -> PResult<()> {
        let start = self.tok.clone();
        let lower = self.expect(Tok::Str, "TK_STRING")?;
        self.unique(
            true,
            "stacked-on-top-of",
            format!("stacked:{}", lower.text),
            start.line,
        )?;
        let mut host = Host {
            kind: HostKind::Stacked {
                lower: lower.text.clone(),
            },
            names: Vec::new(),
            node_id: None,
            node_id_text: None,
            address: None,
            volumes: Vec::new(),
            options: Options::new(&options::RESOURCE),
            proxy: None,
            line: start.line,
            col: start.col,
            require_minor: false,
        };
        self.expect_punct(b'{')?;
        loop {
            let t = self.next();
            self.fline = t.line;
            match t.tok {
                Tok::Kw(Kw::Device) => {
                    let mut vols = std::mem::take(&mut host.volumes);
                    let r = (|| -> PResult<()> {
                        let v = self.volume0(&mut vols)?;
                        self.parse_device(None, v)?;
                        v.parsed_device = true;
                        v.meta_disk = Some(MetaDisk::Internal);
                        Ok(())
                    })();
                    host.volumes = vols;
                    r?;
                }
                Tok::Kw(Kw::Address) => host.address = Some(self.parse_address()?),
                Tok::Kw(Kw::Proxy) => host.proxy = Some(self.parse_proxy_section()?),
                Tok::Kw(Kw::Volume) => {
                    let n = self.expect_int()?;
                    let mut vol = Volume::new(lead_int(&n.text), false);
                    self.expect_punct(b'{')?;
                    loop {
                        let t = self.next();
                        match t.tok {
                            Tok::Kw(Kw::Device) => {
                                self.parse_device(None, &mut vol)?;
                                vol.parsed_device = true;
                            }
                            Tok::Kw(Kw::Disk) => {
                                self.expect_punct(b'{')?;
                                let (d, pd) = self.parse_disk_options()?;
                                vol.disk_options = d;
                                vol.peer_device_options = pd;
                            }
                            Tok::Punct(b'}') => break,
                            _ => return Err(self.pe_expected("device | disk | }")),
                        }
                    }
                    vol.meta_disk = Some(MetaDisk::Internal);
                    insert_volume(&mut host.volumes, vol);
                }
                Tok::Kw(Kw::NodeId) => {
                    let v = self.expect_int()?;
                    self.range("node-id", &v.text, 0, NODE_ID_MAX)?;
                    host.node_id = Some(lead_int(&v.text));
                    host.node_id_text = Some(v.text.clone());
                    self.unique(false, "node-id", format!("{}:{}", res.name, v.text), t.line)?;
                    self.expect_punct(b';')?;
                }
                Tok::Punct(b'}') => break,
                _ => return Err(self.pe_expected("device | address | proxy | volume | node-id")),
            }
        }
        res.hosts.push(host);
        res.stacked = true;
        Ok(())
    }

    // ----- connections -------------------------------------------------------------

    fn parse_endpoint(&mut self, first: &Token) -> PResult<Endpoint> {
        let mut ep = Endpoint {
            kind: EndpointKind::Host,
            host_name: String::new(),
            address: None,
            host: None,
            proxy: None,
            parsed_address: false,
            parsed_port: false,
            line: first.line,
        };
        let with_address = match first.tok {
            Tok::Kw(Kw::Address) => {
                ep.kind = EndpointKind::Address;
                ep.host_name = "UNKNOWN".into();
                true
            }
            Tok::Kw(Kw::ThisHost) => {
                ep.kind = EndpointKind::ThisHost;
                ep.host_name = "_this_host".into();
                true
            }
            Tok::Kw(Kw::RemoteHost) => {
                ep.kind = EndpointKind::RemoteHost;
                ep.host_name = "_remote_host".into();
                true
            }
            _ => false,
        };
        let mut t;
        if !with_address {
            ep.host_name = self.expect(Tok::Str, "TK_STRING")?.text;
            t = self.next();
        } else {
            t = Token {
                tok: Tok::Kw(Kw::Address),
                ..first.clone()
            };
        }
        match t.tok {
            Tok::Kw(Kw::Address) => {
                ep.address = Some(self.parse_address_inner()?);
                ep.parsed_address = true;
                t = self.next();
            }
            Tok::Kw(Kw::Port) => {
                let p = self.expect_int()?;
                let n = options::parse_scaled(&p.text, '1').unwrap_or(0);
                ep.address = Some(Address {
                    family: AddressFamily::Ipv4,
                    ip: String::new(),
                    port: u16::try_from(n).unwrap_or(0),
                    port_text: p.text,
                });
                ep.parsed_port = true;
                t = self.next();
            }
            Tok::Kw(Kw::Via) | Tok::Punct(b';') => {}
            _ => return Err(self.pe_expected("address | port | ;")),
        }
        match t.tok {
            Tok::Kw(Kw::Via) => {
                self.expect(Tok::Kw(Kw::Proxy), "TK_PROXY")?;
                ep.proxy = Some(self.parse_proxy_section()?);
            }
            Tok::Punct(b';') => {}
            _ => return Err(self.pe_expected("via | ; ")),
        }
        Ok(ep)
    }

    fn parse_connection(&mut self) -> PResult<Connection> {
        let start = self.tok.clone();
        let mut conn = Connection {
            implicit: false,
            paths: Vec::new(),
            net: Options::new(&options::NET),
            peer_device_options: Options::new(&options::PEER_DEVICE),
            peer_devices: Vec::new(),
            standalone: false,
            peer_node_id: None,
            line: start.line,
        };
        let t = self.next();
        match t.tok {
            Tok::Punct(b'{') => {}
            // drbdadm warns that connection names are ignored.
            Tok::Str => {
                self.expect_punct(b'{')?;
            }
            _ => return Err(self.pe_expected("{")),
        }
        let mut hosts = 0;
        let mut net_seen = false;
        loop {
            let t = self.next();
            self.fline = t.line;
            match t.tok {
                Tok::Kw(Kw::Address | Kw::Host | Kw::ThisHost | Kw::RemoteHost) => {
                    if conn.paths.is_empty() {
                        conn.paths.push(Path {
                            implicit: true,
                            endpoints: Vec::new(),
                            line: t.line,
                        });
                    } else if !conn.paths[0].implicit {
                        return Err(self.err_here("Explicit and implicit paths not allowed"));
                    }
                    let ep = self.parse_endpoint(&t)?;
                    conn.paths[0].endpoints.push(ep);
                    hosts += 1;
                    if hosts >= 3 {
                        return Err(self.err_at(
                            t.line,
                            t.col,
                            "only two 'host' keywords per connection allowed",
                        ));
                    }
                }
                Tok::Kw(Kw::PeerNodeId) => {
                    let v = self.expect_int()?;
                    self.range("node-id", &v.text, 0, NODE_ID_MAX)?;
                    self.expect_punct(b';')?;
                    conn.peer_node_id = Some(lead_int(&v.text));
                }
                Tok::Kw(Kw::Net) => {
                    if net_seen {
                        return Err(self.err_at(
                            t.line,
                            t.col,
                            "only one 'net' section per connection allowed",
                        ));
                    }
                    net_seen = true;
                    self.expect_punct(b'{')?;
                    conn.net = self.parse_net_options()?;
                }
                Tok::Kw(Kw::Skip) => self.parse_skip()?,
                Tok::Kw(Kw::Disk) => {
                    self.expect_punct(b'{')?;
                    conn.peer_device_options = self.parse_plain_options(&options::PEER_DEVICE)?;
                }
                Tok::Kw(Kw::Volume) => {
                    let n = self.expect_int()?;
                    let line = self.tok.line;
                    self.expect_punct(b'{')?;
                    self.expect(Tok::Kw(Kw::Disk), "TK_DISK")?;
                    self.expect_punct(b'{')?;
                    let opts = self.parse_plain_options(&options::PEER_DEVICE)?;
                    self.expect_punct(b'}')?;
                    conn.peer_devices.push(PeerDevice {
                        volume: lead_int(&n.text),
                        options: opts,
                        implicit: false,
                        line,
                    });
                }
                Tok::Kw(Kw::IsStandalone) => {
                    conn.standalone = true;
                    self.expect_punct(b';')?;
                }
                Tok::Kw(Kw::Path) => {
                    let line = t.line;
                    self.expect_punct(b'{')?;
                    let mut path = Path {
                        implicit: false,
                        endpoints: Vec::new(),
                        line,
                    };
                    loop {
                        let t = self.next();
                        match t.tok {
                            Tok::Kw(Kw::Address | Kw::Host | Kw::ThisHost | Kw::RemoteHost) => {
                                let ep = self.parse_endpoint(&t)?;
                                path.endpoints.push(ep);
                                if path.endpoints.len() >= 3 {
                                    return Err(self.err_at(
                                        t.line,
                                        t.col,
                                        "only two 'host' keywords per path allowed",
                                    ));
                                }
                            }
                            Tok::Punct(b'}') => break,
                            _ => return Err(self.pe_expected("host | }")),
                        }
                    }
                    if conn.paths.first().is_some_and(|p| p.implicit) {
                        return Err(self.err_at(
                            line,
                            t.col,
                            "Explicit and implicit paths not allowed",
                        ));
                    }
                    conn.paths.push(path);
                }
                Tok::Punct(b'}') => {
                    if conn.paths.is_empty() {
                        return Err(self.err_at(
                            t.line,
                            t.col,
                            "connection without a single path (maybe empty?) not allowed",
                        ));
                    }
                    return Ok(conn);
                }
                _ => return Err(self.pe_expected("host | net | skip | }")),
            }
        }
    }

    fn parse_mesh(&mut self) -> PResult<Mesh> {
        self.expect_punct(b'{')?;
        let mut mesh = Mesh {
            hosts: Vec::new(),
            net: Options::new(&options::NET),
        };
        let mut net_seen = false;
        loop {
            let t = self.next();
            match t.tok {
                Tok::Kw(Kw::Hosts) => mesh.hosts.extend(self.parse_host_names(b';')?),
                Tok::Kw(Kw::Net) => {
                    if net_seen {
                        return Err(self.err_at(t.line, t.col, "only one 'net' section allowed"));
                    }
                    net_seen = true;
                    self.expect_punct(b'{')?;
                    mesh.net = self.parse_net_options()?;
                }
                Tok::Punct(b'}') => return Ok(mesh),
                _ => return Err(self.pe_expected("hosts | net | }")),
            }
        }
    }

    // ----- resources ---------------------------------------------------------------

    fn parse_resource_body(&mut self, name: &str, kind: ResKind) -> PResult<(Resource, ())> {
        if kind == ResKind::Resource {
            self.upr.clear();
            let line = self.tok.line;
            self.unique(true, "resource section", name.to_string(), line)?;
        }
        let mut res = Resource {
            name: name.to_string(),
            file: self.canon.clone(),
            line: self.tok.line,
            col: 1,
            volumes: Vec::new(),
            hosts: Vec::new(),
            connections: Vec::new(),
            meshes: Vec::new(),
            sections: Sections::default(),
            template_file: None,
            template: None,
            this_host: None,
            stacked: false,
        };
        let mut first_host: Option<(u32, u32)> = None;
        loop {
            let t = self.next();
            self.fline = t.line;
            let rn = res.name.clone();
            match t.tok {
                Tok::Str if t.text == "protocol" => {
                    self.unique(false, "protocol statement", format!("{rn}: protocol"), t.line)?;
                    let (d, _) = options::find(&options::NET, "protocol");
                    let d = d.copied().expect("protocol is a net option");
                    let v = self.option_value(&d, false)?;
                    res.sections.net.push("protocol", Some(v));
                }
                Tok::Kw(Kw::On) => {
                    first_host.get_or_insert((t.line, t.col));
                    let names = self.parse_host_names(b'{')?;
                    self.parse_host_section(&mut res, names, HostKind::On)?;
                }
                Tok::Kw(Kw::Stacked) => {
                    first_host.get_or_insert((t.line, t.col));
                    self.parse_stacked_section(&mut res)?;
                }
                Tok::Kw(Kw::ThisHost) => {
                    first_host.get_or_insert((t.line, t.col));
                    self.expect_punct(b'{')?;
                    self.parse_host_section(&mut res, vec!["_this_host".into()], HostKind::ThisHost)?;
                }
                Tok::Kw(Kw::Floating) => {
                    first_host.get_or_insert((t.line, t.col));
                    self.parse_host_section(&mut res, Vec::new(), HostKind::Floating)?;
                }
                Tok::Kw(Kw::Disk) => {
                    let n = self.next();
                    match n.tok {
                        Tok::Str => {
                            let v = self.volume0(&mut res.volumes)?;
                            v.disk = Some(n.text);
                            v.parsed_disk = true;
                            if v.file.as_os_str().is_empty() {
                                v.file = self.canon.clone();
                            }
                            v.disk_line = t.line;
                            self.expect_punct(b';')?;
                        }
                        Tok::Punct(b'{') => {
                            self.unique(false, "disk section", format!("{rn}:disk"), t.line)?;
                            let (d, pd) = self.parse_disk_options()?;
                            res.sections.disk.entries.extend(d.entries);
                            res.sections.peer_device.entries.extend(pd.entries);
                        }
                        _ => {
                            if let Some(e) = self.string_error() {
                                return Err(e);
                            }
                            return Err(self.pe_expected("TK_STRING | {"));
                        }
                    }
                }
                Tok::Kw(Kw::Net) => {
                    self.unique(false, "net section", format!("{rn}:net"), t.line)?;
                    self.expect_punct(b'{')?;
                    let o = self.parse_net_options()?;
                    res.sections.net.entries.extend(o.entries);
                }
                Tok::Kw(Kw::Syncer) => {
                    self.unique(false, "syncer section", format!("{rn}:syncer"), t.line)?;
                    self.expect_punct(b'{')?;
                    let mut s = std::mem::take(&mut res.sections);
                    let r = self.parse_syncer(&mut s);
                    res.sections = s;
                    r?;
                }
                Tok::Kw(Kw::Startup) => {
                    self.unique(false, "startup section", format!("{rn}:startup"), t.line)?;
                    self.expect_punct(b'{')?;
                    let mut stacked_timeouts = false;
                    let o = self.parse_options(
                        &options::STARTUP,
                        |p| match p.tok.text.as_str() {
                            "become-primary-on" => loop {
                                let t = p.next();
                                match t.tok {
                                    Tok::Punct(b';') => return Ok(true),
                                    Tok::Eof => return Err(p.pe_expected(";")),
                                    _ => {}
                                }
                            },
                            "stacked-timeouts" => {
                                stacked_timeouts = true;
                                p.expect_punct(b';')?;
                                Ok(true)
                            }
                            _ => Ok(false),
                        },
                        "<an option keyword> | become-primary-on | stacked-timeouts",
                    )?;
                    res.sections.startup = o;
                    res.sections.stacked_timeouts |= stacked_timeouts;
                }
                Tok::Kw(Kw::Handlers) => {
                    self.unique(false, "handlers section", format!("{rn}:handlers"), t.line)?;
                    self.expect_punct(b'{')?;
                    res.sections.handlers = self.parse_plain_options(&options::HANDLERS)?;
                }
                Tok::Kw(Kw::Proxy) => {
                    self.unique(false, "proxy section", format!("{rn}:proxy"), t.line)?;
                    let (o, p) = self.parse_proxy_options()?;
                    res.sections.proxy = o;
                    res.sections.proxy_plugins = p;
                }
                Tok::Kw(Kw::Device | Kw::MetaDisk | Kw::FlexMetaDisk) => {
                    if t.tok == Tok::Kw(Kw::Device) {
                        self.unique(false, "device statement", format!("{rn}:device"), t.line)?;
                    }
                    let mut vols = std::mem::take(&mut res.volumes);
                    let r = (|| -> PResult<bool> {
                        let v = self.volume0(&mut vols)?;
                        self.parse_volume_stmt(v, None, &t)
                    })();
                    res.volumes = vols;
                    r?;
                }
                Tok::Kw(Kw::Volume) => {
                    let v = self.parse_volume(None)?;
                    insert_volume(&mut res.volumes, v);
                }
                Tok::Kw(Kw::Options) => {
                    self.unique(false, "resource options section", format!("{rn}:res_options"), t.line)?;
                    self.expect_punct(b'{')?;
                    let o = self.parse_plain_options(&options::RESOURCE)?;
                    res.sections.options.entries.extend(o.entries);
                }
                Tok::Kw(Kw::Connection) => {
                    let c = self.parse_connection()?;
                    res.connections.push(c);
                }
                Tok::Kw(Kw::ConnectionMesh) => {
                    let m = self.parse_mesh()?;
                    res.meshes.push(m);
                }
                Tok::Kw(Kw::TemplateFile) => self.template_file(&mut res)?,
                Tok::Kw(Kw::Skip) => self.parse_skip()?,
                Tok::Punct(b'}') | Tok::Eof => break,
                _ => {
                    return Err(self.pe_expected(
                        "protocol | on | disk | net | syncer | startup | handlers | connection | ignore-on | stacked-on-top-of | skip",
                    ))
                }
            }
        }
        if kind == ResKind::Common && !res.hosts.is_empty() {
            let (l, c) = first_host.unwrap_or((res.line, 1));
            return Err(self.err_at(
                l,
                c,
                format!("in the {name} section, there are no host sections allowed."),
            ));
        }
        Ok((res, ()))
    }

    fn template_file(&mut self, res: &mut Resource) -> PResult<()> {
        let f = self.expect(Tok::Str, "TK_STRING")?;
        self.expect_punct(b';')?;
        let dir = self
            .canon
            .parent()
            .map(FsPath::to_path_buf)
            .unwrap_or_default();
        let path = dir.join(&f.text);
        let src = std::fs::read(&path).map_err(|_| Error {
            kind: ErrorKind::Io,
            ..Error::config(
                self.canon.clone(),
                f.line,
                f.col,
                format!("Failed to open template file '{}'.", f.text),
            )
        })?;
        let saved_upr = std::mem::take(&mut self.upr);
        let mut sub = FileParser {
            ctx: self.ctx,
            lx: Lexer::new(&src),
            file: PathBuf::from(&f.text),
            canon: canonical(&path),
            tok: Token {
                tok: Tok::Eof,
                text: String::new(),
                line: 1,
                col: 1,
            },
            fline: 1,
            upr: HashMap::new(),
        };
        sub.expect(Tok::Kw(Kw::Common), "TK_COMMON")?;
        sub.expect_punct(b'{')?;
        let (t, _) = sub.parse_resource_body(&format!("template-{}", res.name), ResKind::Common)?;
        res.template_file = Some(t.file.clone());
        res.template = Some(Box::new(t.sections));
        self.upr = saved_upr;
        Ok(())
    }
}

/// Inserts keeping the list sorted by volume number.
fn insert_volume(vols: &mut Vec<Volume>, v: Volume) {
    let pos = vols
        .iter()
        .position(|x| x.number > v.number)
        .unwrap_or(vols.len());
    vols.insert(pos, v);
}
