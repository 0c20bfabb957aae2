//! The option tables: every option drbdadm accepts in `net`, `disk`,
//! `options`, `startup`, `handlers` and `proxy` sections, with its type,
//! range, default unit and allowed values (facts from drbd-utils 9.22 and
//! the DRBD 9 limits header).

/// What kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// One word out of a fixed list (`nocase`: compared ignoring case).
    Enum {
        values: &'static [&'static str],
        nocase: bool,
    },
    /// A number with an optional `K`/`M`/`G`/`s` suffix, converted to
    /// `scale` (`'1'` = plain, `'k'` = KiB, `'s'` = 512-byte sectors) and
    /// checked against `[min, max]` (unless `clamp`, which clamps silently).
    Numeric {
        min: u64,
        max: u64,
        default: i64,
        scale: char,
        clamp: bool,
    },
    /// `yes` or `no`; a bare option name means `yes`, `no-NAME` means `no`.
    Bool { default: bool },
    /// A string of at most `max_len - 1` bytes (no limit when `None`).
    String { max_len: Option<usize> },
    /// A number in `[min, max]` or one of the symbolic names.
    EnumNum {
        symbols: &'static [&'static str],
        min: u64,
        max: u64,
    },
    /// Not checked while parsing (`resync-after` names a resource).
    Unchecked,
}

/// One option of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDef {
    pub name: &'static str,
    pub kind: OptionKind,
}

const fn def(name: &'static str, kind: OptionKind) -> OptionDef {
    OptionDef { name, kind }
}
const fn num(min: u64, max: u64, default: i64, scale: char) -> OptionKind {
    OptionKind::Numeric {
        min,
        max,
        default,
        scale,
        clamp: false,
    }
}
const fn boolean(default: bool) -> OptionKind {
    OptionKind::Bool { default }
}
const fn en(values: &'static [&'static str]) -> OptionKind {
    OptionKind::Enum {
        values,
        nocase: false,
    }
}
const STR64: OptionKind = OptionKind::String { max_len: Some(64) };
const STR: OptionKind = OptionKind::String { max_len: None };

const PEERS_MAX: u64 = 32;

pub const PROTOCOLS: &[&str] = &["A", "B", "C"];
const ON_IO_ERROR: &[&str] = &["pass_on", "call-local-io-error", "detach"];
const FENCING: &[&str] = &["dont-care", "resource-only", "resource-and-stonith"];
const AFTER_SB_0P: &[&str] = &[
    "disconnect",
    "discard-younger-primary",
    "discard-older-primary",
    "discard-zero-changes",
    "discard-least-changes",
    "discard-local",
    "discard-remote",
];
const AFTER_SB_1P: &[&str] = &[
    "disconnect",
    "consensus",
    "violently-as0p",
    "discard-secondary",
    "call-pri-lost-after-sb",
];
const AFTER_SB_2P: &[&str] = &["disconnect", "violently-as0p", "call-pri-lost-after-sb"];
const RR_CONFLICT: &[&str] = &[
    "disconnect",
    "violently",
    "call-pri-lost",
    "retry-connect",
    "auto-discard",
];
const ON_NO_DATA: &[&str] = &["io-error", "suspend-io"];
const ON_SUSP_PRI_OUTD: &[&str] = &["disconnect", "force-secondary"];
const ON_CONGESTION: &[&str] = &["block", "pull-ahead", "disconnect"];
const READ_BALANCING: &[&str] = &[
    "prefer-local",
    "prefer-remote",
    "round-robin",
    "least-pending",
    "when-congested-remote",
    "32K-striping",
    "64K-striping",
    "128K-striping",
    "256K-striping",
    "512K-striping",
    "1M-striping",
];
const QUORUM: &[&str] = &["off", "majority", "all"];

