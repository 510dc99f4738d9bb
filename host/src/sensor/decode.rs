//! Ring-buffer records into events: bounds-checked, never panicking on garbage.

use super::*;

pub(super) fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// What to add to a `bpf_ktime_get_ns` (CLOCK_MONOTONIC) value to get Unix-epoch ns.
pub fn monotonic_to_epoch_ns() -> i64 {
    (clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)) as i64
}

/// Decodes one ring-buffer record, converting its kernel timestamp with the current
/// clocks. Errors (never panics) on short, garbled or unknown records.
pub fn decode(record: &[u8]) -> Result<ProbeEvent> {
    decode_with_clock(record, monotonic_to_epoch_ns())
}

/// [`decode`] with an explicit monotonic-to-epoch offset (pure).
pub fn decode_with_clock(record: &[u8], epoch_offset_ns: i64) -> Result<ProbeEvent> {
    let header: abi::RecordHeader = read_pod(record).context("record shorter than its header")?;
    if header.version != abi::RECORD_VERSION {
        bail!(
            "record version {} (expected {})",
            header.version,
            abi::RECORD_VERSION
        );
    }
    let len = header.len as usize;
    let record = record.get(..len).with_context(|| {
        format!(
            "record truncated: header says {len} bytes, {} present",
            record.len()
        )
    })?;
    let timestamp =
        |ktime: u64| (ktime as i128 + epoch_offset_ns as i128).clamp(0, u64::MAX as i128) as u64;
    match header.kind {
        abi::KIND_EXEC => {
            let ev: abi::ExecEvent = read_pod(record).context("exec record too short")?;
            let payload = &record[size_of::<abi::ExecEvent>()..];
            let (f, a, e) = (
                ev.filename_len as usize,
                ev.argv_len as usize,
                ev.env_len as usize,
            );
            if f + a + e > payload.len() {
                bail!(
                    "exec record payload lengths {f}+{a}+{e} exceed its {} bytes",
                    payload.len()
                );
            }
            let (filename, rest) = payload.split_at(f);
            let (argv, rest) = rest.split_at(a);
            let env = &rest[..e];
            Ok(with_origin(
                Event {
                    timestamp: timestamp(ev.timestamp_ns),
                    process: process(ev.pid, ev.tid, ev.ppid, ev.uid, &ev.comm),
                    cgroup_id: ev.cgroup_id,
                    container: None,
                    body: Body::ProcessExec {
                        filename: c_string(filename),
                        argv: crate::events::nul_separated(argv),
                        env: crate::events::nul_separated(env),
                        synthetic: false,
                        truncated: Truncation {
                            filename: ev.flags & abi::EXEC_FILENAME_TRUNCATED != 0,
                            argv: ev.flags & abi::EXEC_ARGV_TRUNCATED != 0,
                            env: ev.flags & abi::EXEC_ENV_TRUNCATED != 0,
                            env_incomplete: ev.flags & (abi::EXEC_ENV_INCOMPLETE | abi::EXEC_NO_MM)
                                != 0,
                            env_from_proc: false,
                        },
                    },
                },
                ev.origin_cgroup_id,
            ))
        }
        abi::KIND_CONNECT => {
            let ev: abi::ConnectEvent = read_pod(record).context("connect record too short")?;
            let address = match ev.family {
                abi::AF_INET => SocketAddress::Ipv4 {
                    ip: Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]),
                    port: ev.port,
                },
                abi::AF_INET6 => SocketAddress::Ipv6 {
                    ip: Ipv6Addr::from(ev.addr),
                    port: ev.port,
                    flow_info: ev.flowinfo,
                    scope_id: ev.scope_id,
                },
                abi::AF_UNIX => SocketAddress::Unix,
                af => SocketAddress::Other { af },
            };
            Ok(with_origin(
                Event {
                    timestamp: timestamp(ev.timestamp_ns),
                    // The cgroup hooks cannot read the parent.
                    process: process(ev.pid, ev.tid, 0, ev.uid, &ev.comm),
                    cgroup_id: ev.cgroup_id,
                    container: None,
                    body: Body::SocketConnect {
                        address,
                        socket_type: SocketType::from_raw(ev.sock_type),
                    },
                },
                ev.origin_cgroup_id,
            ))
        }
        abi::KIND_CGROUP_RMDIR | abi::KIND_CGROUP_MKDIR => {
            let ev: abi::CgroupRmdirEvent = read_pod(record).context("cgroup record too short")?;
            let path = &record[size_of::<abi::CgroupRmdirEvent>()..];
            let path = path
                .get(..ev.path_len as usize)
                .context("cgroup record path length exceeds the record")?;
            let (cgroup_id, path) = (ev.cgroup_id, c_string(path));
            Ok(if header.kind == abi::KIND_CGROUP_MKDIR {
                ProbeEvent::CgroupCreated { cgroup_id, path }
            } else {
                ProbeEvent::CgroupRemoved { cgroup_id, path }
            })
        }
        kind => bail!("unknown record kind {kind}"),
    }
}

/// The cgroup of an exec record that counted in the kernel's `ISSUED` (see
/// [`abi::EXEC_DISARMED`]).
pub(super) fn disarmed_exec(record: &[u8]) -> Option<u64> {
    let header: abi::RecordHeader = read_pod(record)?;
    if header.kind != abi::KIND_EXEC || header.version != abi::RECORD_VERSION {
        return None;
    }
    let ev: abi::ExecEvent = read_pod(record)?;
    (ev.flags & abi::EXEC_DISARMED != 0).then_some(ev.cgroup_id)
}

/// Who caused a record's event (lineage is marked later, by the resolver).
fn process(pid: u32, tid: u32, ppid: u32, uid: u32, comm: &[u8]) -> Process {
    Process {
        pid,
        tid,
        ppid,
        uid,
        comm: c_string(comm).into(),
        left_container_cgroup: false,
    }
}

/// An event whose process came from another cgroup is told apart, for the resolver.
fn with_origin(event: Event, origin_cgroup_id: u64) -> ProbeEvent {
    match origin_cgroup_id {
        0 => ProbeEvent::Event(event),
        origin_cgroup_id => ProbeEvent::Escaped {
            event,
            origin_cgroup_id,
        },
    }
}

/// Marker for the shared `#[repr(C)]` layouts, which are integers and integer arrays
/// only, so any bytes are a valid value.
pub(super) trait Pod: Copy {}
impl Pod for abi::RecordHeader {}
impl Pod for abi::ExecEvent {}
impl Pod for abi::ConnectEvent {}
impl Pod for abi::CgroupRmdirEvent {}

pub(super) fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; `T: Pod` accepts any bit pattern; unaligned read.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Bytes up to the first NUL (or all of them), lossily as UTF-8.
pub(super) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
