//! Kernel structure offsets for the programs, from the running kernel's BTF and from
//! tracefs format files, so one object runs on any kernel layout.

use super::*;

/// Offsets for the programs, from BTF and tracefs; missing pieces clear a flag or
/// leave a tracepoint offset at 0, and the programs skip what they cannot read.
pub(super) fn kernel_offsets(
    btf: Option<&KernelBtf>,
    tracefs: Option<&Path>,
) -> abi::KernelOffsets {
    let mut o = abi::KernelOffsets::default();
    if let Some(btf) = btf {
        let task = (|| {
            Some((
                btf.member_offset("task_struct", "mm")?,
                btf.member_offset("task_struct", "real_parent")?,
                btf.member_offset("task_struct", "tgid")?,
                btf.member_offset("mm_struct", "arg_start")?,
                btf.member_offset("mm_struct", "arg_end")?,
                btf.member_offset("mm_struct", "env_start")?,
                btf.member_offset("mm_struct", "env_end")?,
            ))
        })();
        if let Some((mm, parent, tgid, arg_start, arg_end, env_start, env_end)) = task {
            o.task_mm = mm;
            o.task_real_parent = parent;
            o.task_tgid = tgid;
            o.mm_arg_start = arg_start;
            o.mm_arg_end = arg_end;
            o.mm_env_start = env_start;
            o.mm_env_end = env_end;
            o.flags |= abi::OFFSETS_TASK;
        }
        if let Some(off) = btf.member_offset("linux_binprm", "filename") {
            o.bprm_filename = off;
            o.flags |= abi::OFFSETS_BPRM;
        }
        if let Some(off) = btf.member_offset("socket", "type") {
            o.socket_type = off;
            o.flags |= abi::OFFSETS_SOCKET;
        }
    }
    if let Some(tracefs) = tracefs {
        let format = |cat: &str, name: &str| {
            fs::read_to_string(tracefs.join("events").join(cat).join(name).join("format"))
                .unwrap_or_default()
        };
        let exec = format("sched", "sched_process_exec");
        o.tp_exec_filename = tracepoint_field_offset(&exec, "filename").unwrap_or(0);
        let rmdir = format("cgroup", "cgroup_rmdir");
        if let (Some(root), Some(id), Some(path)) = (
            tracepoint_field_offset(&rmdir, "root"),
            tracepoint_field_offset(&rmdir, "id"),
            tracepoint_field_offset(&rmdir, "path"),
        ) {
            o.tp_rmdir_root = root;
            o.tp_rmdir_id = id;
            o.tp_rmdir_path = path;
        }
    }
    o
}

/// The offset of a field in a tracefs `format` file, e.g. for
/// `field:__data_loc char[] filename; offset:8; size:4; signed:0;`.
pub(super) fn tracepoint_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.trim().strip_prefix("field:")?;
        let name = decl.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.trim().strip_prefix("offset:")?.trim().parse().ok())
    })
}

/// Just enough of a BTF parser to find struct member offsets (through anonymous
/// struct/union members) in `/sys/kernel/btf/vmlinux`.
pub(super) struct KernelBtf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset in `types` of each type, indexed by type id (0 = void).
    starts: Vec<usize>,
}

pub(super) const BTF_KIND_STRUCT: u32 = 4;
pub(super) const BTF_KIND_UNION: u32 = 5;

impl<'a> KernelBtf<'a> {
    pub(super) fn parse(data: &'a [u8]) -> Result<Self> {
        let u16_at = |o: usize| -> Option<u16> {
            Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?))
        };
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
        };
        if u16_at(0) != Some(0xeb9f) {
            bail!("not little-endian BTF");
        }
        let field = |o: usize| u32_at(o).map(|v| v as usize).context("short BTF header");
        let hdr_len = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|s| Some((s, s.checked_add(len)?)))
                .and_then(|(s, e)| data.get(s..e))
                .context("BTF section out of bounds")
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut starts = vec![0usize];
        let mut pos = 0usize;
        while pos + 12 <= types.len() {
            starts.push(pos);
            let info = u32::from_le_bytes(types[pos + 4..pos + 8].try_into()?);
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                1 | 14 | 17 => 4,                            // INT, VAR, DECL_TAG
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                3 => 12,                                     // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen,                // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,                          // ENUM, FUNC_PROTO
                kind => bail!("unknown BTF kind {kind}"),
            };
            pos += 12 + extra;
        }
        Ok(KernelBtf {
            types,
            strings,
            starts,
        })
    }

    pub(super) fn u32_at(&self, pos: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.types.get(pos..pos + 4)?.try_into().ok()?,
        ))
    }

    pub(super) fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// (name offset, kind, kind_flag, vlen, size_or_type, start) of a type id.
    pub(super) fn header(&self, id: u32) -> Option<(u32, u32, bool, usize, u32, usize)> {
        let start = *self.starts.get(id as usize).filter(|_| id != 0)?;
        let info = self.u32_at(start + 4)?;
        Some((
            self.u32_at(start)?,
            (info >> 24) & 0x1f,
            info >> 31 == 1,
            (info & 0xffff) as usize,
            self.u32_at(start + 8)?,
            start,
        ))
    }

    /// Follows typedefs and const/volatile/restrict/type-tag modifiers.
    pub(super) fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, kind, _, _, next, _) = self.header(id)?;
            match kind {
                8 | 9 | 10 | 11 | 18 => id = next,
                _ => return Some(id),
            }
        }
        None
    }

    /// Byte offset of `member` in the struct named `name`.
    pub(super) fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        (1..self.starts.len() as u32).find_map(|id| {
            let (name_off, kind, _, vlen, _, _) = self.header(id)?;
            if kind != BTF_KIND_STRUCT || vlen == 0 || self.name(name_off) != name.as_bytes() {
                return None;
            }
            self.find_member(id, member.as_bytes(), 0)
                .filter(|bits| bits % 8 == 0)
                .map(|bits| bits / 8)
        })
    }

    /// Bit offset of `member` in struct/union `id`, looking into anonymous members.
    pub(super) fn find_member(&self, id: u32, member: &[u8], base_bits: u32) -> Option<u32> {
        let (_, kind, kind_flag, vlen, _, start) = self.header(id)?;
        if kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION {
            return None;
        }
        for i in 0..vlen {
            let m = start + 12 + 12 * i;
            let (name_off, ty, raw) = (self.u32_at(m)?, self.u32_at(m + 4)?, self.u32_at(m + 8)?);
            let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
            let at = base_bits.checked_add(bits)?;
            if name_off != 0 {
                if self.name(name_off) == member {
                    return Some(at);
                }
            } else if let Some(found) = self
                .resolve(ty)
                .and_then(|inner| self.find_member(inner, member, at))
            {
                return Some(found);
            }
        }
        None
    }
}