macro_rules! disk_changeable {
    () => {
        [
            def("on-io-error", en(ON_IO_ERROR)),
            def("disk-barrier", boolean(false)),
            def("disk-flushes", boolean(true)),
            def("disk-drain", boolean(true)),
            def("md-flushes", boolean(true)),
            def("resync-after", OptionKind::Unchecked),
            def(
                "al-extents",
                OptionKind::Numeric {
                    min: 67,
                    max: 0xfffe,
                    default: 1237,
                    scale: '1',
                    clamp: true,
                },
            ),
            def("al-updates", boolean(true)),
            def("discard-zeroes-if-aligned", boolean(true)),
            def("disable-write-same", boolean(false)),
            def("disk-timeout", num(0, 6000, 0, '1')),
            def("read-balancing", en(READ_BALANCING)),
            def("rs-discard-granularity", num(0, 1 << 20, 0, '1')),
        ]
    };
}

const fn concat<const A: usize, const B: usize, const C: usize>(
    a: [OptionDef; A],
    b: [OptionDef; B],
) -> [OptionDef; C] {
    let mut out = [def("", STR); C];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < C {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

const NET_CHANGEABLE: [OptionDef; 31] = [
    def(
        "protocol",
        OptionKind::Enum {
            values: PROTOCOLS,
            nocase: true,
        },
    ),
    def("timeout", num(1, 600, 60, '1')),
    def("max-epoch-size", num(1, 20000, 2048, '1')),
    def("connect-int", num(1, 120, 10, '1')),
    def("ping-int", num(1, 120, 10, '1')),
    def("sndbuf-size", num(0, 10 << 20, 0, '1')),
    def("rcvbuf-size", num(0, 10 << 20, 0, '1')),
    def("ko-count", num(0, 200, 7, '1')),
    def("allow-two-primaries", boolean(false)),
    def("cram-hmac-alg", STR64),
    def("shared-secret", STR64),
    def("after-sb-0pri", en(AFTER_SB_0P)),
    def("after-sb-1pri", en(AFTER_SB_1P)),
    def("after-sb-2pri", en(AFTER_SB_2P)),
    def("always-asbp", boolean(false)),
    def("rr-conflict", en(RR_CONFLICT)),
    def("ping-timeout", num(1, 300, 5, '1')),
    def("data-integrity-alg", STR64),
    def("tcp-cork", boolean(true)),
    def("on-congestion", en(ON_CONGESTION)),
    def("congestion-fill", num(0, 10 << 21, 0, 's')),
    def("congestion-extents", num(67, 0xfffe, 1237, '1')),
    def("csums-alg", STR64),
    def("csums-after-crash-only", boolean(false)),
    def("verify-alg", STR64),
    def("use-rle", boolean(true)),
    def("socket-check-timeout", num(0, 300, 0, '1')),
    def("fencing", en(FENCING)),
    def("max-buffers", num(32, 131072, 2048, '1')),
    def("allow-remote-read", boolean(true)),
    def("_name", STR64),
];

/// `net` sections (connection options), as drbdadm's parser reads them.
pub static NET: [OptionDef; 32] = concat([def("transport", STR)], NET_CHANGEABLE);

/// `disk` sections: the attach options (`size` plus the changeable ones).
pub static DISK: [OptionDef; 14] =
    concat([def("size", num(0, 2 << 40, 0, 's'))], disk_changeable!());

/// Per-peer-device options, accepted in `disk` sections too.
pub static PEER_DEVICE: [OptionDef; 7] = [
    def("resync-rate", num(1, 8 << 20, 250, 'k')),
    def("c-plan-ahead", num(0, 300, 20, '1')),
    def("c-delay-target", num(1, 100, 10, '1')),
    def("c-fill-target", num(0, 1 << 20, 100, 's')),
    def("c-max-rate", num(0, 4 << 20, 102400, 'k')),
    def("c-min-rate", num(0, 4 << 20, 250, 'k')),
    def("bitmap", boolean(true)),
];

/// Resource `options` sections.
pub static RESOURCE: [OptionDef; 13] = [
    def("cpu-mask", OptionKind::String { max_len: Some(32) }),
    def("on-no-data-accessible", en(ON_NO_DATA)),
    def("auto-promote", boolean(true)),
    def("peer-ack-window", num(2048, 204800, 4096, 's')),
    def("peer-ack-delay", num(1, 10000, 100, '1')),
    def("twopc-timeout", num(50, 600, 300, '1')),
    def("twopc-retry-timeout", num(1, 50, 1, '1')),
    def("auto-promote-timeout", num(0, 600, 20, '1')),
    def("max-io-depth", num(4, u32::MAX as u64, 8000, '1')),
    def(
        "quorum",
        OptionKind::EnumNum {
            symbols: QUORUM,
            min: 1,
            max: PEERS_MAX,
        },
    ),
    def("on-no-quorum", en(ON_NO_DATA)),
    def(
        "quorum-minimum-redundancy",
        OptionKind::EnumNum {
            symbols: QUORUM,
            min: 1,
            max: PEERS_MAX,
        },
    ),
    def("on-suspended-primary-outdated", en(ON_SUSP_PRI_OUTD)),
];

/// `startup` sections.
pub static STARTUP: [OptionDef; 4] = [
    def("wfc-timeout", num(0, 300000, 0, '1')),
    def("degr-wfc-timeout", num(0, 300000, 0, '1')),
    def("outdated-wfc-timeout", num(0, 300000, 0, '1')),
    def("wait-after-sb", boolean(false)),
];

/// `handlers` sections: every handler is a shell command string.
pub static HANDLERS: [OptionDef; 15] = [
    def("pri-on-incon-degr", STR),
    def("pri-lost-after-sb", STR),
    def("pri-lost", STR),
    def("initial-split-brain", STR),
    def("split-brain", STR),
    def("outdate-peer", STR),
    def("fence-peer", STR),
    def("unfence-peer", STR),
    def("local-io-error", STR),
    def("before-resync-target", STR),
    def("after-resync-target", STR),
    def("before-resync-source", STR),
    def("out-of-sync", STR),
    def("quorum-lost", STR),
    def("disconnected", STR),
];

/// `proxy { options { ... } }` sections.
pub static PROXY: [OptionDef; 7] = [
    def("memlimit", num(0, u64::MAX, 0, '1')),
    def("read-loops", num(0, u64::MAX, 0, '1')),
    def("compression", num(0, u64::MAX, 0, '1')),
    def("bwlimit", num(0, u64::MAX, 0, '1')),
    def("sndbuf-size", num(0, 10 << 20, 0, '1')),
    def("rcvbuf-size", num(0, 10 << 20, 0, '1')),
    def("ping-timeout", num(1, 300, 5, '1')),
];

/// Looks `name` up in `table`; a `no-` prefix is stripped first and reported.
pub fn find<'t>(table: &'t [OptionDef], name: &str) -> (Option<&'t OptionDef>, bool) {
    let (name, no) = match name.strip_prefix("no-") {
        Some(rest) => (rest, true),
        None => (name, false),
    };
    (
        table.iter().find(|d| !d.name.is_empty() && d.name == name),
        no,
    )
}

/// Every option name in `table`, joined by ` | ` (for error messages).
pub fn names(table: &[OptionDef]) -> String {
    table
        .iter()
        .filter(|d| !d.name.is_empty())
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Why a value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueError {
    NotAnEnum,
    NotABool,
    NotANumber,
    TooSmall,
    TooBig,
    TooLong,
}

impl ValueError {
    pub fn describe(self) -> &'static str {
        match self {
            ValueError::NotAnEnum => "not valid",
            ValueError::NotABool => "not 'yes' or 'no'",
            ValueError::NotANumber => "not a number",
            ValueError::TooSmall => "too small",
            ValueError::TooBig => "too big",
            ValueError::TooLong => "too long",
        }
    }
}

/// Parses a number with an optional unit suffix and converts it to
/// `scale`, the way drbd-utils does (`sscanf("%llu%c")`, suffixes
/// `K`/`k`, `M`/`m`, `G`/`g`, `s`; converting down rounds up).
pub fn parse_scaled(text: &str, scale: char) -> Option<u64> {
    let base_shift: i32 = match scale {
        'k' | 'K' => -10,
        's' => -9,
        _ => 0,
    };
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut v = t[..digits].parse::<u64>().unwrap_or(u64::MAX);
    if neg {
        v = v.wrapping_neg();
    }
    let rest = &t.as_bytes()[digits..];
    let unit_shift = match rest {
        [] => return Some(v),
        [u] => match u {
            b'K' | b'k' => 10,
            b'M' | b'm' => 20,
            b'G' | b'g' => 30,
            b's' => 9,
            _ => return None,
        },
        _ => return None,
    };
    let shift = base_shift + unit_shift;
    if shift < 0 {
        let s = shift.unsigned_abs();
        return Some(v.div_ceil(1u64 << s));
    }
    let s = shift.unsigned_abs();
    if v > (u64::MAX >> s) {
        return None;
    }
    Some(v << s)
}

/// Checks `value` against the option's type, as the parser does.
pub fn check(kind: &OptionKind, value: &str) -> Result<(), ValueError> {
    match *kind {
        OptionKind::Enum { values, nocase } => {
            let ok = values.iter().any(|v| {
                if nocase {
                    v.eq_ignore_ascii_case(value)
                } else {
                    *v == value
                }
            });
            if ok {
                Ok(())
            } else {
                Err(ValueError::NotAnEnum)
            }
        }
        OptionKind::Numeric {
            min,
            max,
            clamp,
            scale,
            ..
        } => {
            let v = parse_scaled(value, scale).ok_or(ValueError::NotANumber)?;
            if clamp {
                Ok(())
            } else if v < min {
                Err(ValueError::TooSmall)
            } else if v > max {
                Err(ValueError::TooBig)
            } else {
                Ok(())
            }
        }
        OptionKind::Bool { .. } => match value {
            "yes" | "no" => Ok(()),
            _ => Err(ValueError::NotABool),
        },
        OptionKind::String { max_len } => match max_len {
            Some(m) if value.len() >= m => Err(ValueError::TooLong),
            _ => Ok(()),
        },
        OptionKind::EnumNum { symbols, min, max } => {
            if symbols.contains(&value) {
                return Ok(());
            }
            let v = parse_scaled(value, '1').ok_or(ValueError::NotAnEnum)?;
            // drbd-utils compares these as C ints.
            let v = v as u32 as i32 as i64;
            if v < min as i64 {
                Err(ValueError::TooSmall)
            } else if v > max as i64 {
                Err(ValueError::TooBig)
            } else {
                Ok(())
            }
        }
        OptionKind::Unchecked => Ok(()),
    }
}

/// Whether two values of an option mean the same (for inheritance).
pub fn values_equal(kind: &OptionKind, a: &str, b: &str) -> bool {
    match *kind {
        OptionKind::Numeric { scale, .. } => parse_scaled(a, scale) == parse_scaled(b, scale),
        OptionKind::Bool { .. } => (a == "yes") == (b == "yes") && (a == "no") == (b == "no"),
        OptionKind::Enum { nocase: true, .. } => a.eq_ignore_ascii_case(b),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_scaled("10M", 'k'), Some(10240));
        assert_eq!(parse_scaled("1G", 's'), Some(2 << 20));
        assert_eq!(parse_scaled("1000", 'k'), Some(1000));
        assert_eq!(parse_scaled("1s", 'k'), Some(1));
        assert_eq!(parse_scaled("10x", '1'), None);
        assert_eq!(parse_scaled("x", '1'), None);
    }

    #[test]
    fn checks() {
        let (d, no) = find(&NET, "no-allow-two-primaries");
        assert!(no);
        assert_eq!(d.unwrap().name, "allow-two-primaries");
        assert_eq!(check(&NET[1].kind, "c"), Ok(()));
        assert_eq!(check(&NET[1].kind, "D"), Err(ValueError::NotAnEnum));
        assert_eq!(check(&PEER_DEVICE[0].kind, "0"), Err(ValueError::TooSmall));
        assert_eq!(check(&RESOURCE[9].kind, "majority"), Ok(()));
        assert_eq!(check(&RESOURCE[9].kind, "33"), Err(ValueError::TooBig));
    }
}
