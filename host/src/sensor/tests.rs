//! Unit tests of decoding, configuration, offsets and mounts (no kernel needed).

use super::decode::*;
use super::*;

fn bytes_of<T: Pod>(value: &T) -> Vec<u8> {
    // SAFETY: `T: Pod` is plain data with explicit padding; reading its bytes is fine.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn comm(name: &str) -> [u8; abi::COMM_LEN] {
    let mut comm = [0; abi::COMM_LEN];
    comm[..name.len()].copy_from_slice(name.as_bytes());
    comm
}

fn exec_record() -> Vec<u8> {
    let filename = b"/usr/bin/curl\0";
    let argv = b"curl\0-s\0https://kubernetes.default.svc\0";
    let env = b"KUBERNETES_SERVICE_HOST=10.96.0.1\0";
    let len = size_of::<abi::ExecEvent>() + filename.len() + argv.len() + env.len();
    let ev = abi::ExecEvent {
        header: abi::RecordHeader {
            kind: abi::KIND_EXEC,
            version: abi::RECORD_VERSION,
            len: len as u32,
        },
        timestamp_ns: 5_000,
        cgroup_id: 4242,
        origin_cgroup_id: 0,
        pid: 100,
        tid: 100,
        ppid: 1,
        uid: 1000,
        flags: 0,
        filename_len: filename.len() as u16,
        argv_len: argv.len() as u16,
        env_len: env.len() as u16,
        _pad: [0; 6],
        comm: comm("curl"),
    };
    let mut record = bytes_of(&ev);
    record.extend_from_slice(filename);
    record.extend_from_slice(argv);
    record.extend_from_slice(env);
    record
}

fn connect_record(family: u16, addr: [u8; 16], port: u16) -> Vec<u8> {
    connect_record_from(0, family, addr, port)
}

fn connect_record_from(origin: u64, family: u16, addr: [u8; 16], port: u16) -> Vec<u8> {
    bytes_of(&abi::ConnectEvent {
        header: abi::RecordHeader {
            kind: abi::KIND_CONNECT,
            version: abi::RECORD_VERSION,
            len: size_of::<abi::ConnectEvent>() as u32,
        },
        timestamp_ns: 7,
        cgroup_id: 9,
        origin_cgroup_id: origin,
        pid: 10,
        tid: 11,
        uid: 12,
        sock_type: 1,
        flowinfo: 3,
        scope_id: 4,
        family,
        port,
        _pad: 0,
        addr,
        comm: comm("curl"),
    })
}

