//! Device access control on cgroup v2: `linux.resources.devices` as an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup2 directory (what runc,
//! crun and youki do; cgroup v2 has no `devices` controller).
//!
//! Three steps, each usable on its own:
//! - [`DevicePolicy`] folds the spec's rules the way the cgroup v1 devices controller folds
//!   `devices.allow`/`devices.deny` writes (the same emulation runc uses): a default verdict
//!   (allow or deny every device) and a set of exceptions `(type, major, minor) → access`.
//!   The result does not depend on the order of the exceptions, so v1 and v2 enforce exactly
//!   the same thing for the same spec.
//! - [`compile`] turns a policy into eBPF instructions, encoded by hand as `struct bpf_insn`
//!   words (no toolchain): one block per exception, first match returns, else the default.
//! - [`load`] (`BPF_PROG_LOAD`, the verifier's log in the error) and [`attach`]
//!   (`BPF_PROG_ATTACH`, `BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`, replacing a program berth
//!   attached earlier to the same cgroup); [`apply`] does all three.
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! with `access_type = (access << 16) | type`; it returns 1 to allow and 0 to deny (`EPERM`).

use crate::error::{Context, Error, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `BPF_DEVCG_DEV_BLOCK`: the type of a block device in the program's context.
pub const BPF_DEVCG_DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`: the type of a character device in the program's context.
pub const BPF_DEVCG_DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`.
pub const BPF_DEVCG_ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const BPF_DEVCG_ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const BPF_DEVCG_ACC_WRITE: u32 = 4;

/// The name berth gives its programs (`bpf_prog_info.name`, at most 15 bytes): how a later
/// shim recognizes (and replaces) a program berth attached to the same cgroup.
pub const PROG_NAME: &str = "berth_devices";

/// The license string passed to `BPF_PROG_LOAD`. The kernel only asks for a GPL-compatible
/// license when a program calls GPL-only helpers; this one calls no helper at all (runc
/// passes "Apache" too).
pub const LICENSE: &CStr = c"Apache";

// ---------------------------------------------------------------------------------------------
// The policy (cgroup v1 semantics)
// ---------------------------------------------------------------------------------------------

/// A device type the device cgroup distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DevType {
    /// `b`
    Block,
    /// `c` (and OCI's `u`, unbuffered character devices)
    Char,
}

impl DevType {
    /// The value of the context's type field (`BPF_DEVCG_DEV_*`).
    pub fn bpf_type(self) -> u32 {
        match self {
            DevType::Block => BPF_DEVCG_DEV_BLOCK,
            DevType::Char => BPF_DEVCG_DEV_CHAR,
        }
    }

    /// `b` or `c`.
    pub fn as_char(self) -> char {
        match self {
            DevType::Block => 'b',
            DevType::Char => 'c',
        }
    }
}

/// A set of accesses: mknod, read, write (`BPF_DEVCG_ACC_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u32);

impl Access {
    /// No access.
    pub const NONE: Access = Access(0);
    /// `m`
    pub const MKNOD: Access = Access(BPF_DEVCG_ACC_MKNOD);
    /// `r`
    pub const READ: Access = Access(BPF_DEVCG_ACC_READ);
    /// `w`
    pub const WRITE: Access = Access(BPF_DEVCG_ACC_WRITE);
    /// `rwm`
    pub const ALL: Access = Access(BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE);

    /// Parses the cgroup permission letters (`r`, `w`, `m`, any order, repeats allowed).
    pub fn parse(s: &str) -> std::result::Result<Access, String> {
        let mut a = Access::NONE;
        for ch in s.chars() {
            a = a.union(match ch {
                'r' => Access::READ,
                'w' => Access::WRITE,
                'm' => Access::MKNOD,
                other => {
                    return Err(format!(
                        "device access {s:?}: unknown permission {other:?} (allowed: r, w, m)"
                    ))
                }
            });
        }
        Ok(a)
    }

    /// The `BPF_DEVCG_ACC_*` bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// From `BPF_DEVCG_ACC_*` bits (others are dropped).
    pub fn from_bits(bits: u32) -> Access {
        Access(bits & Access::ALL.0)
    }

    /// `self ∪ other`
    pub fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    /// `self ∖ other`
    pub fn difference(self, other: Access) -> Access {
        Access(self.0 & !other.0)
    }

    /// Whether every access of `other` is in `self`.
    pub fn contains(self, other: Access) -> bool {
        other.0 & !self.0 == 0
    }

    /// Whether `self` and `other` share an access.
    pub fn intersects(self, other: Access) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (a, ch) in [
            (Access::READ, 'r'),
            (Access::WRITE, 'w'),
            (Access::MKNOD, 'm'),
        ] {
            if self.contains(a) {
                write!(f, "{ch}")?;
            }
        }
        Ok(())
    }
}

/// What an exception matches: a device type and a major and minor number, `None` = any.
///
/// The field order gives the order of the program's blocks: (major, minor, type), wildcards
/// first, as runc sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceMatch {
    /// Major number, `None` = `*`.
    pub major: Option<u32>,
    /// Minor number, `None` = `*`.
    pub minor: Option<u32>,
    /// Block or character.
    pub typ: DevType,
}

impl DeviceMatch {
    /// Whether the device `typ major:minor` is matched.
    pub fn matches(&self, typ: DevType, major: u32, minor: u32) -> bool {
        self.typ == typ
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

impl fmt::Display for DeviceMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
        write!(
            f,
            "{} {}:{}",
            self.typ.as_char(),
            n(self.major),
            n(self.minor)
        )
    }
}

