//! Seccomp: installing the container's syscall filter.
//!
//! The spec's `linux.seccomp` (the OCI profile) is compiled to a classic BPF program by
//! berthd's runtime, once per distinct profile, and written into the bundle as
//! [`FILTER_FILE`] beside `config.json`; the shim only installs it, so it carries no filter
//! compiler (nor libseccomp) and pays nothing per container for the compilation. A spec with
//! `linux.seccomp` and no compiled filter is refused rather than run unfiltered.
//!
//! When the filter is installed ([`Filter::install`]): with `no_new_privs` it is the last step
//! before `execve`, so the shim's own setup never runs under it; without, installing needs
//! `CAP_SYS_ADMIN`, so it goes in just before the process drops its capabilities, and the few
//! calls that follow (setgroups, setresuid, capset, chdir, prctl, the sync messages, execve)
//! must be allowed by the profile — Docker's default and berth's allow them.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::{LinuxSeccompFilterFlag, Spec};
use std::path::Path;

/// The compiled filter in a bundle: `struct sock_filter` entries, native byte order.
pub const FILTER_FILE: &str = "seccomp.bpf";

/// The kernel's limit on a classic BPF program's length.
const BPF_MAXINSNS: usize = 4096;

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl Filter {
    /// The bundle's filter when the spec asks for one (None when it has no `linux.seccomp`).
    pub fn load(bundle: &Path, spec: &Spec) -> Result<Option<Filter>> {
        let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        let path = bundle.join(FILTER_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Invalid(format!(
                    "config.json sets linux.seccomp but the bundle has no compiled filter \
                     ({}): berth-shim installs filters that berthd's runtime compiled",
                    path.display()
                )))
            }
            Err(e) => return Err(e).ctx(|| format!("read {}", path.display())),
        };
        let mut flags: libc::c_ulong = 0;
        for f in profile.flags().as_deref().unwrap_or(&[]) {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                // TSYNC: the process is single-threaded when it installs the filter.
                _ => 0,
            };
        }
        Filter::from_bytes(&bytes, flags).map(Some)
    }

    /// A filter from its bytes (a whole number of `sock_filter` entries, at most 4096).
    pub fn from_bytes(bytes: &[u8], flags: libc::c_ulong) -> Result<Filter> {
        const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
        if bytes.is_empty()
            || !bytes.len().is_multiple_of(SIZE)
            || bytes.len() / SIZE > BPF_MAXINSNS
        {
            return Err(Error::Invalid(format!(
                "{FILTER_FILE} is not a seccomp BPF program ({} bytes)",
                bytes.len()
            )));
        }
        let program = bytes
            .chunks_exact(SIZE)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Filter { program, flags })
    }

    /// Installs the filter on the calling thread (and what it executes).
    pub fn install(&self) -> Result<()> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.program`, alive for the call; the kernel copies it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(Error::io(
                "install the seccomp filter",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_whole_programs() {
        assert!(Filter::from_bytes(&[], 0).is_err());
        assert!(Filter::from_bytes(&[0; 12], 0).is_err());
        assert!(Filter::from_bytes(&vec![0; 8 * 4097], 0).is_err());
        let f = Filter::from_bytes(&[6, 0, 1, 2, 0, 0, 0xff, 0x7f], 0).unwrap();
        assert_eq!(f.program.len(), 1);
        assert_eq!(
            (f.program[0].code, f.program[0].jt, f.program[0].jf),
            (6, 1, 2)
        );
        assert_eq!(f.program[0].k, 0x7fff_0000);
    }
}
