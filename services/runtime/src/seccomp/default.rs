//! berth's default seccomp profile, equivalent to Docker's: calls a process needs to run are
//! allowed, calls that reach beyond the container (kernel keyrings, modules, mounts, new
//! namespaces, clocks, tracing of other processes…) need the capability that governs them, and
//! everything else fails with `EPERM`. Names a kernel or libseccomp does not know are skipped
//! when the profile is compiled, so the lists can name calls of every architecture.

use super::{ArchMap, Arg, Filter, Profile, Rule};

/// Allowed to every container.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    // files and folders
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "flock", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents",
    "getdents64", "lchown", "lchown32", "link", "linkat", "_llseek", "lseek", "lstat", "lstat64",
    "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "openat2", "pread64",
    "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "rename", "renameat", "renameat2", "rmdir", "sendfile", "sendfile64",
    "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "tee", "truncate", "truncate64", "umask", "unlink", "unlinkat",
    "utime", "utimensat", "utimensat_time64", "utimes", "vmsplice", "write", "writev", "pipe",
    "pipe2", "name_to_handle_at", "listmount", "statmount",
    // extended attributes
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "lgetxattr", "listxattr",
    "llistxattr", "lremovexattr", "lsetxattr", "removexattr", "setxattr", "getxattrat",
    "listxattrat", "removexattrat", "setxattrat",
    // file notifications and event descriptors
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "poll", "ppoll", "ppoll_time64",
    "pselect6", "pselect6_time64", "select", "_newselect", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64",
    // asynchronous I/O (not io_uring, whose own surface Docker dropped too)
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup",
    "io_submit", "ioctl", "ioprio_get", "ioprio_set",
    // memory
    "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "mseal",
    "msync",
    "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "remap_file_pages",
    // processes, threads and signals
    "alarm", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "get_robust_list",
    "get_thread_area", "getcpu", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
    "getgid32", "getgroups", "getgroups32", "getitimer", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage",
    "getsid", "gettid", "getuid", "getuid32", "kill", "pause", "pidfd_open", "pidfd_send_signal",
    "prctl", "prlimit64", "process_mrelease", "restart_syscall", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid", "setuid", "setuid32",
    "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill", "ugetrlimit", "vfork", "wait4",
    "waitid", "waitpid",
    // time
    "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "gettimeofday",
    "nanosleep", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "times",
    // System V and POSIX IPC (in the container's IPC namespace)
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt",
    "shmget",
    // sockets
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
    "sendto", "setsockopt", "shutdown", "socket", "socketcall", "socketpair",
    // the rest
    "getrandom", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    "sysinfo", "uname",
];

/// Calls allowed only to a container that holds the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// Personas `personality(2)` may switch to: the default, `ADDR_NO_RANDOMIZE`-free ones Docker
/// lets through (PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26) and the query.
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The `clone` flags that make new namespaces (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET).
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;

fn rule(names: &[&str], action: &str) -> Rule {
    Rule {
        names: names.iter().map(|s| s.to_string()).collect(),
        action: action.to_string(),
        ..Rule::default()
    }
}

fn caps(c: &[&str]) -> Filter {
    Filter {
        caps: c.iter().map(|s| s.to_string()).collect(),
        ..Filter::default()
    }
}

fn arches(a: &[&str]) -> Filter {
    Filter {
        arches: a.iter().map(|s| s.to_string()).collect(),
        ..Filter::default()
    }
}

const ALLOW: &str = "SCMP_ACT_ALLOW";

/// berth's default profile: the always-allowed calls, the argument-filtered ones, the calls of
/// one architecture, the namespace-making ones, then those each capability allows, in that
/// order; everything else fails with `EPERM`.
pub fn default_profile() -> Profile {
    let mut syscalls = always_allowed();
    syscalls.extend(personalities());
    syscalls.extend(arch_specific());
    syscalls.extend(namespace_guards());
    syscalls.extend(capability_gated());
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(libc::EPERM as u32),
        arch_map: arch_map(),
        syscalls,
        ..Profile::default()
    }
}

