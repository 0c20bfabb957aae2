//! `tandem nbd export`: a replicated resource served over NBD by the node
//! daemon, judged by real NBD clients in the lab. `qemu-io` writes patterns
//! through the export of the Primary and reads them back; `nbdcopy` copies the
//! export out and its bytes equal what was written; the writes reached the
//! Secondary's backing disk (protocol C); the Secondary's export refuses I/O,
//! as `/dev/drbdN` does there.

use std::os::unix::fs::FileExt;

mod common;

use common::TestLab;

const MIB: u64 = 1 << 20;

#[test]
fn nbd_export_of_the_primary_replicates_and_the_secondary_refuses() {
    let lab = TestLab::up("nbd", 2);
    lab.bring_up_r0();

    let out = lab.ok("nodo1", "tandem nbd export r0");
    assert!(
        out.contains("exported over NBD on 127.0.0.11:10809"),
        "{out}"
    );
    let url = "nbd://127.0.0.11:10809/r0";

    // Patterns written through the export, FUA and flush included.
    let io = lab.ok(
        "nodo1",
        &format!(
            "qemu-io -f raw {url} -c 'write -P 0xa5 1M 1M' -c 'write -f -P 0x5a 3M 64k' \
             -c 'flush' -c 'read -P 0xa5 1M 1M' -c 'read -P 0x5a 3M 64k' 2>&1"
        ),
    );
    assert!(
        io.matches("wrote ").count() == 2
            && io.matches("read ").count() == 2
            && !io.contains("failed")
            && !io.contains("invalid"),
        "qemu-io through the export:\n{io}"
    );
    // nbdcopy reads the export back: the bytes are what was written.
    let copy = lab.dir.join("copy.img");
    lab.ok("nodo1", &format!("nbdcopy {url} {}", copy.display()));
    let copy = std::fs::File::open(&copy).unwrap();
    let region = |f: &std::fs::File, at: u64, len: u64| {
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, at).unwrap();
        buf
    };
    assert!(region(&copy, MIB, MIB).iter().all(|&b| b == 0xa5));
    assert!(region(&copy, 3 * MIB, 64 << 10).iter().all(|&b| b == 0x5a));

    // Protocol C: the Secondary's backing disk has them too (data starts at
    // byte 0 with internal meta-data).
    let peer = std::fs::File::open(lab.image("nodo2", "sdc")).unwrap();
    assert!(region(&peer, MIB, MIB).iter().all(|&b| b == 0xa5));
    assert!(region(&peer, 3 * MIB, 64 << 10).iter().all(|&b| b == 0x5a));

    // The Secondary's export refuses I/O, like its /dev/drbd1.
    lab.ok("nodo2", "tandem nbd export r0");
    let refused = lab.sh(
        "nodo2",
        "qemu-io -f raw -r nbd://127.0.0.12:10809/r0 -c 'read 0 4k' 2>&1",
    );
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        text.contains("read failed"),
        "a read on the Secondary's export was not refused: {text}"
    );

    // Unexported, nobody answers; down works with an export left on.
    lab.ok("nodo1", "tandem nbd unexport r0");
    let gone = lab.sh(
        "nodo1",
        &format!("qemu-io -f raw -r {url} -c 'read 0 4k' 2>&1"),
    );
    assert!(
        !gone.status.success()
            || String::from_utf8_lossy(&gone.stdout).contains("Connection refused")
    );
    lab.ok("nodo2", "drbdadm down r0");
    lab.ok("nodo1", "drbdadm down r0");
}
