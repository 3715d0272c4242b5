//! Layer application (berth_snapshot::apply) into a scratch folder: whatever the tar stream
//! (plain, gzip or zstd), apply returns, and nothing appears outside the target folder — the
//! folders beside it stay as they were (`outside/` empty, `lower/`'s file unchanged and not
//! hard-linked from the target).
//!
//! The first byte picks the whiteout mode and whether the layer below is given; the rest is
//! the layer. The scratch folder is `$BERTH_FUZZ_SCRATCH` (default /dev/shm, else the temp
//! folder) / `berth-fuzz-layer-PID`.
#![no_main]

use berth_core::config::Limits;
use berth_snapshot::apply::{apply, Lowers, Target, Whiteouts};
use libfuzzer_sys::fuzz_target;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const LOWER_FILE: &[u8] = b"a file of the layer below\n";

struct Scratch {
    dir: PathBuf,
    root: PathBuf,
    outside: PathBuf,
    lower: PathBuf,
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let base = std::env::var_os("BERTH_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let shm = Path::new("/dev/shm");
                if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                }
            });
        let dir = base.join(format!("berth-fuzz-layer-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = Scratch {
            root: dir.join("root"),
            outside: dir.join("outside"),
            lower: dir.join("lower"),
            dir,
        };
        fs::create_dir_all(&s.outside).unwrap();
        fs::create_dir_all(s.lower.join("etc")).unwrap();
        fs::write(s.lower.join("etc/passwd"), LOWER_FILE).unwrap();
        fs::set_permissions(
            s.lower.join("etc/passwd"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        s
    })
}

/// Removes a folder the layer made, also when it made folders without write permission.
fn remove_all(p: &Path) {
    if fs::remove_dir_all(p).is_ok() || !p.exists() {
        return;
    }
    fn open_up(p: &Path) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.is_dir() {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(p);
    fs::remove_dir_all(p).unwrap_or_else(|e| panic!("cannot clean {}: {e}", p.display()));
}

fn check_outside(s: &Scratch) {
    let mut names: Vec<String> = fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lower", "outside", "root"],
        "something appeared beside the target"
    );
    let outside: Vec<_> = fs::read_dir(&s.outside).unwrap().collect();
    assert!(
        outside.is_empty(),
        "written outside the target: {outside:?}"
    );
    let lower: Vec<String> = fs::read_dir(&s.lower)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(lower, ["etc"], "the layer below changed");
    let f = s.lower.join("etc/passwd");
    assert_eq!(
        fs::read(&f).unwrap(),
        LOWER_FILE,
        "the layer below's file changed"
    );
    let m = fs::symlink_metadata(&f).unwrap();
    assert_eq!(m.nlink(), 1, "the layer below's file was hard-linked");
    assert_eq!(
        m.mode() & 0o7777,
        0o644,
        "the layer below's file mode changed"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, layer)) = data.split_first() else {
        return;
    };
    let s = scratch();
    remove_all(&s.root);
    fs::create_dir(&s.root).unwrap();
    let lowers = [s.lower.clone()];
    let target = Target {
        root: &s.root,
        lowers: Lowers::Ready(if mode & 2 != 0 { &lowers } else { &[] }),
        whiteouts: if mode & 1 != 0 {
            Whiteouts::Overlay
        } else {
            Whiteouts::Delete
        },
    };
    let limits = Limits {
        max_unpacked_size: 4 << 20,
        max_entries: 4096,
        ..Limits::default()
    };
    let _ = apply(layer, "", None, &target, &limits);
    check_outside(s);
});