#[test]
fn a_connect_from_a_process_that_left_its_cgroup_names_where_it_came_from() {
    let record = connect_record_from(
        77,
        abi::AF_INET,
        [10, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        443,
    );
    match decode_with_clock(&record, 0).unwrap() {
        ProbeEvent::Escaped {
            event,
            origin_cgroup_id,
        } => {
            assert_eq!((origin_cgroup_id, event.cgroup_id), (77, 9));
            assert!(
                !event.process.left_container_cgroup,
                "set only once resolved"
            );
        }
        other => panic!("not an escaped event: {other:?}"),
    }
}

#[test]
fn decodes_an_exec_record() {
    let event = decode_with_clock(&exec_record(), 1_000_000).unwrap();
    let ProbeEvent::Event(event) = event else {
        panic!("not an event: {event:?}")
    };
    assert_eq!(event.timestamp, 1_005_000);
    assert_eq!(event.cgroup_id, 4242);
    assert_eq!(event.container, None);
    assert_eq!(
        event.process,
        Process {
            pid: 100,
            tid: 100,
            ppid: 1,
            uid: 1000,
            comm: "curl".into(),
            ..Process::default()
        }
    );
    assert_eq!(
        event.body,
        Body::ProcessExec {
            filename: "/usr/bin/curl".into(),
            argv: vec![
                "curl".into(),
                "-s".into(),
                "https://kubernetes.default.svc".into()
            ],
            env: vec!["KUBERNETES_SERVICE_HOST=10.96.0.1".into()],
            synthetic: false,
            truncated: Truncation::default(),
        }
    );
}

#[test]
fn decodes_truncated_argv_without_trailing_nul() {
    // argv cut mid-argument, as when it exceeds EXEC_ARGV_MAX.
    let mut record = exec_record();
    let hdr = size_of::<abi::ExecEvent>();
    let ev: abi::ExecEvent = read_pod(&record).unwrap();
    let f = ev.filename_len as usize;
    record.truncate(hdr + f);
    let argv = b"curl\0-s\0https://kube";
    record.extend_from_slice(argv);
    let mut ev = ev;
    ev.argv_len = argv.len() as u16;
    ev.env_len = 0;
    ev.flags = abi::EXEC_ARGV_TRUNCATED;
    ev.header.len = record.len() as u32;
    record[..hdr].copy_from_slice(&bytes_of(&ev));
    let ProbeEvent::Event(event) = decode_with_clock(&record, 0).unwrap() else {
        panic!()
    };
    let Body::ProcessExec { argv, env, .. } = event.body else {
        panic!()
    };
    assert_eq!(argv, ["curl", "-s", "https://kube"]);
    assert!(env.is_empty());
}

#[test]
fn decodes_connect_records() {
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&[10, 96, 0, 1]);
    let ProbeEvent::Event(event) =
        decode_with_clock(&connect_record(abi::AF_INET, v4, 443), 0).unwrap()
    else {
        panic!()
    };
    assert_eq!(event.timestamp, 7);
    assert_eq!(event.process.pid, 10);
    assert_eq!(event.process.tid, 11);
    assert_eq!(event.process.uid, 12);
    assert_eq!(event.process.comm, "curl");
    assert_eq!(
        event.body,
        Body::SocketConnect {
            address: SocketAddress::Ipv4 {
                ip: Ipv4Addr::new(10, 96, 0, 1),
                port: 443
            },
            socket_type: SocketType::Stream,
        }
    );

    let mapped: Ipv6Addr = "::ffff:10.96.0.1".parse().unwrap();
    let ProbeEvent::Event(event) =
        decode_with_clock(&connect_record(abi::AF_INET6, mapped.octets(), 6443), 0).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        event.body,
        Body::SocketConnect {
            address: SocketAddress::Ipv6 {
                ip: mapped,
                port: 6443,
                flow_info: 3,
                scope_id: 4
            },
            socket_type: SocketType::Stream,
        }
    );

    let ProbeEvent::Event(unix) =
        decode_with_clock(&connect_record(abi::AF_UNIX, [0; 16], 0), 0).unwrap()
    else {
        panic!()
    };
    assert!(matches!(
        unix.body,
        Body::SocketConnect {
            address: SocketAddress::Unix,
            ..
        }
    ));
    let ProbeEvent::Event(other) = decode_with_clock(&connect_record(16, [0; 16], 0), 0).unwrap()
    else {
        panic!()
    };
    assert!(matches!(
        other.body,
        Body::SocketConnect {
            address: SocketAddress::Other { af: 16 },
            ..
        }
    ));
}

#[test]
fn decodes_a_cgroup_removal() {
    let path = b"/kubepods/besteffort/pod1234\0";
    let len = size_of::<abi::CgroupRmdirEvent>() + path.len();
    let mut record = bytes_of(&abi::CgroupRmdirEvent {
        header: abi::RecordHeader {
            kind: abi::KIND_CGROUP_RMDIR,
            version: abi::RECORD_VERSION,
            len: len as u32,
        },
        timestamp_ns: 1,
        cgroup_id: 777,
        path_len: path.len() as u16,
        _pad: [0; 6],
    });
    record.extend_from_slice(path);
    assert_eq!(
        decode(&record).unwrap(),
        ProbeEvent::CgroupRemoved {
            cgroup_id: 777,
            path: "/kubepods/besteffort/pod1234".into()
        }
    );
}

