//! The harness itself: the kernel boots, sees an attached disk by its serial,
//! runs the script, and its exit status and `/out` come back to the host.

use std::time::Duration;
use vmtest::{Guest, Vm};

#[test]
fn guest_runs_script_reads_disk_and_returns_output() {
    let vm = Vm::locate().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.img");
    let mut data = b"tandem-disk-marker".to_vec();
    data.resize(1 << 20, 0);
    std::fs::write(&img, &data).unwrap();

    let script = r#"
set -e
head -c 18 /dev/disk/by-serial/input > /out/marker
uname -r > /out/release
grep -q ocfs2 /proc/filesystems && echo yes > /out/ocfs2
exit 7
"#;
    let guest = Guest::new(script)
        .disk(&img, "input")
        .timeout(Duration::from_secs(60));
    let outcome = vm.run(&guest).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "VM run took {:?}; console:\n{}",
        outcome.elapsed, outcome.console
    );
    assert_eq!(outcome.exit, 7, "console:\n{}", outcome.console);
    let read = |n: &str| std::fs::read_to_string(outcome.out_file(n)).unwrap_or_default();
    assert_eq!(
        read("marker"),
        "tandem-disk-marker",
        "console:\n{}",
        outcome.console
    );
    assert!(
        read("release").starts_with("6.1."),
        "console:\n{}",
        outcome.console
    );
    assert_eq!(read("ocfs2"), "yes\n", "console:\n{}", outcome.console);
}
