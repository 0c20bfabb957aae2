//! Real NBD clients against our server on 127.0.0.1 (port 0: the kernel picks a
//! free one, so parallel runs never collide): qemu-io writes, nbdcopy reads
//! back, nbdinfo lists, and a client that sends garbage is dropped while
//! another keeps working. Every command runs under `timeout`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use blockdev::{BlockDevice, MemoryDevice};
use nbd::proto::*;
use nbd::{Export, NbdServer, ServerOptions};

const SIZE: u64 = 16 << 20;

/// Fails the test unless `tool` is installed: a client test that cannot run
/// must not pass as if it had.
fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed (scripts/install installs it)"
    );
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .args(["--kill-after=5", "60", cmd])
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ {cmd} {}\n  exit {:?}\n  stdout: {}\n  stderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(out.status.success(), "{cmd} {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn server(device: Arc<MemoryDevice>) -> NbdServer {
    let exports = vec![
        Export {
            name: "disk".into(),
            description: "tandem test disk".into(),
            device,
            read_only: false,
        },
        Export {
            name: "small".into(),
            description: String::new(),
            device: Arc::new(MemoryDevice::new(65536)),
            read_only: true,
        },
    ];
    NbdServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        exports,
        ServerOptions::default(),
    )
    .unwrap()
}

#[test]
fn qemu_io_writes_nbdcopy_reads_back_nbdinfo_lists() {
    for tool in ["qemu-io", "nbdcopy", "nbdinfo"] {
        require(tool);
    }
    let device = Arc::new(MemoryDevice::new(SIZE));
    let srv = server(device.clone());
    let port = srv.local_addr().port();
    let uri = format!("nbd://127.0.0.1:{port}/disk");

    run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "write -f -P 0xcd 2M 64k",
            "-c",
            "write -z 3M 1M",
            "-c",
            "discard 4M 64k",
            "-c",
            "flush",
            "-c",
            "read -P 0xab 0 1M",
        ],
    );
    let mut head = vec![0u8; 1 << 20];
    device.read_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0xab));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.img");
    run_ok("nbdcopy", &[&uri, out.to_str().unwrap()]);
    let copy = std::fs::read(&out).unwrap();
    assert_eq!(copy.len() as u64, SIZE);
    assert!(copy == device.to_vec());
    assert!(copy[..1 << 20].iter().all(|&b| b == 0xab));
    assert!(copy[2 << 20..(2 << 20) + 65536].iter().all(|&b| b == 0xcd));
    assert!(copy[1 << 20..2 << 20].iter().all(|&b| b == 0));

    let list = run_ok("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{port}")]);
    assert!(
        list.contains("export=\"disk\"") || list.contains("disk"),
        "{list}"
    );
    assert!(list.contains("tandem test disk"), "{list}");
    assert!(list.contains("small"), "{list}");
    let size = run_ok("nbdinfo", &["--size", &uri]);
    assert_eq!(size.trim(), SIZE.to_string());
    let info = run_ok("nbdinfo", &[&format!("nbd://127.0.0.1:{port}/small")]);
    assert!(info.contains("is_read_only: true"), "{info}");

    // qemu-img reads it too (another client library).
    let converted = dir.path().join("converted.img");
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            converted.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&converted).unwrap() == copy);
    srv.shutdown();
}

/// Negotiates `NBD_OPT_GO` for "disk" by hand and returns the stream.
fn raw_client(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[..8], b"NBDMAGIC");
    let mut msg = (CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&OPT_GO.to_be_bytes());
    msg.extend_from_slice(&10u32.to_be_bytes());
    msg.extend_from_slice(&4u32.to_be_bytes());
    msg.extend_from_slice(b"disk");
    msg.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&msg).unwrap();
    // REP_INFO (20 + 12 bytes), then REP_ACK (20 bytes).
    let mut replies = [0u8; 52];
    s.read_exact(&mut replies).unwrap();
    assert_eq!(
        u32::from_be_bytes(replies[44..48].try_into().unwrap()),
        REP_ACK
    );
    s
}

fn raw_read(s: &mut TcpStream, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut r = REQUEST_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&CMD_READ.to_be_bytes());
    r.extend_from_slice(&cookie.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r.extend_from_slice(&len.to_be_bytes());
    s.write_all(&r).unwrap();
    let mut reply = vec![0u8; 16 + len as usize];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..4], SIMPLE_REPLY_MAGIC.to_be_bytes());
    assert_eq!(reply[4..8], [0; 4]);
    assert_eq!(reply[8..16], cookie.to_be_bytes());
    reply.split_off(16)
}

#[test]
fn a_garbage_client_is_dropped_while_others_are_served() {
    let device = Arc::new(MemoryDevice::new(SIZE));
    device.write_at(b"tandem", 512, false).unwrap();
    let srv = server(device);
    let port = srv.local_addr().port();

    let mut good = raw_client(port);
    assert_eq!(raw_read(&mut good, 1, 512, 6), b"tandem");

    // Garbage during negotiation, then garbage during transmission.
    let mut bad = TcpStream::connect(("127.0.0.1", port)).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = [0u8; 18];
    bad.read_exact(&mut hello).unwrap();
    bad.write_all(&[0xff; 64]).unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        bad.read_to_end(&mut rest).unwrap(),
        0,
        "the server kept a garbage client"
    );

    let mut bad = raw_client(port);
    bad.write_all(b"this is not an NBD request at all").unwrap();
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // The good client is still served, and new ones too.
    assert_eq!(raw_read(&mut good, 2, 512, 6), b"tandem");
    require("qemu-io");
    run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            &format!("nbd://127.0.0.1:{port}/disk"),
            "-c",
            "read 0 4k",
        ],
    );
    assert_eq!(raw_read(&mut good, 3, 510, 4), b"\0\0ta");
    let errors = srv.protocol_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unsupported client flags")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("bad request magic")),
        "{errors:?}"
    );
    drop(good);
    srv.shutdown();
}
