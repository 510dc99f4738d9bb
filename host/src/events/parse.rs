//! Reading recorded events: rulehost's own JSON lines (what `run --record` writes) and
//! Tracee's `-o json` output (v0.24), decoded into the same [`Event`] live probes give.

use crate::events::{
    Body, Container, ContainerRuntime, Event, Pod, Process, SocketAddress, SocketType, Truncation,
};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// What one input line held.
#[derive(Debug, PartialEq)]
pub enum Line {
    Event(Box<Event>),
    /// Well-formed, but not an event any rule can select (e.g. a Tracee finding).
    Ignored(String),
    Blank,
}

/// Parses one line of either format.
pub fn parse_line(line: &str) -> Result<Line> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Line::Blank);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    if value.get("eventName").is_some() {
        return tracee(&value);
    }
    if value.get("type").is_some() {
        let event: Event =
            serde_json::from_value(value).map_err(|e| anyhow!("not a rulehost event: {e}"))?;
        return Ok(Line::Event(Box::new(event)));
    }
    bail!("neither a rulehost event (no \"type\") nor a Tracee event (no \"eventName\")")
}

fn tracee(value: &Value) -> Result<Line> {
    let name = str_field(value, "eventName")?;
    // Tracee pads an env it had to cut (past 8191 bytes) with "?" entries.
    let (env, env_padded) = if name == "sched_process_exec" {
        let mut env = string_list(arg(value, "env"), "env")?;
        let before = env.len();
        env.retain(|entry| entry != "?");
        let padded = env.len() != before;
        (env, padded)
    } else {
        (Vec::new(), false)
    };
    let body = match name {
        "sched_process_exec" => Body::ProcessExec {
            filename: arg(value, "pathname")
                .or_else(|| arg(value, "cmdpath"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            argv: string_list(arg(value, "argv"), "argv")?,
            env: env.clone(),
            synthetic: false,
            truncated: Truncation {
                env: env_padded,
                ..Truncation::default()
            },
        },
        "security_socket_connect" => {
            let remote = arg(value, "remote_addr").context("no remote_addr argument")?;
            Body::SocketConnect {
                address: tracee_sockaddr(remote)?,
                socket_type: SocketType::from_raw(
                    arg(value, "type").and_then(Value::as_u64).unwrap_or(0) as u32,
                ),
            }
        }
        other => return Ok(Line::Ignored(other.to_owned())),
    };
    let container_id = value
        .pointer("/container/id")
        .and_then(Value::as_str)
        .or_else(|| value.get("containerId").and_then(Value::as_str))
        .unwrap_or_default();
    let container =
        (!container_id.is_empty()).then(|| Arc::new(tracee_container(value, container_id)));
    Ok(Line::Event(Box::new(Event {
        timestamp: u64_field(value, "timestamp")?,
        process: Process {
            pid: u32_field(value, "hostProcessId")?,
            tid: u32_field(value, "hostThreadId").unwrap_or(0),
            ppid: u32_field(value, "hostParentProcessId").unwrap_or(0),
            uid: u32_field(value, "userId").unwrap_or(0),
            comm: str_field(value, "processName").unwrap_or("").into(),
            ..Process::default()
        },
        cgroup_id: value.get("cgroupId").and_then(Value::as_u64).unwrap_or(0),
        container,
        body,
    })))
}

/// A Tracee event's container and pod (its `container` and `kubernetes` objects).
fn tracee_container(value: &Value, id: &str) -> Container {
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let pod = text("/kubernetes/podName").map(|name| Pod {
        name,
        namespace: text("/kubernetes/podNamespace").unwrap_or_default(),
        uid: text("/kubernetes/podUID").unwrap_or_default(),
        labels: Default::default(),
    });
    Container {
        id: id.to_owned(),
        runtime: match pod {
            Some(_) => ContainerRuntime::Kubernetes,
            None => ContainerRuntime::Unknown,
        },
        name: text("/container/name"),
        image: text("/container/image"),
        image_id: text("/container/imageDigest"),
        pod,
    }
}

/// Decodes Tracee's `SockAddr` argument, whose values are all strings.
fn tracee_sockaddr(remote: &Value) -> Result<SocketAddress> {
    let family = str_field(remote, "sa_family")?;
    let port = |key: &str| -> Result<u16> {
        let text = str_or_number(remote, key)?;
        text.parse()
            .map_err(|_| anyhow!("remote_addr.{key} {text:?} is not a port"))
    };
    Ok(match family {
        "AF_INET" => {
            let ip = str_field(remote, "sin_addr")?;
            SocketAddress::Ipv4 {
                ip: ip
                    .parse::<Ipv4Addr>()
                    .map_err(|_| anyhow!("remote_addr.sin_addr {ip:?} is not an IPv4 address"))?,
                port: port("sin_port")?,
            }
        }
        "AF_INET6" => {
            let ip = str_field(remote, "sin6_addr")?;
            SocketAddress::Ipv6 {
                ip: ip
                    .parse::<Ipv6Addr>()
                    .map_err(|_| anyhow!("remote_addr.sin6_addr {ip:?} is not an IPv6 address"))?,
                port: port("sin6_port")?,
                flow_info: str_or_number(remote, "sin6_flowinfo")
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
                scope_id: str_or_number(remote, "sin6_scopeid")
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
            }
        }
        "AF_UNIX" => SocketAddress::Unix,
        other => SocketAddress::Other {
            af: af_number(other),
        },
    })
}

fn af_number(name: &str) -> u16 {
    match name {
        "AF_UNSPEC" => 0,
        "AF_NETLINK" => 16,
        "AF_PACKET" => 17,
        "AF_VSOCK" => 40,
        _ => name.parse().unwrap_or(u16::MAX),
    }
}

/// A Tracee argument's value by name.
fn arg<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value
        .get("args")?
        .as_array()?
        .iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")
}

fn string_list(value: Option<&Value>, what: &str) -> Result<Vec<String>> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("{what} holds a non-string entry"))
            })
            .collect(),
        Some(_) => bail!("{what} is not a list of strings"),
    }
}

