//! Tokenizer for the DRBD configuration language.
//!
//! drbdadm's scanner is a flex grammar: at every position the longest
//! matching pattern wins, and among patterns of equal length the one listed
//! first wins. We reproduce that rule with small "set of end positions"
//! matchers, so that `on` is a keyword while `online` is a word, `7789` is an
//! integer while `123456789` (nine digits) is a word, and `10.0.0.59` is an
//! IPv4 address rather than a word.

/// The kind of a token, mirroring the scanner's token classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// One of `{ } ; [ ] :`.
    Punct(u8),
    /// A reserved word.
    Kw(Kw),
    /// `N.N.N`, only meaningful after `require-drbd-module-version-*`.
    KmodVers,
    /// A dotted quad.
    IpAddr,
    /// Something shaped like an IPv6 address.
    IpAddr6,
    /// Up to eight digits with an optional `K`, `M`, `G` or `s` suffix.
    Integer,
    /// A bare word or a double-quoted string (already unescaped).
    Str,
    /// A bare word longer than 128 characters.
    ErrStringTooLong,
    /// A double-quoted string longer than 255 characters.
    ErrDqStringTooLong,
    /// A double-quoted string cut by a newline or a lone backslash.
    ErrDqString,
    /// Any other single character.
    Else,
    /// End of input.
    Eof,
}

macro_rules! keywords {
    ($($name:ident = $text:literal),* $(,)?) => {
        /// Reserved words of the language.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Kw { $($name),* }
        /// Reserved words in the scanner's rule order.
        const KEYWORDS: &[(&str, Kw)] = &[$(($text, Kw::$name)),*];
    };
}

keywords! {
    On = "on", Stacked = "stacked-on-top-of", Floating = "floating", No = "no",
    Net = "net", Yes = "yes", Ask = "ask", Via = "via", Skip = "skip",
    ModuleEq = "require-drbd-module-version-eq", ModuleNe = "require-drbd-module-version-ne",
    ModuleGt = "require-drbd-module-version-gt", ModuleGe = "require-drbd-module-version-ge",
    ModuleLt = "require-drbd-module-version-lt", ModuleLe = "require-drbd-module-version-le",
    Disk = "disk", Host = "host", Hosts = "hosts", Port = "port", Proxy = "proxy",
    Minor = "minor", Inside = "inside", Volume = "volume",
    CmdTimeoutShort = "cmd-timeout-short", CmdTimeoutMedium = "cmd-timeout-medium",
    CmdTimeoutLong = "cmd-timeout-long", Syncer = "syncer", Device = "device",
    Global = "global", Common = "common", Options = "options", Outside = "outside",
    Address = "address", Startup = "startup", Include = "include", Handlers = "handlers",
    Connection = "connection", ConnectionMesh = "connection-mesh", MinorCount = "minor-count",
    DisableIpVerification = "disable-ip-verification", UdevAlwaysUseVnr = "udev-always-use-vnr",
    DialogRefresh = "dialog-refresh", Resource = "resource", MetaDisk = "meta-disk",
    FlexMetaDisk = "flexible-meta-disk", NodeId = "node-id", UsageCount = "usage-count",
    ThisHost = "_this_host", RemoteHost = "_remote_host", PeerNodeId = "_peer_node_id",
    IsStandalone = "_is_standalone", TemplateFile = "template-file", Path = "path",
    Sci = "sci", Ssocks = "ssocks", Sdp = "sdp", Ipv4 = "ipv4", Ipv6 = "ipv6",
}

/// Index of the first rule after the keywords that come before `KMODVERS` in
/// the scanner (`on` .. `require-drbd-module-version-le`).
const KW_BEFORE_KMODVERS: usize = 15;

/// One token with its position (1-based line and column, in bytes).
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    /// The token text as the scanner's `yytext` (quoted strings unescaped).
    pub text: String,
    pub line: u32,
    pub col: u32,
}

pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    line_start: usize,
}

type Ends = Vec<usize>;

fn class(src: &[u8], starts: &[usize], f: impl Fn(u8) -> bool) -> Ends {
    let mut out: Ends = starts
        .iter()
        .filter(|&&p| p < src.len() && f(src[p]))
        .map(|&p| p + 1)
        .collect();
    out.dedup();
    out
}

fn lit(src: &[u8], starts: &[usize], s: &[u8]) -> Ends {
    starts
        .iter()
        .filter(|&&p| src.len() >= p + s.len() && &src[p..p + s.len()] == s)
        .map(|&p| p + s.len())
        .collect()
}

