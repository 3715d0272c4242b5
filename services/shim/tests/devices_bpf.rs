//! The cgroup v2 device program against the real kernel (needs root and a cgroup2 mount: on a
//! hybrid host `/sys/fs/cgroup/unified`, on a pure v2 host `/sys/fs/cgroup`; on a v1 host the
//! tests mount one). Without root they are skipped (failing under CI).

mod common;
use berth_shim::devices_bpf::{self, compile, DevicePolicy, Insn, PROG_NAME, R0};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The cgroup2 mount, or `None` (after a SKIP) when the test cannot run.
fn cgroup2() -> Option<PathBuf> {
    if !is_root() {
        common::skip("needs root");
        return None;
    }
    common::cgroup2()
}

/// Docker's default `linux.resources.devices`.
fn docker_default() -> Vec<LinuxDeviceCgroup> {
    let rule = |allow: bool, typ: Option<LinuxDeviceType>, major: Option<i64>, minor, access| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    };
    use LinuxDeviceType::{B, C};
    let mut v = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some(C), None, None, "m"),
        rule(true, Some(B), None, None, "m"),
    ];
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
        (10, Some(200)),
    ] {
        v.push(rule(true, Some(C), Some(major), minor, "rwm"));
    }
    v
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A cgroup made for one test under the cgroup2 mount; removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(mount: &Path) -> TestCgroup {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = mount.join(format!("berth-devtest-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            match std::fs::remove_dir(&self.0) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("warning: could not remove {}", self.0.display());
    }
}

#[test]
fn kernel_loads_the_programs() {
    if cgroup2().is_none() {
        return;
    }
    let docker = DevicePolicy::from_oci(&docker_default()).unwrap();
    for p in [
        docker,
        DevicePolicy::deny_all(),
        DevicePolicy::allow_all(),
        DevicePolicy::from_oci(&[
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::B)
                .major(8i64)
                .minor(0i64)
                .access("w")
                .build()
                .unwrap(),
        ])
        .unwrap(),
    ] {
        if let Err(e) = devices_bpf::load(&compile(&p)) {
            panic!("the verifier refused the program for {p:?}: {e}");
        }
    }
}

#[test]
fn verifier_log_is_in_the_error() {
    if cgroup2().is_none() {
        return;
    }
    // Returns a register that was never written.
    let bad = [Insn::mov32_reg(R0, 6), Insn::exit()];
    let e = devices_bpf::load(&bad).unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("BPF_PROG_LOAD of the device program"), "{e}");
    assert!(e.contains("verifier log: "), "{e}");
    assert!(e.contains("R6 !read_ok"), "{e}");
    assert!(!e.contains('\n'), "the error must be one line: {e}");
}

#[test]
fn attach_replaces_berths_previous_program() {
    let Some(mount) = cgroup2() else { return };
    let cg = TestCgroup::new(&mount);
    let policy = DevicePolicy::from_oci(&docker_default()).unwrap();
    devices_bpf::apply(&cg.0, &policy).unwrap();
    let first = devices_bpf::attached_programs(&cg.0).unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].name, PROG_NAME);
    // A second shim for the same cgroup: still one program of ours, a new one.
    devices_bpf::apply(&cg.0, &DevicePolicy::deny_all()).unwrap();
    let second = devices_bpf::attached_programs(&cg.0).unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0].name, PROG_NAME);
    assert_ne!(second[0].id, first[0].id);
}