#[test]
fn rejects_truncated_records() {
    let records = [
        exec_record(),
        connect_record(
            abi::AF_INET,
            [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            80,
        ),
    ];
    for record in records {
        assert!(decode(&record).is_ok());
        for cut in 0..record.len() {
            assert!(
                decode(&record[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }
}

#[test]
fn rejects_bad_kinds_versions_and_lengths() {
    let mut record = exec_record();
    record[0..2].copy_from_slice(&99u16.to_ne_bytes());
    let error = decode(&record).unwrap_err().to_string();
    assert!(error.contains("unknown record kind 99"), "{error}");

    let mut record = exec_record();
    record[2..4].copy_from_slice(&7u16.to_ne_bytes());
    assert!(decode(&record).unwrap_err().to_string().contains("version"));

    // Header length shorter than the fixed part.
    let mut record = exec_record();
    record[4..8].copy_from_slice(&16u32.to_ne_bytes());
    assert!(decode(&record).is_err());

    // Payload lengths larger than the record.
    let mut record = exec_record();
    let mut ev: abi::ExecEvent = read_pod(&record).unwrap();
    ev.env_len = 4000;
    record[..size_of::<abi::ExecEvent>()].copy_from_slice(&bytes_of(&ev));
    assert!(decode(&record).unwrap_err().to_string().contains("exceed"));

    assert!(decode(&[]).is_err());
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = exec_record();
    for _ in 0..20_000 {
        let mut record = base.clone();
        for _ in 0..(next() % 8) {
            let at = (next() as usize) % record.len();
            record[at] = next() as u8;
        }
        record.truncate((next() as usize) % (record.len() + 1));
        let _ = decode_with_clock(&record, i64::MAX);
        let _ = decode_with_clock(&record, i64::MIN);
    }
}

fn build_config_default(cfg: &ProbeConfig) -> Result<abi::Config> {
    build_config(cfg, abi::EVENTS_BYTES)
}

#[test]
fn probes_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Probes>();
    send::<ProbeEvent>();
}

#[test]
fn config_validation() {
    let cfg = |names: &[&str]| ProbeConfig {
        env_vars: names.iter().map(|s| s.to_string()).collect(),
        ..ProbeConfig::default()
    };
    let config = build_config(
        &cfg(&["HOME", "PATH", "KUBERNETES_SERVICE_HOST"]),
        abi::EVENTS_BYTES,
    )
    .unwrap();
    assert_eq!(config.env_names, 3);
    assert_eq!(config.env_name_lens, [4, 4, 23, 0, 0, 0, 0, 0]);
    assert_eq!(
        config.env_name_words[2],
        abi::env_name_words(b"KUBERNETES_SERVICE_HOST")
    );
    assert_eq!(config.env_name_masks[2], abi::env_name_masks(23));
    assert_eq!(config.wakeup_bytes, WAKEUP_BYTES);
    assert!(build_config_default(&cfg(&["A=B"])).is_err());
    assert!(build_config_default(&cfg(&[""])).is_err());
    assert!(build_config_default(&cfg(&["X", "X"])).is_err());
    assert!(build_config_default(&cfg(&[&"N".repeat(64)])).is_err());
    assert!(build_config_default(&cfg(&["A", "B", "C", "D", "E", "F", "G", "H", "I"])).is_err());
}

#[test]
fn parses_tracepoint_formats() {
    let format = "name: cgroup_rmdir\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int root;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;\n";
    assert_eq!(tracepoint_field_offset(format, "root"), Some(8));
    assert_eq!(tracepoint_field_offset(format, "id"), Some(16));
    assert_eq!(tracepoint_field_offset(format, "path"), Some(24));
    assert_eq!(tracepoint_field_offset(format, "level"), None);
}

/// A tiny BTF blob: `struct outer { int a; union { long b; int c; }; }` plus a
/// typedef chain, to check member lookup through anonymous members.
#[test]
fn finds_btf_members_through_anonymous_unions() {
    let strings = b"\0int\0long\0outer\0a\0b\0c\0";
    let name = |s: &str| {
        strings
            .windows(s.len() + 2)
            .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
            .unwrap() as u32
            + 1
    };
    let mut types = Vec::new();
    let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
    // 1: int (INT, 4 bytes)
    push(&[name("int"), 1 << 24, 4, 32]);
    // 2: long (INT, 8 bytes)
    push(&[name("long"), 1 << 24, 8, 64]);
    // 3: anonymous union { long b; int c; }
    push(&[0, (5 << 24) | 2, 8, name("b"), 2, 0, name("c"), 1, 0]);
    // 4: const of 3
    push(&[0, 10 << 24, 3]);
    // 5: struct outer { int a; <anon> at 64 bits }
    push(&[name("outer"), (4 << 24) | 2, 16, name("a"), 1, 0, 0, 4, 64]);
    let mut blob = Vec::new();
    for w in [
        0x0001_eb9fu32,
        24,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        blob.extend(w.to_le_bytes());
    }
    blob.extend(&types);
    blob.extend(strings);
    let btf = KernelBtf::parse(&blob).unwrap();
    assert_eq!(btf.member_offset("outer", "a"), Some(0));
    assert_eq!(btf.member_offset("outer", "b"), Some(8));
    assert_eq!(btf.member_offset("outer", "c"), Some(8));
    assert_eq!(btf.member_offset("outer", "d"), None);
    assert_eq!(btf.member_offset("nope", "a"), None);
    assert!(KernelBtf::parse(&blob[..30]).is_err());
}