/// Applies `f` between `min` and `max` times; returns every reachable end.
fn rep(starts: &[usize], min: usize, max: usize, f: &dyn Fn(&[usize]) -> Ends) -> Ends {
    let mut all: Ends = Vec::new();
    let mut cur: Ends = starts.to_vec();
    if min == 0 {
        all.extend_from_slice(&cur);
    }
    for i in 1..=max {
        cur = f(&cur);
        cur.sort_unstable();
        cur.dedup();
        if cur.is_empty() {
            break;
        }
        if i >= min {
            all.extend_from_slice(&cur);
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

fn union(mut a: Ends, b: Ends) -> Ends {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

fn is_str_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'_' | b'-')
}

fn longest(ends: &[usize], start: usize) -> usize {
    ends.iter().copied().max().map_or(0, |e| e - start)
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a [u8]) -> Self {
        Lexer {
            src,
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    /// The current line (the scanner's `line` variable).
    pub fn line(&self) -> u32 {
        self.line
    }

    fn run_len(&self, p: usize, f: impl Fn(u8) -> bool, max: usize) -> usize {
        self.src[p..]
            .iter()
            .take(max)
            .take_while(|&&c| f(c))
            .count()
    }

    fn m_snumb(&self, s: &[usize]) -> Ends {
        rep(s, 1, 3, &|x| class(self.src, x, |c| c.is_ascii_digit()))
    }

    fn m_ipv4(&self, s: &[usize]) -> Ends {
        let quad = rep(s, 3, 3, &|x| lit(self.src, &self.m_snumb(x), b"."));
        self.m_snumb(&quad)
    }

    fn m_hex4(&self, s: &[usize]) -> Ends {
        rep(s, 1, 4, &|x| class(self.src, x, |c| c.is_ascii_hexdigit()))
    }

    fn m_ipv6(&self, start: usize) -> usize {
        let s = [start];
        // ((HEX4 ":"){0,5} HEX4)?
        let head = rep(&s, 0, 5, &|x| lit(self.src, &self.m_hex4(x), b":"));
        let head = union(s.to_vec(), self.m_hex4(&head));
        let a = lit(self.src, &head, b":");
        let a = union(a.clone(), self.m_hex4(&a));
        let b = lit(self.src, &a, b":");
        let tail = self.m_hex4(&b);
        let tail = rep(&tail, 0, 5, &|x| self.m_hex4(&lit(self.src, x, b":")));
        let c = union(b, tail);
        let pct = lit(self.src, &c, b"%");
        let scope = rep(&pct, 1, 128, &|x| class(self.src, x, is_str_char));
        let first = union(c, scope);
        // "::" [fF]{4} ":" IPV4ADDR
        let m = lit(self.src, &s, b"::");
        let m = rep(&m, 4, 4, &|x| {
            class(self.src, x, |c| c == b'f' || c == b'F')
        });
        let m = self.m_ipv4(&lit(self.src, &m, b":"));
        longest(&union(first, m), start)
    }

    fn m_kmodvers(&self, start: usize) -> usize {
        let digits = |x: &[usize]| {
            rep(x, 1, usize::MAX, &|y| {
                class(self.src, y, |c| c.is_ascii_digit())
            })
        };
        let a = digits(&[start]);
        let b = digits(&lit(self.src, &a, b"."));
        let c = digits(&lit(self.src, &b, b"."));
        longest(&c, start)
    }

    /// Scans a double-quoted string at `p`. Returns the end of the longest
    /// DQSTRING match, of the longest ERR_DQSTRING match and of a
    /// LONG_DQSTRING match, if any.
    fn dq_scan(&self, p: usize) -> (Option<usize>, Option<usize>, Option<usize>) {
        let (mut dq, mut err, mut long) = (None, None, None);
        let mut i = p + 1;
        let mut units = 0;
        while let Some(&b) = self.src.get(i) {
            if b == b'\\' || b == b'\n' {
                err = Some(i + 1);
            }
            if units == 255 {
                if b != b'\n' {
                    long = Some(i + 1);
                }
                if b == b'"' {
                    dq = Some(i + 1);
                }
                break;
            }
            match b {
                b'"' => {
                    dq = Some(i + 1);
                    break;
                }
                b'\n' => break,
                b'\\' => match self.src.get(i + 1) {
                    Some(&n) if n != b'\n' => i += 2,
                    _ => break,
                },
                _ => i += 1,
            }
            units += 1;
        }
        (dq, err, long)
    }

    fn skip_blanks(&mut self) {
        while self.pos < self.src.len() {
            match self.src[self.pos] {
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.pos;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'#' => {
                    while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    pub fn next_token(&mut self) -> Token {
        self.skip_blanks();
        let p = self.pos;
        let line = self.line;
        let col = u32::try_from(p - self.line_start + 1).unwrap_or(u32::MAX);
        if p >= self.src.len() {
            return Token {
                tok: Tok::Eof,
                text: String::new(),
                line,
                col,
            };
        }
        let c = self.src[p];
        // Candidates as (length, rule order, kind). Lower order wins ties.
        let mut best: (usize, usize, Tok) = (1, usize::MAX, Tok::Else);
        let mut offer = |len: usize, order: usize, tok: Tok| {
            if len > best.0 || (len == best.0 && order < best.1) {
                best = (len, order, tok);
            }
        };
        if matches!(c, b'{' | b'}' | b';' | b'[' | b']' | b':') {
            offer(1, 0, Tok::Punct(c));
        }
        let word = self.run_len(p, is_str_char, 129);
        for (i, (kw, k)) in KEYWORDS.iter().enumerate() {
            if self.src[p..].starts_with(kw.as_bytes()) {
                let order = if i < KW_BEFORE_KMODVERS { 1 + i } else { 3 + i };
                offer(kw.len(), order, Tok::Kw(*k));
            }
        }
        offer(self.m_kmodvers(p), 2 + KW_BEFORE_KMODVERS, Tok::KmodVers);
        let after_kw = 3 + KEYWORDS.len();
        offer(longest(&self.m_ipv4(&[p]), p), after_kw, Tok::IpAddr);
        offer(self.m_ipv6(p), after_kw + 1, Tok::IpAddr6);
        let digits = self.run_len(p, |c| c.is_ascii_digit(), 8);
        if digits > 0 {
            let unit = matches!(self.src.get(p + digits), Some(b'M' | b'K' | b'G' | b's'));
            offer(digits + usize::from(unit), after_kw + 2, Tok::Integer);
        }
        if c == b'"' {
            let (dq, err, too_long) = self.dq_scan(p);
            if let Some(end) = dq {
                offer(end - p, after_kw + 3, Tok::Str);
            }
            if let Some(end) = too_long {
                offer(end - p, after_kw + 6, Tok::ErrDqStringTooLong);
            }
            if let Some(end) = err {
                offer(end - p, after_kw + 7, Tok::ErrDqString);
            }
        }
        if (1..=128).contains(&word) {
            offer(word, after_kw + 4, Tok::Str);
        } else if word == 129 {
            offer(129, after_kw + 5, Tok::ErrStringTooLong);
        }
        let (len, _, tok) = best;
        let raw = &self.src[p..p + len];
        self.pos = p + len;
        // Only ERR_DQSTRING ends on a newline; like the scanner, we do not
        // count that newline as a line (drbdadm's line numbers drift there).
        if raw.last() == Some(&b'\n') {
            self.line_start = self.pos;
        }
        let text = if tok == Tok::Str && c == b'"' {
            unescape(raw)
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        Token {
            tok,
            text,
            line,
            col,
        }
    }
}

/// Removes double quotes and the backslash before any character, as the
/// scanner does for quoted strings (no C escapes).
fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => i += 1,
            b'\\' if i + 1 < raw.len() => {
                out.push(raw[i + 1]);
                i += 2;
            }
            b'\\' => i += 1,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<(Tok, String)> {
        let mut lx = Lexer::new(s.as_bytes());
        let mut v = Vec::new();
        loop {
            let t = lx.next_token();
            if t.tok == Tok::Eof {
                return v;
            }
            v.push((t.tok, t.text));
        }
    }

    #[test]
    fn longest_match_rules() {
        let k = kinds("on online 7789 123456789 10.0.0.59:7789 1G 10k 9.22.0 \"a b\\\"c\"");
        let toks: Vec<Tok> = k.iter().map(|x| x.0).collect();
        assert_eq!(
            toks,
            vec![
                Tok::Kw(Kw::On),
                Tok::Str,
                Tok::Integer,
                Tok::Str,
                Tok::IpAddr,
                Tok::Punct(b':'),
                Tok::Integer,
                Tok::Integer,
                Tok::Str,
                Tok::KmodVers,
                Tok::Str
            ]
        );
        assert_eq!(k[10].1, "a b\"c");
    }

    #[test]
    fn ipv6_and_comments() {
        let k = kinds("ipv6 [fd00::1]:7789; # comment\n[::ffff:10.0.0.1]");
        assert_eq!(k[0].0, Tok::Kw(Kw::Ipv6));
        assert_eq!(k[2], (Tok::IpAddr6, "fd00::1".into()));
        assert_eq!(k[8], (Tok::IpAddr6, "::ffff:10.0.0.1".into()));
    }

    #[test]
    fn positions() {
        let mut lx = Lexer::new(b"a\n  bb ;");
        lx.next_token();
        let t = lx.next_token();
        assert_eq!((t.line, t.col), (2, 3));
        let t = lx.next_token();
        assert_eq!((t.line, t.col), (2, 6));
    }
}
