//! The one event type every source decodes into: live kernel events (`probes`),
//! rulehost's own recorded JSON lines, and Tracee's `-o json` output (`replay`).

pub mod parse;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A task's command name, as the kernel keeps it (at most 15 bytes), stored inline so an
/// event costs no allocation for it. Longer input is cut at a character boundary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    len: u8,
    bytes: [u8; Comm::MAX],
}

impl Comm {
    /// The kernel's TASK_COMM_LEN less the NUL.
    pub const MAX: usize = 15;

    pub fn new(text: &str) -> Comm {
        let mut end = text.len().min(Comm::MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; Comm::MAX];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        Comm {
            len: end as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // Built only from a &str cut at a character boundary.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl From<&str> for Comm {
    fn from(text: &str) -> Comm {
        Comm::new(text)
    }
}

impl From<String> for Comm {
    fn from(text: String) -> Comm {
        Comm::new(&text)
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Comm {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Comm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Comm, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Comm::new(&text))
    }
}

/// Container runtime, as told by a cgroup path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerRuntime {
    Docker,
    Containerd,
    Crio,
    Podman,
    Kubernetes,
    #[default]
    Unknown,
}

/// The Kubernetes pod a container belongs to: what an operator needs to find it, and
/// what exceptions match on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pod {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The container a process runs in: its id and runtime from the cgroup path, and what
/// else is known about it (from the runtime, or a recording), absent when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    /// Full container id.
    pub id: String,
    pub runtime: ContainerRuntime,
    /// The container's name (`docker run --name`, the pod spec's container name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image it was started from, as the runtime names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's content digest, where the runtime gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Its pod, for a Kubernetes container (the uid alone when only the cgroup path
    /// told it). Kept here because every event of a container shares it; in JSON it is
    /// the event's own `pod` object, beside `container`.
    #[serde(skip)]
    pub pod: Option<Pod>,
}

impl Container {
    /// A container known only by id and runtime.
    pub fn new(id: impl Into<String>, runtime: ContainerRuntime) -> Container {
        Container {
            id: id.into(),
            runtime,
            ..Container::default()
        }
    }
}

/// Who caused an event. Ids are from the host's pid namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    /// Parent process id; 0, and omitted from JSON, where the hook cannot read it
    /// (connects seen by cgroup/connect programs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ppid: u32,
    pub uid: u32,
    /// Command name (at most 15 bytes in the kernel).
    pub comm: Comm,
    /// The process, or an ancestor, left its container's cgroup, and the event is
    /// attributed to the container its lineage started in: a strong signal by itself
    /// (only a privileged container can do it). Omitted from JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left_container_cgroup: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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

/// Which parts of an exec event were cut short at capture (bounded kernel buffers, an
/// oversized environment, a process gone before it could be read). Marked, never silent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filename: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv: bool,
    /// A captured env entry or the captured set was longer than the bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub env: bool,
    /// The environment was too large to scan completely: a wanted entry may be missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub env_incomplete: bool,
    /// The wanted env entries were read from `/proc/<pid>/environ` after the exec,
    /// because the kernel could not walk the environment: what the process had then,
    /// not necessarily at exec.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub env_from_proc: bool,
}

impl Truncation {
    pub fn is_complete(&self) -> bool {
        *self == Truncation::default()
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
        /// What capture had to cut short; absent when the event is complete.
        #[serde(default, skip_serializing_if = "Truncation::is_complete")]
        truncated: Truncation,
    },
    /// `security_socket_connect`.
    SocketConnect {
        address: SocketAddress,
        socket_type: SocketType,
    },
}

/// One event, whatever its source. This is also rulehost's own JSON-lines event format
/// (`run --record` writes it, `replay` reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: u64,
    pub process: Process,
    /// Kernel cgroup id (cgroup v2 inode) of the process, 0 when unknown.
    pub cgroup_id: u64,
    /// `None` for host processes. Shared: every event of a container points at one copy.
    pub container: Option<Arc<Container>>,
    pub body: Body,
}

/// An event as JSON writes it: the container's pod is lifted to a top-level `pod`
/// object, where Tracee and Falco users look for it.
#[derive(Serialize)]
struct EventJsonRef<'a> {
    timestamp: u64,
    process: &'a Process,
    cgroup_id: u64,
    container: Option<&'a Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a Pod>,
    #[serde(flatten)]
    body: &'a Body,
}

/// An event as JSON reads it; the inverse of [`EventJsonRef`].
#[derive(Deserialize)]
struct EventJson {
    timestamp: u64,
    process: Process,
    #[serde(default)]
    cgroup_id: u64,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    pod: Option<Pod>,
    #[serde(flatten)]
    body: Body,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let container = self.container.as_deref();
        EventJsonRef {
            timestamp: self.timestamp,
            process: &self.process,
            cgroup_id: self.cgroup_id,
            container,
            pod: container.and_then(|c| c.pod.as_ref()),
            body: &self.body,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        let json = EventJson::deserialize(deserializer)?;
        if json.pod.is_some() && json.container.is_none() {
            return Err(serde::de::Error::custom("`pod` given without `container`"));
        }
        let container = json.container.map(|mut container| {
            container.pod = json.pod;
            Arc::new(container)
        });
        Ok(Event {
            timestamp: json.timestamp,
            process: json.process,
            cgroup_id: json.cgroup_id,
            container,
            body: json.body,
        })
    }
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

/// The wall clock in nanoseconds since the Unix epoch: events' timescale.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// NUL-separated strings (argv, environ), lossily as UTF-8; a trailing NUL does not
/// make an empty last element, empty ones inside are kept (`sh -c ""`).
pub(crate) fn nul_separated(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_bounded_at_a_char_boundary() {
        assert_eq!(Comm::new("curl").as_str(), "curl");
        assert_eq!(
            Comm::new("a-very-long-command-name").as_str(),
            "a-very-long-com"
        );
        // 'é' is two bytes: 14 ASCII + 'é' would end at byte 16, so it is dropped.
        assert_eq!(Comm::new("abcdefghijklmné").as_str(), "abcdefghijklmn");
        let json = serde_json::to_string(&Comm::new("sh")).unwrap();
        assert_eq!(json, "\"sh\"");
        assert_eq!(serde_json::from_str::<Comm>(&json).unwrap(), "sh");
    }

    #[test]
    fn the_pod_is_written_beside_the_container_and_read_back_into_it() {
        let container = Container {
            pod: Some(Pod {
                name: "api-client".into(),
                namespace: "team-a".into(),
                ..Pod::default()
            }),
            ..Container::new("ab".repeat(32), ContainerRuntime::Containerd)
        };
        let event = Event {
            timestamp: 1,
            process: Process::default(),
            cgroup_id: 7,
            container: Some(Arc::new(container)),
            body: Body::SocketConnect {
                address: SocketAddress::Unix,
                socket_type: SocketType::Stream,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["pod"]["namespace"], "team-a", "{json}");
        assert!(json["container"].get("pod").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);

        let orphan = serde_json::json!({"timestamp": 1, "process": {"pid": 1, "tid": 1,
            "uid": 0, "comm": "sh"}, "pod": {"name": "p"}, "type": "socket_connect",
            "address": {"family": "unix"}, "socket_type": "stream"});
        let err = serde_json::from_value::<Event>(orphan).unwrap_err();
        assert!(err.to_string().contains("without `container`"), "{err}");
    }
}