/// The device policy of a container: a default verdict and exceptions to it.
///
/// Built like the cgroup v1 devices controller builds its state from writes to
/// `devices.allow`/`devices.deny` (and like runc's emulator):
/// - an `a *:* rwm` rule (type `a`, both numbers wildcards, all access) resets the state:
///   allow-all or deny-all without exceptions;
/// - a rule whose verdict differs from the default adds an exception (merging the access
///   with an exception for the same device, as the kernel does);
/// - a rule whose verdict equals the default removes access from the exception for exactly
///   the same device. Removing access that a *different*, wildcard exception still grants
///   (`allow c *:* rwm` then `deny c 1:3 rwm`) is refused: cgroup v1 silently ignores such a
///   rule, and enforcing something else on v2 would be worse;
/// - a rule of type `a` that is not `a *:* rwm` stands for the same rule for `b` and for `c`
///   (the OCI meaning of `a`; the v1 kernel would reset the whole state instead);
/// - rules of type `p` (FIFOs) are skipped: the device cgroup does not control FIFOs.
///
/// Checking an access (see [`DevicePolicy::allows`]), as the kernel does: with default deny,
/// one exception must match the device and grant *every* requested access; with default
/// allow, the access is denied when an exception matches the device and *any* requested
/// access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    default_allow: bool,
    exceptions: BTreeMap<DeviceMatch, Access>,
}

impl DevicePolicy {
    /// Every access denied, no exceptions.
    pub fn deny_all() -> Self {
        DevicePolicy {
            default_allow: false,
            exceptions: BTreeMap::new(),
        }
    }

    /// Every access allowed, no exceptions.
    pub fn allow_all() -> Self {
        DevicePolicy {
            default_allow: true,
            exceptions: BTreeMap::new(),
        }
    }

    /// The policy for `linux.resources.devices` as berth applies it: deny everything, then
    /// each rule in order.
    pub fn from_oci(rules: &[LinuxDeviceCgroup]) -> std::result::Result<Self, String> {
        let mut p = DevicePolicy::deny_all();
        for r in rules {
            p.apply(r)?;
        }
        Ok(p)
    }

    /// Applies one OCI rule (see the type's documentation).
    pub fn apply(&mut self, rule: &LinuxDeviceCgroup) -> std::result::Result<(), String> {
        let access = match rule.access().as_deref() {
            None | Some("") => Access::ALL,
            Some(s) => Access::parse(s)?,
        };
        let major = number(rule.major(), "major", rule)?;
        let minor = number(rule.minor(), "minor", rule)?;
        let types: &[DevType] = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => {
                if major.is_none() && minor.is_none() && access == Access::ALL {
                    *self = if rule.allow() {
                        DevicePolicy::allow_all()
                    } else {
                        DevicePolicy::deny_all()
                    };
                    return Ok(());
                }
                &[DevType::Block, DevType::Char]
            }
            LinuxDeviceType::B => &[DevType::Block],
            LinuxDeviceType::C | LinuxDeviceType::U => &[DevType::Char],
            LinuxDeviceType::P => return Ok(()),
        };
        for &typ in types {
            let m = DeviceMatch { major, minor, typ };
            if rule.allow() == self.default_allow {
                self.remove(m, access, rule)?;
            } else {
                let e = self.exceptions.entry(m).or_insert(Access::NONE);
                *e = e.union(access);
            }
        }
        Ok(())
    }

    fn remove(
        &mut self,
        m: DeviceMatch,
        access: Access,
        rule: &LinuxDeviceCgroup,
    ) -> std::result::Result<(), String> {
        for partial in [
            DeviceMatch { major: None, ..m },
            DeviceMatch { minor: None, ..m },
            DeviceMatch {
                major: None,
                minor: None,
                ..m
            },
        ] {
            if partial == m {
                continue;
            }
            if let Some(granted) = self.exceptions.get(&partial) {
                if granted.intersects(access) {
                    let verb = if self.default_allow {
                        "denied"
                    } else {
                        "allowed"
                    };
                    return Err(format!(
                        "device rule {:?} cannot be enforced: {m} {access} is {verb} by the \
                         wildcard rule {partial} {granted}, and a rule cannot punch a hole in a \
                         wildcard rule (cgroup v1 would silently ignore it)",
                        describe(rule)
                    ));
                }
            }
        }
        if let Some(cur) = self.exceptions.get_mut(&m) {
            *cur = cur.difference(access);
            if cur.is_empty() {
                self.exceptions.remove(&m);
            }
        }
        Ok(())
    }

    /// Whether everything is allowed by default (the exceptions deny).
    pub fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// Whether the policy allows every access to every device.
    pub fn is_allow_all(&self) -> bool {
        self.default_allow && self.exceptions.is_empty()
    }

    /// The exceptions, in the order of the program's blocks.
    pub fn exceptions(&self) -> impl Iterator<Item = (DeviceMatch, Access)> + '_ {
        self.exceptions.iter().map(|(m, a)| (*m, *a))
    }

    /// Whether `access` to the device `typ major:minor` is allowed (the kernel's v1 check).
    pub fn allows(&self, typ: DevType, major: u32, minor: u32, access: Access) -> bool {
        let mut matching = self
            .exceptions
            .iter()
            .filter(|(m, _)| m.matches(typ, major, minor));
        if self.default_allow {
            !matching.any(|(_, granted)| granted.intersects(access))
        } else {
            matching.any(|(_, granted)| granted.contains(access))
        }
    }
}

