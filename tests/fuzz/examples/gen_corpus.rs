//! Writes the `ring_decoder` seed corpus: ring-buffer records laid out with the shared
//! `rulehost-ebpf-common` structs, as the eBPF programs emit them, plus a few malformed
//! ones the decoder must reject. Every valid seed is checked to decode first.
//!
//! Run once after a layout change, then commit the output:
//!
//! ```sh
//! cd tests/fuzz && cargo run --example gen_corpus -- corpus/ring_decoder
//! ```

use rulehost::sensor::{ProbeEvent, decode_with_clock};
use rulehost_ebpf_common as abi;
use std::mem::size_of;
use std::path::PathBuf;

/// The shared layouts: `#[repr(C)]` integers and byte arrays with explicit padding.
trait Layout: Copy {}
impl Layout for abi::ExecEvent {}
impl Layout for abi::ConnectEvent {}
impl Layout for abi::CgroupRmdirEvent {}

fn bytes_of<T: Layout>(value: &T) -> Vec<u8> {
    // SAFETY: `T` is plain `#[repr(C)]` data without implicit padding, so all of its
    // bytes are initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn header(kind: u16, len: usize) -> abi::RecordHeader {
    abi::RecordHeader {
        kind,
        version: abi::RECORD_VERSION,
        len: len as u32,
    }
}

fn comm(name: &[u8]) -> [u8; abi::COMM_LEN] {
    let mut comm = [0; abi::COMM_LEN];
    let n = name.len().min(abi::COMM_LEN);
    comm[..n].copy_from_slice(&name[..n]);
    comm
}

/// Pads to the 8-byte multiple the kernel reserves (the header keeps the real length).
fn pad8(mut record: Vec<u8>) -> Vec<u8> {
    record.resize(record.len().next_multiple_of(8), 0);
    record
}

struct Exec<'a> {
    flags: u32,
    comm: &'a [u8],
    filename: &'a [u8],
    argv: &'a [u8],
    env: &'a [u8],
}

fn exec(e: Exec) -> Vec<u8> {
    let len = size_of::<abi::ExecEvent>() + e.filename.len() + e.argv.len() + e.env.len();
    let fixed = abi::ExecEvent {
        header: header(abi::KIND_EXEC, len),
        timestamp_ns: 812_345_678_901,
        cgroup_id: 11847,
        pid: 4242,
        tid: 4243,
        ppid: if e.flags & abi::EXEC_NO_MM != 0 {
            0
        } else {
            4200
        },
        uid: 1000,
        flags: e.flags,
        filename_len: e.filename.len() as u16,
        argv_len: e.argv.len() as u16,
        env_len: e.env.len() as u16,
        _pad: [0; 6],
        comm: comm(e.comm),
    };
    let mut record = bytes_of(&fixed);
    record.extend_from_slice(e.filename);
    record.extend_from_slice(e.argv);
    record.extend_from_slice(e.env);
    pad8(record)
}

fn connect(
    family: u16,
    addr: &[u8],
    port: u16,
    sock_type: u32,
    flowinfo: u32,
    scope_id: u32,
) -> Vec<u8> {
    let mut address = [0; 16];
    address[..addr.len()].copy_from_slice(addr);
    bytes_of(&abi::ConnectEvent {
        header: header(abi::KIND_CONNECT, size_of::<abi::ConnectEvent>()),
        timestamp_ns: 812_345_999_000,
        cgroup_id: 11847,
        pid: 4242,
        tid: 4242,
        uid: 0,
        sock_type,
        flowinfo,
        scope_id,
        family,
        port,
        _pad: 0,
        addr: address,
        comm: comm(b"curl"),
    })
}

fn cgroup(kind: u16, path: &[u8]) -> Vec<u8> {
    let fixed = abi::CgroupRmdirEvent {
        header: header(kind, size_of::<abi::CgroupRmdirEvent>() + path.len()),
        timestamp_ns: 812_000_000_000,
        cgroup_id: 11847,
        path_len: path.len() as u16,
        _pad: [0; 6],
    };
    let mut record = bytes_of(&fixed);
    record.extend_from_slice(path);
    pad8(record)
}