/// A block device of this host: (major, minor, /dev node if there is one).
fn host_block_device() -> (u32, u32, Option<PathBuf>) {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/dev/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((ma, mi)) = name.split_once(':') else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse::<u32>(), mi.parse::<u32>()) else {
            continue;
        };
        let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        let node = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map(|n| Path::new("/dev").join(n))
            .filter(|p| p.exists());
        // A real disk rather than a loop (7) or ram (1) device.
        let disk = uevent.contains("DEVTYPE=disk") && ma != 7 && ma != 1;
        found.push((node.is_some(), disk, ma, mi, node));
    }
    // Prefer a disk with a node in /dev.
    found.sort_by_key(|(node, disk, ma, mi, _)| (!*node, !*disk, *ma, *mi));
    match found.into_iter().next() {
        Some((_, _, ma, mi, node)) => (ma, mi, node),
        None => (8, 0, None),
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// What the child checks, in order; the child reports 0 or the errno of each.
const STEPS: [&str; 13] = [
    "unshare a mount namespace",
    "make / private",
    "mount a tmpfs on the temp folder",
    "open /dev/null O_RDWR and write",
    "open /dev/zero and read",
    "mknod c 1:3",
    "open the c 1:3 node O_RDWR and write",
    "mknod the block device",
    "open the block device node",
    "open /dev/kmsg (c 1:11)",
    "mknod c 1:1 (mem)",
    "open the c 1:1 node",
    "open /dev/full O_WRONLY",
];

#[test]
fn docker_default_rules_hold_for_a_process_in_the_cgroup() {
    let Some(mount) = cgroup2() else { return };
    let (bmaj, bmin, bnode) = host_block_device();
    println!(
        "cgroup2 at {}; block device {bmaj}:{bmin} ({:?})",
        mount.display(),
        bnode
    );
    // Controls: outside the cgroup the same devices open, so an EPERM below comes from the
    // program and not from the device itself.
    if let Some(node) = &bnode {
        std::fs::File::open(node).unwrap_or_else(|e| panic!("control: open {node:?}: {e}"));
    }
    std::fs::File::open("/dev/kmsg").unwrap_or_else(|e| panic!("control: open /dev/kmsg: {e}"));

    // The control: a program that allows everything. The block device and /dev/kmsg open,
    // and c 1:1 gives whatever the driver says (ENXIO without CONFIG_DEVMEM), not EPERM.
    let open = TestCgroup::new(&mount);
    devices_bpf::apply(&open.0, &DevicePolicy::allow_all()).unwrap();
    let results = probe_in_cgroup(&open.0, bmaj, bmin);
    println!("allow-all program:\n{}", describe(&results));
    assert_eq!(&results[..8], &[0; 8], "\n{}", describe(&results));
    assert_eq!(
        results[8],
        0,
        "block device, allow-all:\n{}",
        describe(&results)
    );
    assert_eq!(
        results[9],
        0,
        "/dev/kmsg, allow-all:\n{}",
        describe(&results)
    );
    assert_ne!(
        results[11],
        libc::EPERM,
        "c 1:1, allow-all:\n{}",
        describe(&results)
    );
    drop(open);

    let cg = TestCgroup::new(&mount);
    let policy = DevicePolicy::from_oci(&docker_default()).unwrap();
    devices_bpf::apply(&cg.0, &policy).unwrap();
    let results = probe_in_cgroup(&cg.0, bmaj, bmin);
    println!("Docker's default rules:\n{}", describe(&results));
    let eperm = libc::EPERM;
    let want = [0, 0, 0, 0, 0, 0, 0, 0, eperm, eperm, 0, eperm, 0];
    assert_eq!(results, want, "\n{}", describe(&results));
}

fn describe(results: &[i32; STEPS.len()]) -> String {
    STEPS
        .iter()
        .zip(results)
        .map(|(s, r)| {
            let what = if *r == 0 {
                "ok".to_string()
            } else {
                std::io::Error::from_raw_os_error(*r).to_string()
            };
            format!("  {s}: {what}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Forks a child, moves it into the cgroup `cg` and runs [`STEPS`] in it; 0 or the errno of
/// each step.
fn probe_in_cgroup(cg: &Path, bmaj: u32, bmin: u32) -> [i32; STEPS.len()] {
    let tmp = tempfile::Builder::new()
        .prefix("berth-devtest")
        .tempdir()
        .unwrap();
    // Everything the child uses is prepared here: after fork in this multi-threaded test
    // process the child only makes system calls (no allocation).
    let dir = cstr(tmp.path());
    let null_node = cstr(&tmp.path().join("null"));
    let blk_node = cstr(&tmp.path().join("blk"));
    let mem_node = cstr(&tmp.path().join("mem"));
    let root = c"/";
    let tmpfs = c"tmpfs";
    let dev_null = c"/dev/null";
    let dev_zero = c"/dev/zero";
    let dev_kmsg = c"/dev/kmsg";
    let dev_full = c"/dev/full";
    let blk_dev = libc::makedev(bmaj, bmin);

    let mut go = [0i32; 2];
    let mut report = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the arrays.
    unsafe {
        assert_eq!(libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert_eq!(libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC), 0);
    }

    // SAFETY: the child only calls async-signal-safe functions on memory prepared before the
    // fork, then _exit()s; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: raw system calls on descriptors and C strings that live in this process.
        unsafe {
            let mut results = [-1i32; STEPS.len()];
            let errno = || *libc::__errno_location();
            // Our copies of the parent's ends, so that a parent that closes without writing
            // releases us too.
            libc::close(go[1]);
            libc::close(report[0]);
            let mut b = [0u8; 1];
            libc::read(go[0], b.as_mut_ptr().cast(), 1);
            // Each step: 0 or errno.
            let check_open = |path: *const libc::c_char, flags: i32, io: i32| -> i32 {
                let fd = libc::open(path, flags | libc::O_CLOEXEC);
                if fd < 0 {
                    return errno();
                }
                let mut byte = [b'x'; 1];
                let r = match io {
                    1 => libc::read(fd, byte.as_mut_ptr().cast(), 1),
                    2 => libc::write(fd, byte.as_ptr().cast(), 1),
                    _ => 1,
                };
                let rc = if r == 1 { 0 } else { errno() };
                libc::close(fd);
                rc
            };
            let step = |r: i32| if r == 0 { 0 } else { errno() };
            results[0] = step(libc::unshare(libc::CLONE_NEWNS));
            results[1] = step(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ));
            // A fresh tmpfs without nodev: the temp folder's own mount may have nodev.
            results[2] = step(libc::mount(
                tmpfs.as_ptr(),
                dir.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ));
            if results[..3].iter().all(|r| *r == 0) {
                results[3] = check_open(dev_null.as_ptr(), libc::O_RDWR, 2);
                results[4] = check_open(dev_zero.as_ptr(), libc::O_RDONLY, 1);
                results[5] = step(libc::mknod(
                    null_node.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(1, 3),
                ));
                results[6] = check_open(null_node.as_ptr(), libc::O_RDWR, 2);
                results[7] = step(libc::mknod(
                    blk_node.as_ptr(),
                    libc::S_IFBLK | 0o600,
                    blk_dev,
                ));
                results[8] = check_open(blk_node.as_ptr(), libc::O_RDONLY, 0);
                results[9] = check_open(dev_kmsg.as_ptr(), libc::O_RDONLY, 0);
                results[10] = step(libc::mknod(
                    mem_node.as_ptr(),
                    libc::S_IFCHR | 0o600,
                    libc::makedev(1, 1),
                ));
                results[11] = check_open(mem_node.as_ptr(), libc::O_RDONLY, 0);
                results[12] = check_open(dev_full.as_ptr(), libc::O_WRONLY, 0);
            }
            libc::write(
                report[1],
                results.as_ptr().cast(),
                std::mem::size_of_val(&results),
            );
            libc::_exit(0);
        }
    }
    // SAFETY: closing the child's ends in the parent.
    unsafe {
        libc::close(go[0]);
        libc::close(report[1]);
    }
    let moved = std::fs::write(cg.join("cgroup.procs"), pid.to_string());
    // Release the child either way (closing the pipe without a byte also releases it).
    // SAFETY: write of one byte from a local buffer, then close of our own descriptor.
    unsafe {
        if moved.is_ok() {
            libc::write(go[1], b"g".as_ptr().cast(), 1);
        }
        libc::close(go[1]);
    }
    let mut results = [0i32; STEPS.len()];
    // SAFETY: read into a local buffer of the size given.
    let n = unsafe {
        libc::read(
            report[0],
            results.as_mut_ptr().cast(),
            std::mem::size_of_val(&results),
        )
    };
    let mut status = 0;
    // SAFETY: waiting for our own child, status into a local.
    unsafe {
        libc::close(report[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    moved.unwrap_or_else(|e| panic!("move {pid} into {}: {e}", cg.display()));
    assert_eq!(n as usize, std::mem::size_of_val(&results), "child report");
    assert_eq!(status, 0, "child exit status");

    results
}