fn describe(rule: &LinuxDeviceCgroup) -> String {
    let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C => 'c',
        LinuxDeviceType::U => 'u',
        LinuxDeviceType::P => 'p',
    };
    let n = |v: Option<i64>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
    format!(
        "{} {typ} {}:{} {}",
        if rule.allow() { "allow" } else { "deny" },
        n(rule.major()),
        n(rule.minor()),
        rule.access().as_deref().unwrap_or("rwm")
    )
}

/// A major or minor number of a rule: absent or -1 = any. The program compares with a 64-bit
/// jump against a sign-extended 32-bit immediate, so numbers stop at `i32::MAX` (Linux has
/// 12-bit majors and 20-bit minors).
fn number(
    v: Option<i64>,
    what: &str,
    rule: &LinuxDeviceCgroup,
) -> std::result::Result<Option<u32>, String> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(format!(
            "device rule {:?}: {what} number {n} is out of range",
            describe(rule)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// eBPF instructions
// ---------------------------------------------------------------------------------------------

/// A register: r0 (return value), r1 (context pointer on entry), r2–r5 scratch.
pub type Reg = u8;
/// Return value.
pub const R0: Reg = 0;
/// Context pointer on entry; the program reuses it as scratch once the fields are loaded.
pub const R1: Reg = 1;
/// The device type (`access_type & 0xffff`).
pub const R2: Reg = 2;
/// The requested access (`access_type >> 16`).
pub const R3: Reg = 3;
/// Major number.
pub const R4: Reg = 4;
/// Minor number.
pub const R5: Reg = 5;

// Instruction classes, sizes, modes, sources and operations (linux/bpf_common.h, linux/bpf.h).
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// One `struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register.
    pub dst: Reg,
    /// Source register.
    pub src: Reg,
    /// Offset (memory access) or jump distance in instructions after the next one.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    /// `dst = *(u32 *)(src + off)` (zero-extended).
    pub fn ldx_w(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn {
            code: BPF_LDX | BPF_W | BPF_MEM,
            dst,
            src,
            off,
            imm: 0,
        }
    }

    /// `w(dst) &= imm` (32-bit ALU, zero-extends).
    pub fn and32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu32(BPF_AND | BPF_K, dst, 0, imm)
    }

    /// `w(dst) >>= imm` (logical).
    pub fn rsh32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu32(BPF_RSH | BPF_K, dst, 0, imm)
    }

    /// `w(dst) = w(src)`
    pub fn mov32_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu32(BPF_MOV | BPF_X, dst, src, 0)
    }

    /// `w(dst) = imm`
    pub fn mov32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu32(BPF_MOV | BPF_K, dst, 0, imm)
    }

    fn alu32(op: u8, dst: Reg, src: Reg, imm: i32) -> Insn {
        Insn {
            code: BPF_ALU | op,
            dst,
            src,
            off: 0,
            imm,
        }
    }

    /// `if dst != imm goto +off` (64-bit compare, `imm` sign-extended).
    pub fn jne_imm(dst: Reg, imm: i32, off: i16) -> Insn {
        Insn {
            code: BPF_JMP | BPF_JNE | BPF_K,
            dst,
            src: 0,
            off,
            imm,
        }
    }

    /// `if dst != src goto +off`
    pub fn jne_reg(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn {
            code: BPF_JMP | BPF_JNE | BPF_X,
            dst,
            src,
            off,
            imm: 0,
        }
    }

    /// `if dst == imm goto +off`
    pub fn jeq_imm(dst: Reg, imm: i32, off: i16) -> Insn {
        Insn {
            code: BPF_JMP | BPF_JEQ | BPF_K,
            dst,
            src: 0,
            off,
            imm,
        }
    }

    /// `exit` (returns r0).
    pub fn exit() -> Insn {
        Insn {
            code: BPF_JMP | BPF_EXIT,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        }
    }

    /// The 8 bytes of `struct bpf_insn` in this machine's layout: the register nibbles follow
    /// the C bitfield order (dst in the low nibble on little-endian, the high one on
    /// big-endian), `off` and `imm` in native byte order.
    pub fn to_bytes(self) -> [u8; 8] {
        let regs = if cfg!(target_endian = "little") {
            (self.dst & 0x0f) | (self.src << 4)
        } else {
            (self.dst << 4) | (self.src & 0x0f)
        };
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }

    /// The instruction as the `u64` word the kernel reads (`to_bytes` in native order).
    pub fn to_u64(self) -> u64 {
        u64::from_ne_bytes(self.to_bytes())
    }
}