const ID: &str = "3b1f0c7e9d2a4b6c8e0f1a3b5c7d9e1f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c0d";
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_NONBLOCK_CLOEXEC: u32 = 0o4000 | 0o2000000;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: gen_corpus DIR"));
    std::fs::create_dir_all(&dir).unwrap();

    let pod = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod4f1d2c3b_8a9e_4b7c_9d6e_1a2b3c4d5e6f.slice";
    let containerd = format!("{pod}/cri-containerd-{ID}.scope\0");
    let docker = format!("/system.slice/docker-{ID}.scope\0");
    let long_path = format!("{pod}/{}", "x".repeat(abi::CGROUP_PATH_MAX)).into_bytes();
    let long_argv: Vec<u8> = (0..200)
        .flat_map(|i| format!("arg{i}\0").into_bytes())
        .collect();

    let valid: Vec<(&str, Vec<u8>)> = vec![
        (
            "exec-curl-k8s-env",
            exec(Exec {
                flags: 0,
                comm: b"curl",
                filename: b"/usr/bin/curl\0",
                argv: b"curl\0-sk\0https://10.96.0.1:443/api\0",
                env: b"KUBERNETES_SERVICE_HOST=10.96.0.1\0",
            }),
        ),
        (
            "exec-two-env",
            exec(Exec {
                flags: 0,
                comm: b"sh",
                filename: b"/bin/sh\0",
                argv: b"sh\0-c\0wget -qO- $KUBERNETES_SERVICE_HOST\0",
                env: b"KUBERNETES_SERVICE_HOST=fd00::1\0KUBERNETES_SERVICE_PORT=443\0",
            }),
        ),
        (
            "exec-no-mm",
            exec(Exec {
                flags: abi::EXEC_NO_MM,
                comm: b"kworker/u8:2",
                filename: b"/sbin/modprobe\0",
                argv: b"",
                env: b"",
            }),
        ),
        (
            "exec-truncated",
            exec(Exec {
                flags: abi::EXEC_FILENAME_TRUNCATED
                    | abi::EXEC_ARGV_TRUNCATED
                    | abi::EXEC_ENV_TRUNCATED
                    | abi::EXEC_ENV_INCOMPLETE,
                comm: b"a-sixteen-byte-c",
                filename: &[b'/'; 64],
                argv: &long_argv[..long_argv.len() - 3],
                env: b"KUBERNETES_SERVICE_HOST=10.9",
            }),
        ),
        (
            "exec-non-utf8",
            exec(Exec {
                flags: 0,
                comm: b"\xff\xfeevil",
                filename: b"/tmp/\xc3\x28\0",
                argv: b"\xe2\x82\0\0x\0",
                env: b"KUBERNETES_SERVICE_HOST=\x80\0",
            }),
        ),
        (
            "connect-ipv4",
            connect(abi::AF_INET, &[10, 96, 0, 1], 443, SOCK_STREAM, 0, 0),
        ),
        (
            "connect-ipv4-flags",
            connect(
                abi::AF_INET,
                &[169, 254, 169, 254],
                80,
                SOCK_STREAM | SOCK_NONBLOCK_CLOEXEC,
                0,
                0,
            ),
        ),
        (
            "connect-ipv6-mapped",
            connect(
                abi::AF_INET6,
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 96, 0, 1],
                443,
                SOCK_STREAM,
                0,
                0,
            ),
        ),
        (
            "connect-ipv6-scoped",
            connect(
                abi::AF_INET6,
                &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                6443,
                SOCK_DGRAM,
                0x12345,
                2,
            ),
        ),
        (
            "connect-unix",
            connect(abi::AF_UNIX, &[], 0, SOCK_STREAM, 0, 0),
        ),
        ("connect-netlink", connect(16, &[], 0, 3, 0, 0)),
        (
            "cgroup-mkdir-containerd",
            cgroup(abi::KIND_CGROUP_MKDIR, containerd.as_bytes()),
        ),
        (
            "cgroup-rmdir-docker",
            cgroup(abi::KIND_CGROUP_RMDIR, docker.as_bytes()),
        ),
        (
            "cgroup-rmdir-truncated",
            cgroup(abi::KIND_CGROUP_RMDIR, &long_path[..abi::CGROUP_PATH_MAX]),
        ),
        ("cgroup-mkdir-empty", cgroup(abi::KIND_CGROUP_MKDIR, b"")),
    ];

    for (name, record) in &valid {
        let event = decode_with_clock(record, 1_732_000_000_000_000_000)
            .unwrap_or_else(|e| panic!("{name} does not decode: {e:#}"));
        if let ProbeEvent::Event(event) = &event {
            assert_eq!(event.process.pid, 4242, "{name}");
        }
        std::fs::write(dir.join(name), record).unwrap();
    }

    // Malformed records the decoder must reject (with an error, not a panic).
    let mut bad_version = valid[0].1.clone();
    bad_version[2..4].copy_from_slice(&2u16.to_ne_bytes());
    let mut unknown_kind = valid[5].1.clone();
    unknown_kind[0..2].copy_from_slice(&9u16.to_ne_bytes());
    let mut overlong = valid[5].1.clone();
    overlong[4..8].copy_from_slice(&4096u32.to_ne_bytes());
    let mut payload_overflow = valid[0].1.clone();
    let argv_len = std::mem::offset_of!(abi::ExecEvent, argv_len);
    payload_overflow[argv_len..argv_len + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
    let mut path_overflow = valid[12].1.clone();
    let path_len = std::mem::offset_of!(abi::CgroupRmdirEvent, path_len);
    path_overflow[path_len..path_len + 2].copy_from_slice(&300u16.to_ne_bytes());
    let short_exec = {
        let mut r = valid[0].1[..size_of::<abi::ExecEvent>() - 8].to_vec();
        let len = r.len() as u32;
        r[4..8].copy_from_slice(&len.to_ne_bytes());
        r
    };
    let invalid: Vec<(&str, Vec<u8>)> = vec![
        ("bad-version", bad_version),
        ("bad-unknown-kind", unknown_kind),
        ("bad-len-past-end", overlong),
        ("bad-exec-payload-lengths", payload_overflow),
        ("bad-cgroup-path-len", path_overflow),
        ("bad-exec-short", short_exec),
        ("bad-header-only", valid[5].1[..6].to_vec()),
    ];
    for (name, record) in &invalid {
        if let Ok(event) = decode_with_clock(record, 0) {
            panic!("{name} decodes: {event:?}");
        }
        std::fs::write(dir.join(name), record).unwrap();
    }
    println!(
        "wrote {} seeds to {}",
        valid.len() + invalid.len(),
        dir.display()
    );
}
