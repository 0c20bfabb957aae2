//! Runs a script in the test VM by hand, for writing and debugging VM tests:
//! `cargo run -p vmtest --example vm-run -- SCRIPT [IMAGE:SERIAL]... [--program PATH]...`
//! prints the console and leaves `/out` in `./vm-out`.

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let script_path = args
        .next()
        .expect("usage: vm-run SCRIPT [IMAGE:SERIAL]... [--program PATH]...");
    let script = std::fs::read_to_string(&script_path).expect("reading the script");
    let mut guest = vmtest::Guest::new(script).timeout(Duration::from_secs(300));
    while let Some(a) = args.next() {
        if a == "--program" {
            guest = guest.host_program(args.next().expect("--program needs a path"));
        } else {
            let (img, serial) = a.rsplit_once(':').expect("disks are IMAGE:SERIAL");
            guest = guest.disk(img, serial);
        }
    }
    let vm = vmtest::Vm::locate().unwrap_or_else(|e| panic!("{e}"));
    let outcome = vm.run(&guest).unwrap_or_else(|e| panic!("{e}"));
    print!("{}", outcome.console);
    let _ = std::fs::remove_dir_all("vm-out");
    std::fs::rename(outcome.out.path(), "vm-out").expect("keeping /out in ./vm-out");
    eprintln!("exit {} after {:?}", outcome.exit, outcome.elapsed);
    std::process::exit(outcome.exit);
}