/// The program for `policy`:
///
/// ```text
///   r2 = *(u32 *)(r1 + 0); w2 &= 0xffff      type
///   r3 = *(u32 *)(r1 + 0); w3 >>= 16         access
///   r4 = *(u32 *)(r1 + 4)                    major
///   r5 = *(u32 *)(r1 + 8)                    minor
/// for each exception:
///   if r2 != TYPE goto next
///   w1 = w3; w1 &= ACCESS
///     default deny:  if r1 != r3 goto next   (every requested access granted; skipped for rwm)
///     default allow: if r1 == 0 goto next    (any requested access denied)
///   if r4 != MAJOR goto next                 (absent for *)
///   if r5 != MINOR goto next                 (absent for *)
///   w0 = !DEFAULT; exit
/// next: …
///   w0 = DEFAULT; exit
/// ```
///
/// Every exception has the same verdict, so the first match decides.
pub fn compile(policy: &DevicePolicy) -> Vec<Insn> {
    let mut p = vec![
        Insn::ldx_w(R2, R1, 0),
        Insn::and32_imm(R2, 0xffff),
        Insn::ldx_w(R3, R1, 0),
        Insn::rsh32_imm(R3, 16),
        Insn::ldx_w(R4, R1, 4),
        Insn::ldx_w(R5, R1, 8),
    ];
    let default = i32::from(policy.default_allow);
    for (m, access) in policy.exceptions() {
        // Jumps are built with off = 0 and pointed at the end of the block afterwards.
        let mut block = vec![Insn::jne_imm(R2, m.typ.bpf_type() as i32, 0)];
        if policy.default_allow {
            block.push(Insn::mov32_reg(R1, R3));
            block.push(Insn::and32_imm(R1, access.bits() as i32));
            block.push(Insn::jeq_imm(R1, 0, 0));
        } else if access != Access::ALL {
            block.push(Insn::mov32_reg(R1, R3));
            block.push(Insn::and32_imm(R1, access.bits() as i32));
            block.push(Insn::jne_reg(R1, R3, 0));
        }
        if let Some(major) = m.major {
            block.push(Insn::jne_imm(R4, major as i32, 0));
        }
        if let Some(minor) = m.minor {
            block.push(Insn::jne_imm(R5, minor as i32, 0));
        }
        block.push(Insn::mov32_imm(R0, 1 - default));
        block.push(Insn::exit());
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.code & 0x07 == BPF_JMP && insn.code != BPF_JMP | BPF_EXIT {
                insn.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(Insn::mov32_imm(R0, default));
    p.push(Insn::exit());
    p
}

// ---------------------------------------------------------------------------------------------
// bpf(2)
// ---------------------------------------------------------------------------------------------

const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_ATTACH: u32 = 8;
const BPF_PROG_DETACH: u32 = 9;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_PROG_QUERY: u32 = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
const BPF_F_REPLACE: u32 = 1 << 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH`/`BPF_PROG_DETACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The `BPF_PROG_QUERY` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// The `BPF_PROG_GET_FD_BY_ID` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_prog_info`, up to `name`. The kernel fills what fits; the
/// pointer fields stay 0, so it copies no instructions or map ids.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    typ: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// bpf(2) with one of the attribute structs above.
fn bpf<T>(cmd: u32, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] struct laid out as the prefix of
    // `union bpf_attr` that `cmd` reads, and the size passed is its exact size (the kernel
    // zero-fills the rest). Pointers stored inside it (instructions, license, log, id buffers)
    // are set by the callers to buffers that outlive this call, with the lengths they state.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

/// An fd returned by bpf(2).
fn owned_fd(r: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn prog_load_once(insns: &[u64], log: Option<&mut [u8]>) -> std::io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME.as_bytes());
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    // The verifier may ask to be called again (EAGAIN), as libbpf does.
    let mut tries = 0;
    loop {
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 5 => tries += 1,
            r => return r.map(owned_fd),
        }
    }
}

/// `prog_load_once`; on EPERM (kernels before 5.11 charge programs to RLIMIT_MEMLOCK) again
/// with an unlimited RLIMIT_MEMLOCK, which is restored afterwards so that the container's
/// init, cloned from this process, does not inherit it.
fn prog_load(insns: &[u64], mut log: Option<&mut [u8]>) -> std::io::Result<OwnedFd> {
    match prog_load_once(insns, log.as_deref_mut()) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
            let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
                return Err(e);
            };
            if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_err() {
                return Err(e);
            }
            let r = prog_load_once(insns, log);
            let _ = setrlimit(Resource::RLIMIT_MEMLOCK, soft, hard);
            r
        }
        r => r,
    }
}

/// Loads `insns` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program named [`PROG_NAME`]. When the
/// kernel refuses it, the load is repeated with a verifier log, which the error carries (on
/// one line; the full log also goes to the shim's log).
pub fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let words: Vec<u64> = insns.iter().map(|i| i.to_u64()).collect();
    let first = match prog_load(&words, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut size = 64 * 1024;
    let (err, log) = loop {
        let mut buf = vec![0u8; size];
        match prog_load(&words, Some(&mut buf)) {
            // Accepted the second time (e.g. a transient ENOMEM).
            Ok(fd) => return Ok(fd),
            // The log did not fit.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < 16 << 20 => size *= 4,
            Err(e) => break (e, buf),
        }
    };
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
    let context = format!(
        "BPF_PROG_LOAD of the device program ({} instructions, BPF_PROG_TYPE_CGROUP_DEVICE)",
        words.len()
    );
    if text.is_empty() {
        let hint = if err.raw_os_error() == Some(libc::EPERM) {
            " (needs CAP_SYS_ADMIN or CAP_BPF)"
        } else {
            ""
        };
        return Err(Error::io(
            format!("{context}{hint}; the verifier wrote no log (first attempt: {first})"),
            err,
        ));
    }
    crate::log(&format!("{context} failed: {err}; verifier log:\n{text}"));
    Err(Error::io(
        format!("{context}; verifier log: {}", one_line(&text, 2000)),
        err,
    ))
}

