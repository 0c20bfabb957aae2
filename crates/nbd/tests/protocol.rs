//! The connection state machine driven byte by byte: negotiation replies,
//! transmission replies, errors, and property tests that no input panics and
//! that how the input is split into reads changes nothing.

use std::sync::Arc;

use blockdev::{BlockDevice, FaultyDevice, MemoryDevice};
use nbd::conn::{decode_info_request, decode_request_header};
use nbd::proto::*;
use nbd::{execute, Command, Connection, ExportInfo, ProtocolError};
use proptest::prelude::*;

fn exports() -> Arc<[ExportInfo]> {
    vec![
        ExportInfo {
            name: "disk".into(),
            description: "a test disk".into(),
            size: 1 << 20,
            read_only: false,
        },
        ExportInfo {
            name: "ro".into(),
            description: String::new(),
            size: 4096,
            read_only: true,
        },
    ]
    .into()
}

fn option(code: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn info_request(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

fn request(flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Option replies parsed from the server's output: (option, type, data).
fn option_replies(mut out: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut v = Vec::new();
    while !out.is_empty() {
        assert_eq!(
            u64::from_be_bytes(out[..8].try_into().unwrap()),
            OPT_REPLY_MAGIC
        );
        let opt = u32::from_be_bytes(out[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(out[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize;
        v.push((opt, kind, out[20..20 + len].to_vec()));
        out = &out[20 + len..];
    }
    v
}

/// Drives a connection with a memory device until it needs input.
fn drive(conn: &mut Connection, dev: &dyn BlockDevice) -> Result<(), ProtocolError> {
    let mut buf = Vec::new();
    while let Some(req) = conn.poll()? {
        let r = execute(dev, &req.command, &mut buf);
        conn.complete(r.map(|()| buf.as_slice()));
    }
    Ok(())
}

fn greeted() -> Connection {
    let mut c = Connection::new(exports());
    let hello = c.take_output();
    assert_eq!(&hello[..8], b"NBDMAGIC");
    assert_eq!(&hello[8..16], b"IHAVEOPT");
    assert_eq!(hello[16..18], [0, 3]);
    c.receive(&(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES).to_be_bytes());
    c
}

#[test]
fn list_info_go_and_transmission() {
    let dev = MemoryDevice::new(1 << 20);
    let mut c = greeted();
    c.receive(&option(OPT_LIST, &[]));
    c.receive(&option(OPT_INFO, &info_request("nope", &[])));
    c.receive(&option(OPT_STRUCTURED_REPLY, &[]));
    c.receive(&option(
        OPT_INFO,
        &info_request("disk", &[INFO_NAME, INFO_BLOCK_SIZE, INFO_DESCRIPTION]),
    ));
    c.receive(&option(OPT_GO, &info_request("disk", &[])));
    drive(&mut c, &dev).unwrap();
    let replies = option_replies(&c.take_output());
    let kinds: Vec<(u32, u32)> = replies.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        kinds,
        [
            (OPT_LIST, REP_SERVER),
            (OPT_LIST, REP_SERVER),
            (OPT_LIST, REP_ACK),
            (OPT_INFO, REP_ERR_UNKNOWN),
            (OPT_STRUCTURED_REPLY, REP_ERR_UNSUP),
            (OPT_INFO, REP_INFO),
            (OPT_INFO, REP_INFO),
            (OPT_INFO, REP_INFO),
            (OPT_INFO, REP_INFO),
            (OPT_INFO, REP_ACK),
            (OPT_GO, REP_INFO),
            (OPT_GO, REP_ACK),
        ]
    );
    assert_eq!(replies[0].2, b"\0\0\0\x04diska test disk");
    // INFO_EXPORT: type, size, flags (has flags, flush, fua, trim, write zeroes, multi-conn).
    assert_eq!(replies[5].2[..10], [0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]);
    assert_eq!(
        u16::from_be_bytes([replies[5].2[10], replies[5].2[11]]),
        0x16d
    );
    assert_eq!(replies[6].2, b"\0\x01disk");
    assert_eq!(replies[7].2[..2], [0, 3]);
    assert_eq!(c.export(), Some(0));

    // Transmission: write with FUA, read it back, flush, trim, an
    // out-of-range read, an unknown command, then disconnect.
    let mut w = request(CMD_FLAG_FUA, CMD_WRITE, 7, 4096, 4);
    w.extend_from_slice(b"abcd");
    c.receive(&w);
    c.receive(&request(0, CMD_READ, 8, 4094, 8));
    c.receive(&request(0, CMD_FLUSH, 9, 0, 0));
    c.receive(&request(0, CMD_TRIM, 10, 4096, 2));
    c.receive(&request(0, CMD_READ, 11, (1 << 20) - 2, 4));
    c.receive(&request(0, 99, 12, 0, 0));
    c.receive(&request(0, CMD_READ, 13, 4094, 8));
    c.receive(&request(0, CMD_DISC, 14, 0, 0));
    drive(&mut c, &dev).unwrap();
    let out = c.take_output();
    let reply = |error: u32, cookie: u64| {
        let mut v = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&error.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v
    };
    let mut want = reply(0, 7);
    want.extend(reply(0, 8));
    want.extend_from_slice(b"\0\0abcd\0\0");
    want.extend(reply(0, 9));
    want.extend(reply(0, 10));
    want.extend(reply(EINVAL, 11));
    want.extend(reply(EINVAL, 12));
    want.extend(reply(0, 13));
    want.extend_from_slice(b"\0\0\0\0cd\0\0");
    assert_eq!(out, want);
    assert!(c.is_closed());
}

#[test]
fn export_name_and_read_only() {
    let dev = MemoryDevice::new(4096);
    let mut c = Connection::new(exports());
    c.take_output();
    c.receive(&CLIENT_FIXED_NEWSTYLE.to_be_bytes());
    c.receive(&option(OPT_EXPORT_NAME, b"ro"));
    drive(&mut c, &dev).unwrap();
    let out = c.take_output();
    assert_eq!(out.len(), 8 + 2 + 124);
    assert_eq!(out[..8], 4096u64.to_be_bytes());
    assert_eq!(out[8..10], 0x010fu16.to_be_bytes());
    let mut w = request(0, CMD_WRITE, 1, 0, 2);
    w.extend_from_slice(b"xy");
    c.receive(&w);
    drive(&mut c, &dev).unwrap();
    assert_eq!(
        u32::from_be_bytes(c.take_output()[4..8].try_into().unwrap()),
        EPERM
    );
}

/// A write with `NBD_CMD_FLAG_FUA` is on stable storage when it is answered,
/// and so is every write answered before an `NBD_CMD_FLUSH`; a plain write
/// may be lost at a crash.
#[test]
fn fua_writes_and_flushed_writes_survive_a_crash() {
    let dev = FaultyDevice::new(MemoryDevice::new(1 << 20));
    let mut c = greeted();
    c.receive(&option(OPT_EXPORT_NAME, b"disk"));
    drive(&mut c, &dev).unwrap();
    c.take_output();
    let write = |c: &mut Connection, flags: u16, cookie: u64, offset: u64, byte: u8| {
        let mut w = request(flags, CMD_WRITE, cookie, offset, 4096);
        w.extend_from_slice(&[byte; 4096]);
        c.receive(&w);
        drive(c, &dev).unwrap();
        let out = c.take_output();
        assert_eq!(out[4..8], [0; 4], "write {cookie} failed");
    };
    let block = |offset: u64| {
        let mut b = vec![0u8; 4096];
        dev.read_at(&mut b, offset).unwrap();
        b[0]
    };

    write(&mut c, 0, 1, 0, 0xaa);
    write(&mut c, CMD_FLAG_FUA, 2, 4096, 0xbb);
    dev.crash().unwrap();
    assert_eq!((block(0), block(4096)), (0, 0xbb));

    write(&mut c, 0, 3, 8192, 0xcc);
    c.receive(&request(0, CMD_FLUSH, 4, 0, 0));
    drive(&mut c, &dev).unwrap();
    assert_eq!(c.take_output()[4..8], [0; 4]);
    dev.crash().unwrap();
    assert_eq!(block(8192), 0xcc);
}

#[test]
fn bad_clients_get_errors_not_panics() {
    let mut c = Connection::new(exports());
    c.receive(&[0, 0, 0, 0]);
    assert_eq!(c.poll(), Err(ProtocolError::ClientFlags(0)));
    assert!(c.is_closed());

    let mut c = greeted();
    c.receive(&option(OPT_EXPORT_NAME, b"missing"));
    assert_eq!(
        c.poll(),
        Err(ProtocolError::UnknownExport("missing".into()))
    );

    let mut c = greeted();
    c.receive(b"GARBAGE!GARBAGE!");
    assert!(matches!(c.poll(), Err(ProtocolError::OptionMagic(_))));

    let mut c = greeted();
    c.receive(&option(OPT_LIST, &[])[..12]);
    c.receive(&u32::MAX.to_be_bytes());
    assert!(matches!(c.poll(), Err(ProtocolError::OptionTooLong { .. })));

    let mut c = greeted();
    c.receive(&option(OPT_ABORT, &[]));
    assert_eq!(c.poll(), Err(ProtocolError::Aborted));
    assert_eq!(
        option_replies(&c.take_output()),
        [(OPT_ABORT, REP_ACK, vec![])]
    );

    let mut c = greeted();
    c.receive(&option(OPT_GO, &[0, 0, 0, 9, b'x']));
    c.receive(&option(OPT_LIST, b"x"));
    assert_eq!(c.poll(), Ok(None));
    let kinds: Vec<u32> = option_replies(&c.take_output())
        .iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(kinds, [REP_ERR_INVALID, REP_ERR_INVALID]);

    let mut c = greeted();
    c.receive(&option(OPT_GO, &info_request("disk", &[])));
    assert_eq!(c.poll(), Ok(None));
    c.receive(&request(0, CMD_WRITE, 1, 0, u32::MAX));
    assert_eq!(c.poll(), Err(ProtocolError::PayloadTooLong(u32::MAX)));
    let mut c = greeted();
    c.receive(&option(OPT_GO, &info_request("disk", &[])));
    c.receive(&[0x25, 0x60, 0x95, 0x14]);
    c.receive(&[0; 24]);
    assert!(matches!(c.poll(), Err(ProtocolError::RequestMagic(_))));
}

/// A plausible client session: options then requests, as bytes.
fn session() -> impl Strategy<Value = Vec<u8>> {
    let opt = prop_oneof![
        Just(option(OPT_LIST, &[])),
        Just(option(OPT_INFO, &info_request("disk", &[INFO_BLOCK_SIZE]))),
        Just(option(OPT_INFO, &info_request("other", &[]))),
        Just(option(OPT_STRUCTURED_REPLY, &[])),
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(o, d)| option(o % 12, &d)),
    ];
    let req =
        prop_oneof![
            (0..(1u64 << 20) + 10, 0..5000u32).prop_map(|(o, l)| request(0, CMD_READ, 1, o, l)),
            (
                0..(1u64 << 20) + 10,
                prop::collection::vec(any::<u8>(), 0..3000),
                any::<bool>()
            )
                .prop_map(|(o, d, fua)| {
                    let mut r = request(
                        if fua { CMD_FLAG_FUA } else { 0 },
                        CMD_WRITE,
                        2,
                        o,
                        d.len() as u32,
                    );
                    r.extend_from_slice(&d);
                    r
                }),
            (0..(1u64 << 20), 0..70000u32).prop_map(|(o, l)| request(0, CMD_TRIM, 3, o, l)),
            Just(request(0, CMD_FLUSH, 4, 0, 0)),
            (any::<u16>(), any::<u16>(), any::<u64>(), any::<u32>())
                .prop_map(|(f, k, o, l)| request(f, k % 10, 5, o, l % 100_000)),
        ];
    (
        prop::collection::vec(opt, 0..5),
        prop::collection::vec(req, 0..20),
    )
        .prop_map(|(opts, reqs)| {
            let mut v = (CLIENT_FIXED_NEWSTYLE).to_be_bytes().to_vec();
            for o in opts {
                v.extend(o);
            }
            v.extend(option(OPT_GO, &info_request("disk", &[])));
            for r in reqs {
                v.extend(r);
            }
            v
        })
}

/// Runs `input` split at `cuts`; returns (output, error if any).
fn run(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<ProtocolError>) {
    let dev = MemoryDevice::new(1 << 20);
    let mut c = Connection::new(exports());
    let mut out = c.take_output();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    for w in points.windows(2) {
        c.receive(&input[w[0]..w[1]]);
        let r = drive(&mut c, &dev);
        out.extend(c.take_output());
        if let Err(e) = r {
            return (out, Some(e));
        }
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..400), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let (_, _) = run(&input, &cuts);
        // Random bytes after a valid handshake too.
        let mut v = CLIENT_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        v.extend(option(OPT_GO, &info_request("disk", &[])));
        v.extend(&input);
        let _ = run(&v, &cuts);
    }

    #[test]
    fn splitting_the_input_changes_nothing(input in session(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let whole = run(&input, &[]);
        let split = run(&input, &cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn mutated_sessions_never_panic(input in session(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut input = input;
        for (at, x) in flips {
            let n = input.len();
            input[at % n] ^= x;
        }
        let _ = run(&input, &[]);
    }

    #[test]
    fn decoders_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_info_request(&data);
        let _ = decode_request_header(&data);
    }
}

#[test]
fn execute_maps_device_errors() {
    let dev = blockdev::FaultyDevice::new(MemoryDevice::new(8192));
    dev.fail(blockdev::IoKind::Read, 0..1);
    let mut buf = Vec::new();
    assert_eq!(
        execute(&dev, &Command::Read { offset: 0, len: 10 }, &mut buf),
        Err(EIO)
    );
    assert_eq!(
        execute(
            &dev,
            &Command::Read {
                offset: 10,
                len: 10
            },
            &mut buf
        ),
        Ok(())
    );
    assert_eq!(buf.len(), 10);
}
