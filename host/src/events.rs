//! The one event type every source decodes into: live kernel events (`probes`),
//! rulehost's own recorded JSON lines, and Tracee's `-o json` output (`replay`).

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Container runtime, as told by a cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
    Kubernetes,
    Unknown,
}

/// The container a process runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    /// Full container id.
    pub id: String,
    pub runtime: Runtime,
}

/// Who caused an event. Ids are from the host's pid namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Command name (at most 15 bytes in the kernel).
    pub comm: String,
}

/// Socket type of a connecting socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketType {
    Stream,
    Datagram,
    Seqpacket,
    Raw,
    Other,
}

impl SocketType {
    /// Maps a kernel `SOCK_*` number (flags masked off).
    pub fn from_raw(raw: u32) -> SocketType {
        match raw & 0xf {
            1 => SocketType::Stream,
            2 => SocketType::Datagram,
            3 => SocketType::Raw,
            5 => SocketType::Seqpacket,
            _ => SocketType::Other,
        }
    }
}

/// Destination of a connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum SocketAddress {
    Ipv4 {
        ip: Ipv4Addr,
        port: u16,
    },
    Ipv6 {
        ip: Ipv6Addr,
        port: u16,
        #[serde(default)]
        flow_info: u32,
        #[serde(default)]
        scope_id: u32,
    },
    Unix,
    Other {
        af: u16,
    },
}

impl SocketAddress {
    /// The IP address and port, for the IP families.
    pub fn ip_port(&self) -> Option<(IpAddr, u16)> {
        match *self {
            SocketAddress::Ipv4 { ip, port } => Some((IpAddr::V4(ip), port)),
            SocketAddress::Ipv6 { ip, port, .. } => Some((IpAddr::V6(ip), port)),
            _ => None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// `sched_process_exec`.
    ProcessExec {
        filename: String,
        #[serde(default)]
        argv: Vec<String>,
        /// Captured environment entries (`NAME=value`); live capture holds only the
        /// names some rule asked for.
        #[serde(default)]
        env: Vec<String>,
        /// Synthesised from a running process rather than seen at exec.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        synthetic: bool,
    },
    /// `security_socket_connect`.
    SocketConnect {
        address: SocketAddress,
        socket_type: SocketType,
    },
}

/// One event, whatever its source. This is also rulehost's own JSON-lines event format
/// (`run --record` writes it, `replay` reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: u64,
    pub process: Process,
    /// Kernel cgroup id (cgroup v2 inode) of the process, 0 when unknown.
    #[serde(default)]
    pub cgroup_id: u64,
    /// `None` for host processes.
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(flatten)]
    pub body: Body,
}

impl Event {
    /// The event kind, as rules select it.
    pub fn kind(&self) -> EventKind {
        match self.body {
            Body::ProcessExec { .. } => EventKind::ProcessExec,
            Body::SocketConnect { .. } => EventKind::SocketConnect,
        }
    }
}

/// Event kinds a rule can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ProcessExec,
    SocketConnect,
}

impl EventKind {
    /// Tracee's event name, used in output.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ProcessExec => "sched_process_exec",
            EventKind::SocketConnect => "security_socket_connect",
        }
    }
}