/// The log's lines joined with " | ", keeping the last `max` bytes (the verdict is last).
fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if joined.len() <= max {
        return joined;
    }
    let mut start = joined.len() - max;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("… {}", &joined[start..])
}

/// A device program attached to a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// The kernel's program id.
    pub id: u32,
    /// `bpf_prog_info.name`.
    pub name: String,
}

fn open_cgroup(dir: &Path) -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .ctx(|| format!("open cgroup {}", dir.display()))
}

/// Ids of the device programs attached directly to the cgroup `dir_fd` (not inherited ones).
fn query_ids(dir_fd: &OwnedFd) -> std::io::Result<Vec<u32>> {
    // A cgroup holds at most 64 programs per attach type; ENOSPC tells the real count.
    let mut cap = 64usize;
    for _ in 0..10 {
        let mut ids = vec![0u32; cap];
        let mut attr = QueryAttr {
            target_fd: dir_fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: cap as u32,
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                cap = (attr.prog_cnt as usize).max(cap * 2);
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("the list of programs kept changing"))
}

/// An fd and the name of program `id`; `None` when it is gone or not ours to open.
fn open_prog(id: u32) -> std::io::Result<Option<(OwnedFd, String)>> {
    let mut attr = GetIdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd = match bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) {
        Ok(r) => owned_fd(r),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::EPERM) | Some(libc::EACCES)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let end = info.name.iter().position(|b| *b == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(&info.name[..end]).into_owned();
    Ok(Some((fd, name)))
}

/// The device programs attached directly to the cgroup `dir`.
pub fn attached_programs(dir: &Path) -> Result<Vec<AttachedProgram>> {
    let fd = open_cgroup(dir)?;
    let ids = query_ids(&fd).ctx(|| {
        format!(
            "BPF_PROG_QUERY (BPF_CGROUP_DEVICE) on cgroup {}",
            dir.display()
        )
    })?;
    let mut out = Vec::new();
    for id in ids {
        if let Some((_, name)) = open_prog(id)
            .ctx(|| format!("inspect device program {id} of cgroup {}", dir.display()))?
        {
            out.push(AttachedProgram { id, name });
        }
    }
    Ok(out)
}

fn prog_attach(dir_fd: &OwnedFd, prog: &OwnedFd, replace: Option<&OwnedFd>) -> std::io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir_fd.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    if let Some(old) = replace {
        attr.attach_flags |= BPF_F_REPLACE;
        attr.replace_bpf_fd = old.as_raw_fd() as u32;
    }
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

fn prog_detach(dir_fd: &OwnedFd, prog: &OwnedFd) -> std::io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir_fd.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr).map(|_| ())
}

