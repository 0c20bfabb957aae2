//! Property tests: arbitrary bytes and mutated corpus files never panic,
//! and every error names a file, a line and a column.

mod common;

use std::path::PathBuf;

use drbd_config::{parse_bytes, LoadOptions};
use proptest::prelude::*;

fn fake_path() -> PathBuf {
    // A directory with no includable files: includes in random input find
    // nothing (or the corpus file names, which do not exist there).
    std::env::temp_dir()
        .join("drbd-config-fuzz-nonexistent-dir")
        .join("fuzz.conf")
}

fn check(bytes: &[u8]) {
    let opts = LoadOptions {
        hostname: "alpha".into(),
    };
    match parse_bytes(&fake_path(), bytes, &opts) {
        Ok(cfg) => {
            let _ = cfg.dump(None).expect("dump of a valid config");
            let _ = cfg.expand();
        }
        Err(e) => {
            let s = e.to_string();
            let mut p = s.splitn(4, ':');
            let (f, l, c) = (p.next().unwrap(), p.next(), p.next());
            assert!(!f.is_empty(), "{s}");
            assert!(l.is_some_and(|l| l.parse::<u32>().is_ok()), "{s}");
            assert!(c.is_some_and(|c| c.parse::<u32>().is_ok()), "{s}");
            assert!(e.exit_code() != 0);
        }
    }
}

fn corpus_texts() -> Vec<Vec<u8>> {
    common::corpus("good")
        .into_iter()
        .chain(common::corpus("bad"))
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes);
    }

    #[test]
    fn random_tokens_never_panic(words in proptest::collection::vec(
        prop_oneof![
            Just("resource"), Just("on"), Just("{"), Just("}"), Just(";"), Just("device"),
            Just("disk"), Just("address"), Just("10.0.0.1:7000"), Just("net"), Just("protocol"),
            Just("C"), Just("volume"), Just("0"), Just("connection"), Just("host"), Just("path"),
            Just("node-id"), Just("alpha"), Just("beta"), Just("/dev/drbd1"), Just("minor"),
            Just("meta-disk"), Just("internal"), Just("common"), Just("global"), Just("skip"),
            Just("connection-mesh"), Just("hosts"), Just("floating"), Just("ipv6"), Just("[::1]"),
            Just("syncer"), Just("options"), Just("\""), Just("#"), Just("\n"), Just("stacked-on-top-of"),
        ], 0..120)) {
        check(words.join(" ").as_bytes());
    }

    #[test]
    fn mutated_corpus_never_panics(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let texts = corpus_texts();
        let mut t = texts[which.index(texts.len())].clone();
        for (at, byte, op) in edits {
            let i = if t.is_empty() { 0 } else { at.index(t.len()) };
            match op {
                0 if !t.is_empty() => { t.remove(i); }
                1 => t.insert(i, byte),
                _ => t.truncate(i),
            }
        }
        check(&t);
    }
}

#[test]
fn nesting_and_long_input_do_not_overflow() {
    check(
        &b"skip "
            .iter()
            .chain(b"{".repeat(100_000).iter())
            .copied()
            .collect::<Vec<_>>(),
    );
    check(&b"resource r { ".repeat(10_000));
    check(&b"\"".repeat(100_000));
    check(&b"a".repeat(100_000));
}