/// The calls every container may make: [`ALLOWED`], and `ptrace` on kernels where it cannot
/// get around the filter.
fn always_allowed() -> Vec<Rule> {
    vec![
        rule(ALLOWED, ALLOW),
        Rule {
            includes: Filter {
                min_kernel: Some("4.8".into()),
                ..Filter::default()
            },
            // Before 4.8 ptrace could get around the filter.
            ..rule(&["ptrace"], ALLOW)
        },
    ]
}

/// `personality(2)`, allowed for the [`PERSONAS`] only.
fn personalities() -> Vec<Rule> {
    PERSONAS
        .into_iter()
        .map(|p| Rule {
            args: vec![Arg {
                index: 0,
                value: p,
                value_two: 0,
                op: "SCMP_CMP_EQ".into(),
            }],
            ..rule(&["personality"], ALLOW)
        })
        .collect()
}

/// Calls that exist on some architectures only, allowed there.
fn arch_specific() -> Vec<Rule> {
    let on = |a: &[&str], names: &[&str]| Rule {
        includes: arches(a),
        ..rule(names, ALLOW)
    };
    vec![
        on(&["amd64", "x32", "386"], &["arch_prctl", "modify_ldt"]),
        on(
            &["arm", "arm64"],
            &[
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ],
        ),
        on(
            &["s390", "s390x"],
            &[
                "s390_pci_mmio_read",
                "s390_pci_mmio_write",
                "s390_runtime_instr",
            ],
        ),
        on(&["riscv64"], &["riscv_flush_icache"]),
    ]
}

/// Threads and processes, but no new namespaces without CAP_SYS_ADMIN: `clone` without the
/// [`NAMESPACE_FLAGS`] (s390 swaps its first two arguments), and `clone3`, whose flags a
/// filter cannot read, refused with `ENOSYS` so that libc falls back to `clone`.
fn namespace_guards() -> Vec<Rule> {
    let clone_flags = |index| Arg {
        index,
        value: NAMESPACE_FLAGS,
        value_two: 0,
        op: "SCMP_CMP_MASKED_EQ".into(),
    };
    vec![
        Rule {
            args: vec![clone_flags(0)],
            excludes: Filter {
                caps: vec!["CAP_SYS_ADMIN".into()],
                arches: vec!["s390".into(), "s390x".into()],
                ..Filter::default()
            },
            ..rule(&["clone"], ALLOW)
        },
        Rule {
            args: vec![clone_flags(1)],
            includes: arches(&["s390", "s390x"]),
            excludes: caps(&["CAP_SYS_ADMIN"]),
            ..rule(&["clone"], ALLOW)
        },
        Rule {
            errno_ret: Some(libc::ENOSYS as u32),
            excludes: caps(&["CAP_SYS_ADMIN"]),
            ..rule(&["clone3"], "SCMP_ACT_ERRNO")
        },
    ]
}

/// The calls of [`BY_CAPABILITY`], each allowed when its capability is held.
fn capability_gated() -> Vec<Rule> {
    BY_CAPABILITY
        .iter()
        .map(|(cap, names)| Rule {
            includes: caps(&[cap]),
            ..rule(names, ALLOW)
        })
        .collect()
}

/// The architectures a filter covers: each native one with the compat ones its kernel runs.
fn arch_map() -> Vec<ArchMap> {
    let arch = |native: &str, sub: &[&str]| ArchMap {
        architecture: native.into(),
        sub_architectures: sub.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        arch("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        arch("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
        arch("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
        arch("SCMP_ARCH_RISCV64", &[]),
        arch("SCMP_ARCH_PPC64LE", &[]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The profile, rule by rule, as it was written before it was split by what the rules are
    /// for: a change to it is a change of the containers' security and shows in this file.
    #[test]
    fn profile_is_the_recorded_one() {
        let json = serde_json::to_string_pretty(&default_profile()).unwrap() + "\n";
        assert_eq!(json, include_str!("testdata/default_profile.json"));
    }
}
