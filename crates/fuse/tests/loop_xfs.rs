//! The device as the kernel sees it: a loop device with direct I/O and 4 KiB
//! sectors over the FUSE-served file, XFS made and mounted on it and judged by
//! xfs_repair; and the open gate refusing losetup and mount. Every external
//! command runs under `timeout`, and guards undo mounts and loop devices when a
//! test fails.

mod common;

use std::path::Path;
use std::sync::Arc;

use blockdev::{FileDevice, FileDeviceOptions};
use common::{checksum, run, run_ok, LosetupGuard, MountGuard};
use fuse::{DeviceMount, LoopDevice, LoopOptions, OpenGate, ServeOptions};

const SIZE: u64 = 512 << 20;

fn serve(dir: &Path, gate: &OpenGate) -> (DeviceMount, std::path::PathBuf) {
    let backing = dir.join("backing.img");
    let device = FileDevice::create(
        &backing,
        SIZE,
        &FileDeviceOptions {
            direct: true,
            ..FileDeviceOptions::default()
        },
    )
    .unwrap();
    let mnt = dir.join("fuse");
    std::fs::create_dir(&mnt).unwrap();
    let mount = DeviceMount::serve(
        Arc::new(device),
        &mnt,
        gate.clone(),
        &ServeOptions::default(),
    )
    .unwrap();
    (mount, backing)
}

fn sys(lo: &LoopDevice, file: &str) -> String {
    std::fs::read_to_string(format!("/sys/block/loop{}/{file}", lo.number()))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn xfs_on_a_loop_device_over_the_fuse_file() {
    common::require_privileged();
    let dir = tempfile::tempdir().unwrap();
    let gate = OpenGate::new(true);
    let (mount, backing) = serve(dir.path(), &gate);
    let lo = LoopDevice::attach(mount.file(), &LoopOptions::default()).unwrap();
    let dev = lo.path().to_str().unwrap().to_owned();
    assert!(lo.direct_io(), "the loop driver did not take direct I/O");
    assert_eq!(sys(&lo, "queue/logical_block_size"), "4096");
    assert_eq!(sys(&lo, "size"), (SIZE / 512).to_string());

    run_ok("mkfs.xfs", &["-q", "-f", &dev]);
    let xfs = dir.path().join("xfs");
    std::fs::create_dir(&xfs).unwrap();
    {
        let _guard = MountGuard(xfs.clone());
        run_ok("mount", &[&dev, xfs.to_str().unwrap()]);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(xfs.join("hello"), &data).unwrap();
        run_ok("sync", &["-f", xfs.join("hello").to_str().unwrap()]);
        assert!(std::fs::read(xfs.join("hello")).unwrap() == data);
        run_ok("umount", &[xfs.to_str().unwrap()]);
    }
    run_ok("xfs_repair", &["-n", &dev]);
    assert!(lo.detach().unwrap(), "the loop device kept the file open");
    let report = mount.shutdown().unwrap();
    assert!(!report.lazy_unmount && !report.aborted, "{report:?}");

    // The backing file now holds the filesystem, file and all: check it through
    // a second loop device (plain losetup this time), then read the file back.
    let out = run_ok(
        "losetup",
        &[
            "--find",
            "--show",
            "--sector-size",
            "4096",
            backing.to_str().unwrap(),
        ],
    );
    let second = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let _lo_guard = LosetupGuard(second.clone());
    run_ok("xfs_repair", &["-n", &second]);
    let _guard = MountGuard(xfs.clone());
    run_ok("mount", &["-o", "ro", &second, xfs.to_str().unwrap()]);
    assert_eq!(
        std::fs::metadata(xfs.join("hello")).unwrap().len(),
        3_000_000
    );
    run_ok("umount", &[xfs.to_str().unwrap()]);
}

#[test]
fn the_closed_gate_refuses_losetup_and_mount() {
    common::require_privileged();
    let dir = tempfile::tempdir().unwrap();
    let gate = OpenGate::new(true);
    let (mount, backing) = serve(dir.path(), &gate);
    let file = mount.file().to_str().unwrap().to_owned();
    let lo = LoopDevice::attach(mount.file(), &LoopOptions::default()).unwrap();
    let dev = lo.path().to_str().unwrap().to_owned();
    run_ok("mkfs.xfs", &["-q", "-f", &dev]);
    let xfs = dir.path().join("xfs");
    std::fs::create_dir(&xfs).unwrap();
    let _guard = MountGuard(xfs.clone());

    gate.refuse();
    let before = checksum(&backing);

    // A new loop device cannot be attached: opening the file fails.
    let out = run(
        "losetup",
        &[
            "--find",
            "--show",
            "--direct-io=on",
            "--sector-size",
            "4096",
            &file,
        ],
    );
    let attached = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let _lo_guard = (!attached.is_empty()).then(|| LosetupGuard(attached));
    assert!(!out.status.success(), "losetup attached a refused device");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Wrong medium type"),
        "unexpected losetup message: {stderr}"
    );
    let err = LoopDevice::attach(mount.file(), &LoopOptions::default()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMEDIUMTYPE));
    assert_eq!(common::loops_of(mount.file()), std::slice::from_ref(&dev));

    // The loop device attached before cannot be mounted: its reads fail.
    for args in [vec![], vec!["-t", "xfs"]] {
        let mut args = args;
        args.extend([dev.as_str(), xfs.to_str().unwrap()]);
        let out = run("mount", &args);
        assert!(!out.status.success(), "mount succeeded on a refused device");
        assert!(!common::mounted(&xfs));
    }
    assert_eq!(checksum(&backing), before, "the refused device was written");

    // Opened again, the same loop device mounts.
    gate.open();
    run_ok("mount", &[&dev, xfs.to_str().unwrap()]);
    run_ok("umount", &[xfs.to_str().unwrap()]);

    assert!(lo.detach().unwrap());
    let report = mount.shutdown().unwrap();
    assert!(!report.aborted, "{report:?}");
}