fn str_field<'a>(value: &'a Value, key: &str) -> Result<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("missing or non-string \"{key}\""))
}

fn str_or_number(value: &Value, key: &str) -> Result<String> {
    match value.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => bail!("missing remote_addr.{key}"),
    }
}

fn u64_field(value: &Value, key: &str) -> Result<u64> {
    value
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("missing or non-integer \"{key}\""))
}

fn u32_field(value: &Value, key: &str) -> Result<u32> {
    u32::try_from(u64_field(value, key)?).map_err(|_| anyhow!("\"{key}\" is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEE: &str = include_str!("../../../tests/events/tracee-v0.24.jsonl");

    #[test]
    fn tracee_sample_decodes() {
        let lines: Vec<Line> = TRACEE.lines().map(|l| parse_line(l).unwrap()).collect();
        let Line::Event(exec) = &lines[0] else {
            panic!("{:?}", lines[0])
        };
        assert_eq!(exec.process.comm, "curl");
        assert_eq!(exec.process.pid, 418223);
        assert!(exec.container.as_ref().unwrap().id.starts_with("7f3a9c2e"));
        match &exec.body {
            Body::ProcessExec { env, filename, .. } => {
                assert_eq!(filename, "/usr/bin/curl");
                assert!(env.contains(&"KUBERNETES_SERVICE_HOST=10.96.0.1".to_owned()));
            }
            other => panic!("{other:?}"),
        }
        let Line::Event(connect) = &lines[1] else {
            panic!("{:?}", lines[1])
        };
        assert_eq!(
            connect.body,
            Body::SocketConnect {
                address: SocketAddress::Ipv4 {
                    ip: Ipv4Addr::new(10, 96, 0, 1),
                    port: 443
                },
                socket_type: SocketType::Stream,
            }
        );
        assert_eq!(lines[2], Line::Ignored("k8s_api_connection".into()));
    }

    #[test]
    fn native_round_trips() {
        let Line::Event(event) = parse_line(TRACEE.lines().next().unwrap()).unwrap() else {
            panic!()
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(parse_line(&text).unwrap(), Line::Event(event));
    }

    #[test]
    fn malformed_lines_say_why() {
        for (line, why) in [
            ("{", "invalid JSON"),
            ("[1,2]", "neither"),
            (r#"{"type":"process_exec"}"#, "not a rulehost event"),
            (
                r#"{"eventName":"security_socket_connect","timestamp":1,"hostProcessId":1,"args":[]}"#,
                "remote_addr",
            ),
            (
                r#"{"eventName":"security_socket_connect","timestamp":1,"hostProcessId":1,"args":[{"name":"remote_addr","value":{"sa_family":"AF_INET","sin_addr":"10.0.0.300","sin_port":"1"}}]}"#,
                "not an IPv4",
            ),
            (
                r#"{"eventName":"sched_process_exec","hostProcessId":1}"#,
                "timestamp",
            ),
        ] {
            let error = parse_line(line).unwrap_err().to_string();
            assert!(error.contains(why), "{line}: {error}");
        }
        assert_eq!(parse_line("   ").unwrap(), Line::Blank);
    }

    #[test]
    fn tracee_env_padding_marks_truncation() {
        let line = r#"{"eventName":"sched_process_exec","timestamp":1,"hostProcessId":1,"args":[{"name":"env","value":["A=1","KUBERNETES_SERVICE_HOST=10.96.0.1","?","?"]}]}"#;
        let Line::Event(event) = parse_line(line).unwrap() else {
            panic!()
        };
        let Body::ProcessExec { env, truncated, .. } = &event.body else {
            panic!()
        };
        assert_eq!(env, &["A=1", "KUBERNETES_SERVICE_HOST=10.96.0.1"]);
        assert!(truncated.env && !truncated.argv);
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.contains(r#""truncated":{"env":true}"#), "{text}");
    }

    #[test]
    fn tracee_ipv6_and_unix() {
        let v6 = r#"{"eventName":"security_socket_connect","timestamp":1,"hostProcessId":1,"args":[{"name":"type","value":2},{"name":"remote_addr","value":{"sa_family":"AF_INET6","sin6_addr":"::ffff:10.96.0.1","sin6_port":"443","sin6_flowinfo":"0","sin6_scopeid":"0"}}]}"#;
        let Line::Event(event) = parse_line(v6).unwrap() else {
            panic!()
        };
        assert!(matches!(
            event.body,
            Body::SocketConnect {
                address: SocketAddress::Ipv6 { port: 443, .. },
                socket_type: SocketType::Datagram
            }
        ));
        let unix = r#"{"eventName":"security_socket_connect","timestamp":1,"hostProcessId":1,"args":[{"name":"remote_addr","value":{"sa_family":"AF_UNIX","sun_path":"/run/x.sock"}}]}"#;
        let Line::Event(event) = parse_line(unix).unwrap() else {
            panic!()
        };
        assert!(matches!(
            event.body,
            Body::SocketConnect {
                address: SocketAddress::Unix,
                ..
            }
        ));
    }
}