/// Attaches `prog` to the cgroup2 directory `dir` (`BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`,
/// so the programs of the cgroups above still apply too). A program berth attached there
/// before (named [`PROG_NAME`], e.g. left by an earlier shim of a cgroup that was not removed)
/// is replaced: atomically with `BPF_F_REPLACE` when there is one, otherwise the new program
/// is attached first and the old ones detached after, so the cgroup is never without one.
/// Programs of others stay (they can only deny more).
pub fn attach(dir: &Path, prog: &OwnedFd) -> Result<()> {
    let dir_fd = open_cgroup(dir)?;
    let ids = query_ids(&dir_fd).ctx(|| {
        format!(
            "BPF_PROG_QUERY (BPF_CGROUP_DEVICE) on cgroup {}",
            dir.display()
        )
    })?;
    let mut old = Vec::new();
    for id in ids {
        if let Some((fd, name)) = open_prog(id)
            .ctx(|| format!("inspect device program {id} of cgroup {}", dir.display()))?
        {
            if name == PROG_NAME {
                old.push((id, fd));
            }
        }
    }
    if let [(_, only)] = old.as_slice() {
        // BPF_F_REPLACE needs Linux 5.6; fall back below when it is refused.
        if prog_attach(&dir_fd, prog, Some(only)).is_ok() {
            return Ok(());
        }
    }
    prog_attach(&dir_fd, prog, None).ctx(|| {
        format!(
            "BPF_PROG_ATTACH (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) to cgroup {}",
            dir.display()
        )
    })?;
    for (id, fd) in &old {
        match prog_detach(&dir_fd, fd) {
            Ok(()) => {}
            // Detached meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "BPF_PROG_DETACH of berth's previous device program {id} from cgroup {}",
                        dir.display()
                    ),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Compiles `policy`, loads the program and attaches it to the cgroup2 directory `dir`.
pub fn apply(dir: &Path, policy: &DevicePolicy) -> Result<()> {
    let prog = load(&compile(policy))?;
    attach(dir, &prog)
    // The cgroup holds the program from now on; our descriptor may close.
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
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
    }

    use LinuxDeviceType::{A, B, C, P, U};

    /// Docker's default `linux.resources.devices`.
    fn docker_default() -> Vec<LinuxDeviceCgroup> {
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

    /// A reference interpreter for the instructions `compile` emits.
    fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        r[1] = u64::MAX; // the context "pointer"
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            pc += 1;
            let (d, s) = (i.dst as usize, i.src as usize);
            let w = |v: u64| v & 0xffff_ffff;
            match i.code {
                0x61 => {
                    assert_eq!(r[s], u64::MAX, "load from a non-context register");
                    assert!(i.off >= 0 && i.off % 4 == 0 && i.off < 12);
                    r[d] = u64::from(ctx[i.off as usize / 4]);
                }
                0x54 => r[d] = w(r[d] & (i.imm as u32 as u64)),
                0x74 => r[d] = w(r[d]) >> i.imm,
                0xbc => r[d] = w(r[s]),
                0xb4 => r[d] = i.imm as u32 as u64,
                0x55 => {
                    if r[d] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                0x5d => {
                    if r[d] != r[s] {
                        pc += i.off as usize;
                    }
                }
                0x15 => {
                    if r[d] == i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                0x95 => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
        panic!("program did not finish")
    }

    /// Checks the compiled program against `DevicePolicy::allows` on many devices and every
    /// access combination.
    fn assert_program_matches_policy(p: &DevicePolicy) {
        let prog = compile(p);
        let mut numbers: Vec<u32> = vec![0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 136, 200, 254, 4095];
        for (m, _) in p.exceptions() {
            numbers.extend(m.major);
            numbers.extend(m.minor);
        }
        numbers.sort_unstable();
        numbers.dedup();
        for typ in [DevType::Block, DevType::Char] {
            for &major in &numbers {
                for &minor in &numbers {
                    for bits in 0..=7 {
                        let access = Access::from_bits(bits);
                        let want = p.allows(typ, major, minor, access);
                        let got = run(&prog, (bits << 16) | typ.bpf_type(), major, minor);
                        assert_eq!(
                            got,
                            u64::from(want),
                            "{} {major}:{minor} {access} (policy {p:?})",
                            typ.as_char()
                        );
                    }
                }
            }
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn instruction_encoding() {
        // r2 = *(u32 *)(r1 + 0): code 0x61, dst 2 (low nibble), src 1 (high nibble)
        assert_eq!(Insn::ldx_w(R2, R1, 0).to_u64(), 0x0000_0000_0000_1261);
        assert_eq!(Insn::ldx_w(R5, R1, 8).to_u64(), 0x0000_0000_0008_1561);
        // w2 &= 0xffff
        assert_eq!(Insn::and32_imm(R2, 0xffff).to_u64(), 0x0000_ffff_0000_0254);
        // w3 >>= 16
        assert_eq!(Insn::rsh32_imm(R3, 16).to_u64(), 0x0000_0010_0000_0374);
        // w1 = w3
        assert_eq!(Insn::mov32_reg(R1, R3).to_u64(), 0x0000_0000_0000_31bc);
        // w0 = 1
        assert_eq!(Insn::mov32_imm(R0, 1).to_u64(), 0x0000_0001_0000_00b4);
        // if r2 != 2 goto +5
        assert_eq!(Insn::jne_imm(R2, 2, 5).to_u64(), 0x0000_0002_0005_0255);
        // if r1 != r3 goto +1
        assert_eq!(Insn::jne_reg(R1, R3, 1).to_u64(), 0x0000_0000_0001_315d);
        // if r1 == 0 goto +3
        assert_eq!(Insn::jeq_imm(R1, 0, 3).to_u64(), 0x0000_0000_0003_0115);
        // exit
        assert_eq!(Insn::exit().to_u64(), 0x95);
        // negative numbers: two's complement in their fields
        assert_eq!(
            Insn::jne_imm(R4, -1, -2).to_u64(),
            0xffff_ffff_fffe_0455,
            "imm and off are signed"
        );
        assert_eq!(
            Insn::jne_imm(R2, 2, 5).to_bytes(),
            [0x55, 0x02, 5, 0, 2, 0, 0, 0]
        );
    }

    const PROLOGUE: [u64; 6] = [
        0x0000_0000_0000_1261, // r2 = *(u32 *)(r1 + 0)
        0x0000_ffff_0000_0254, // w2 &= 0xffff
        0x0000_0000_0000_1361, // r3 = *(u32 *)(r1 + 0)
        0x0000_0010_0000_0374, // w3 >>= 16
        0x0000_0000_0004_1461, // r4 = *(u32 *)(r1 + 4)
        0x0000_0000_0008_1561, // r5 = *(u32 *)(r1 + 8)
    ];

    fn words(p: &[Insn]) -> Vec<u64> {
        p.iter().map(|i| i.to_u64()).collect()
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn deny_all_and_allow_all_programs() {
        let mut want = PROLOGUE.to_vec();
        want.extend([0x0000_0000_0000_00b4, 0x95]); // w0 = 0; exit
        assert_eq!(words(&compile(&DevicePolicy::deny_all())), want);
        assert_eq!(
            words(&compile(
                &DevicePolicy::from_oci(&[rule(false, Some(A), None, None, "rwm")]).unwrap()
            )),
            want
        );
        let mut want = PROLOGUE.to_vec();
        want.extend([0x0000_0001_0000_00b4, 0x95]); // w0 = 1; exit
        let privileged = DevicePolicy::from_oci(&[rule(true, None, None, None, "rwm")]).unwrap();
        assert!(privileged.is_allow_all());
        assert_eq!(words(&compile(&privileged)), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn docker_default_program() {
        let p = DevicePolicy::from_oci(&docker_default()).unwrap();
        assert!(!p.default_allow());
        let prog = words(&compile(&p));
        // b *:* m, c *:* m (wildcards sort first, b before c), then by major and minor:
        // 1:3 1:5 1:7 1:8 1:9 5:0 5:1 5:2 10:200, then 136:* — as runc orders them.
        let order: Vec<String> = p.exceptions().map(|(m, a)| format!("{m} {a}")).collect();
        assert_eq!(
            order,
            [
                "b *:* m",
                "c *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 10:200 rwm",
                "c 136:* rwm"
            ]
        );
        assert_eq!(&prog[..6], &PROLOGUE);
        // b *:* m: access checked (subset), no number checks
        assert_eq!(
            &prog[6..12],
            &[
                0x0000_0001_0005_0255, // if r2 != 1 goto +5
                0x0000_0000_0000_31bc, // w1 = w3
                0x0000_0001_0000_0154, // w1 &= 1
                0x0000_0000_0002_315d, // if r1 != r3 goto +2
                0x0000_0001_0000_00b4, // w0 = 1
                0x95,                  // exit
            ]
        );
        // c *:* m
        assert_eq!(prog[12], 0x0000_0002_0005_0255);
        // c 1:3 rwm: no access check, major and minor checked
        assert_eq!(
            &prog[18..23],
            &[
                0x0000_0002_0004_0255, // if r2 != 2 goto +4
                0x0000_0001_0003_0455, // if r4 != 1 goto +3
                0x0000_0003_0002_0555, // if r5 != 3 goto +2
                0x0000_0001_0000_00b4, // w0 = 1
                0x95,
            ]
        );
        // c 136:* rwm: wildcard minor, so no minor check; then the default
        let n = prog.len();
        assert_eq!(
            &prog[n - 6..],
            &[
                0x0000_0002_0003_0255, // if r2 != 2 goto +3
                0x0000_0088_0002_0455, // if r4 != 136 goto +2
                0x0000_0001_0000_00b4, // w0 = 1
                0x95,
                0x0000_0000_0000_00b4, // w0 = 0
                0x95,
            ]
        );
        // 6 + 2 × 6 (m rules) + 9 × 5 + 4 + 2
        assert_eq!(n, 6 + 12 + 45 + 4 + 2);
        assert_program_matches_policy(&p);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn allow_all_except_one_device() {
        // `--privileged` with one device denied: default allow, one deny exception matched on
        // any overlap of access.
        let p = DevicePolicy::from_oci(&[
            rule(true, Some(A), None, None, "rwm"),
            rule(false, Some(B), Some(8), Some(0), "rwm"),
        ])
        .unwrap();
        assert!(p.default_allow());
        let mut want = PROLOGUE.to_vec();
        want.extend([
            0x0000_0001_0007_0255, // if r2 != 1 goto +7
            0x0000_0000_0000_31bc, // w1 = w3
            0x0000_0007_0000_0154, // w1 &= 7
            0x0000_0000_0004_0115, // if r1 == 0 goto +4
            0x0000_0008_0003_0455, // if r4 != 8 goto +3
            0x0000_0000_0002_0555, // if r5 != 0 goto +2
            0x0000_0000_0000_00b4, // w0 = 0
            0x95,
            0x0000_0001_0000_00b4, // w0 = 1
            0x95,
        ]);
        assert_eq!(words(&compile(&p)), want);
        assert_program_matches_policy(&p);
        assert!(!p.allows(DevType::Block, 8, 0, Access::READ));
        assert!(p.allows(DevType::Block, 8, 1, Access::READ));
        assert!(p.allows(DevType::Char, 8, 0, Access::ALL));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn wildcard_type_rule_covers_block_and_char() {
        // `a 7:* r` is the same rule for b and c (type `a` that is not `a *:* rwm`).
        let p = DevicePolicy::from_oci(&[rule(true, Some(A), Some(7), None, "r")]).unwrap();
        let order: Vec<String> = p.exceptions().map(|(m, a)| format!("{m} {a}")).collect();
        assert_eq!(order, ["b 7:* r", "c 7:* r"]);
        let prog = words(&compile(&p));
        assert_eq!(
            &prog[6..12],
            &[
                0x0000_0001_0006_0255, // if r2 != 1 goto +6
                0x0000_0000_0000_31bc, // w1 = w3
                0x0000_0002_0000_0154, // w1 &= 2
                0x0000_0000_0003_315d, // if r1 != r3 goto +3
                0x0000_0007_0002_0455, // if r4 != 7 goto +2
                0x0000_0001_0000_00b4, // w0 = 1
            ]
        );
        assert_eq!(prog.len(), 6 + 7 + 7 + 2);
        assert_program_matches_policy(&p);
        assert!(p.allows(DevType::Block, 7, 3, Access::READ));
        assert!(p.allows(DevType::Char, 7, 0, Access::READ));
        assert!(!p.allows(DevType::Char, 7, 0, Access::WRITE));
        assert!(!p.allows(DevType::Char, 7, 0, Access::READ.union(Access::WRITE)));
        assert!(!p.allows(DevType::Char, 8, 0, Access::READ));
    }

    #[test]
    fn v1_folding_rules() {
        // Access for the same device merges: r then w allows rw (one exception grants both).
        let p = DevicePolicy::from_oci(&[
            rule(true, Some(C), Some(1), Some(3), "r"),
            rule(true, Some(C), Some(1), Some(3), "w"),
        ])
        .unwrap();
        assert!(p.allows(DevType::Char, 1, 3, Access::READ.union(Access::WRITE)));
        assert!(!p.allows(DevType::Char, 1, 3, Access::MKNOD));
        assert_program_matches_policy(&p);

        // Separate exceptions do not add up: r on 1:* and w on 1:3 do not allow rw on 1:3.
        let p = DevicePolicy::from_oci(&[
            rule(true, Some(C), Some(1), None, "r"),
            rule(true, Some(C), Some(1), Some(3), "w"),
        ])
        .unwrap();
        assert!(p.allows(DevType::Char, 1, 3, Access::READ));
        assert!(p.allows(DevType::Char, 1, 3, Access::WRITE));
        assert!(!p.allows(DevType::Char, 1, 3, Access::READ.union(Access::WRITE)));
        assert_program_matches_policy(&p);

        // A deny for the same device takes access away; the rest stays.
        let p = DevicePolicy::from_oci(&[
            rule(true, Some(C), Some(1), Some(3), "rwm"),
            rule(false, Some(C), Some(1), Some(3), "w"),
        ])
        .unwrap();
        assert!(p.allows(DevType::Char, 1, 3, Access::READ));
        assert!(!p.allows(DevType::Char, 1, 3, Access::WRITE));
        assert!(!p.allows(DevType::Char, 1, 3, Access::READ.union(Access::WRITE)));
        assert_program_matches_policy(&p);

        // Taking away everything removes the exception.
        let p = DevicePolicy::from_oci(&[
            rule(true, Some(C), Some(1), Some(3), "rw"),
            rule(false, Some(C), Some(1), Some(3), "rwm"),
        ])
        .unwrap();
        assert_eq!(p, DevicePolicy::deny_all());

        // Default allow: a deny exception denies on any overlap (rw is denied when w is).
        let p = DevicePolicy::from_oci(&[
            rule(true, None, None, None, "rwm"),
            rule(false, Some(C), Some(1), Some(3), "w"),
        ])
        .unwrap();
        assert!(p.allows(DevType::Char, 1, 3, Access::READ));
        assert!(!p.allows(DevType::Char, 1, 3, Access::READ.union(Access::WRITE)));
        assert_program_matches_policy(&p);

        // The last `a *:* rwm` resets everything before it.
        let p = DevicePolicy::from_oci(&[
            rule(true, None, None, None, "rwm"),
            rule(false, Some(B), Some(8), Some(0), "rwm"),
            rule(false, Some(A), None, None, "rwm"),
            rule(true, Some(C), Some(1), Some(3), "rwm"),
        ])
        .unwrap();
        assert!(!p.default_allow());
        assert_eq!(p.exceptions().count(), 1);
        assert_program_matches_policy(&p);

        // FIFOs are not controlled; `u` is a character device; an absent access is rwm.
        let mut r = rule(true, Some(U), Some(4), Some(1), "");
        r.set_access(None);
        let p = DevicePolicy::from_oci(&[rule(true, Some(P), Some(1), Some(1), "rwm"), r]).unwrap();
        let order: Vec<String> = p.exceptions().map(|(m, a)| format!("{m} {a}")).collect();
        assert_eq!(order, ["c 4:1 rwm"]);

        // -1 is a wildcard like an absent number.
        let p = DevicePolicy::from_oci(&[rule(true, Some(C), Some(-1), Some(-1), "m")]).unwrap();
        assert!(p.allows(DevType::Char, 99, 99, Access::MKNOD));
    }

    #[test]
    fn refused_rules() {
        // Punching a hole into a wildcard exception: v1 would silently keep allowing it.
        let e = DevicePolicy::from_oci(&[
            rule(true, Some(C), None, None, "rwm"),
            rule(false, Some(C), Some(1), Some(3), "w"),
        ])
        .unwrap_err();
        assert!(e.contains("deny c 1:3 w"), "{e}");
        assert!(e.contains("wildcard rule c *:* rwm"), "{e}");
        let e = DevicePolicy::from_oci(&[
            rule(true, Some(A), None, None, "rwm"),
            rule(false, Some(B), Some(8), None, "rwm"),
            rule(true, Some(B), Some(8), Some(0), "r"),
        ])
        .unwrap_err();
        assert!(e.contains("b 8:* rwm"), "{e}");
        // No overlap of access: nothing to punch, accepted (and a no-op).
        let p = DevicePolicy::from_oci(&[
            rule(true, Some(C), None, None, "m"),
            rule(false, Some(C), Some(1), Some(3), "rw"),
        ])
        .unwrap();
        assert!(p.allows(DevType::Char, 1, 3, Access::MKNOD));

        assert!(
            DevicePolicy::from_oci(&[rule(true, Some(C), Some(1), Some(3), "rx")])
                .unwrap_err()
                .contains("unknown permission 'x'")
        );
        assert!(
            DevicePolicy::from_oci(&[rule(true, Some(C), Some(1 << 31), Some(3), "r")])
                .unwrap_err()
                .contains("major number 2147483648 is out of range")
        );
        assert!(
            DevicePolicy::from_oci(&[rule(true, Some(C), Some(1), Some(-2), "r")])
                .unwrap_err()
                .contains("minor number -2")
        );
    }

    #[test]
    fn verifier_log_on_one_line() {
        let log = "0: (b4) w0 = 0\n1: (bf) r0 = r6\nR6 !read_ok\nprocessed 2 insns\n";
        assert_eq!(
            one_line(log, 1000),
            "0: (b4) w0 = 0 | 1: (bf) r0 = r6 | R6 !read_ok | processed 2 insns"
        );
        let long = one_line(&"x\n".repeat(2000), 20);
        assert!(long.starts_with("… ") && long.ends_with("x | x"), "{long}");
    }
}
