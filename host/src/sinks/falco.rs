//! A finding in the shape Falco's `http_output` posts and falcosidekick accepts, so
//! rulehost can feed falcosidekick's ~60 targets unchanged.

use super::Finding;
use serde::Serialize;
use serde_json::{Map, Value};

/// Falco's event JSON.
#[derive(Debug, Serialize)]
pub(crate) struct FalcoEvent {
    pub output: String,
    pub priority: &'static str,
    pub rule: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    pub output_fields: Map<String, Value>,
    pub source: &'static str,
    pub tags: Vec<String>,
    pub hostname: String,
}

/// Tracee severities 0..=4 as Falco priorities.
pub(crate) fn priority(severity: u8) -> &'static str {
    match severity {
        0 => "Informational",
        1 => "Notice",
        2 => "Warning",
        3 => "Error",
        _ => "Critical",
    }
}

/// The Falco event for `finding`.
pub(crate) fn event(finding: &Finding) -> FalcoEvent {
    let fields = output_fields(finding);
    let mut output = format!("{} ({})", finding.signature().name, finding.signature().id);
    for (name, value) in &fields {
        output.push(' ');
        output.push_str(name);
        output.push('=');
        match value {
            Value::String(text) => output.push_str(text),
            other => output.push_str(&other.to_string()),
        }
    }
    let mut tags = finding.signature().tags.clone();
    tags.push(finding.signature().id.clone());
    if let Some(mitre) = &finding.signature().mitre {
        tags.push(mitre.technique_id.clone());
    }
    FalcoEvent {
        output,
        priority: priority(finding.signature().severity),
        rule: finding.signature().name.clone(),
        time: rfc3339(finding.timestamp),
        output_fields: fields,
        source: "rulehost",
        tags,
        hostname: finding.node.as_deref().unwrap_or_default().to_owned(),
    }
}

/// The event's process, container and pod under Falco's field names, then the rule's
/// own data under `rulehost.<name>`.
fn output_fields(finding: &Finding) -> Map<String, Value> {
    let event = &finding.event.event;
    let mut fields = Map::new();
    let mut put = |name: &str, value: Value| {
        if !value.is_null() {
            fields.insert(name.to_owned(), value);
        }
    };
    put("evt.type", finding.event.name.into());
    put("evt.time", finding.timestamp.into());
    put("proc.name", event.process.comm.as_str().into());
    put("proc.pid", event.process.pid.into());
    put("proc.tid", event.process.tid.into());
    if event.process.ppid != 0 {
        put("proc.ppid", event.process.ppid.into());
    }
    put("user.uid", event.process.uid.into());
    if let Some(container) = event.container.as_deref() {
        put("container.id", container.id.as_str().into());
        put("container.name", container.name.clone().into());
        put("container.image", container.image.clone().into());
        put("container.image.digest", container.image_id.clone().into());
        if let Some(pod) = &container.pod {
            put("k8s.pod.name", pod.name.as_str().into());
            put("k8s.ns.name", pod.namespace.as_str().into());
            put("k8s.pod.uid", pod.uid.as_str().into());
            let labels: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            put("k8s.pod.labels", labels.join(",").into());
        }
    } else {
        put("container.id", "host".into());
    }
    if let Ok(Value::Object(data)) = serde_json::to_value(finding.data()) {
        for (name, value) in data {
            put(&format!("rulehost.{name}"), value);
        }
    }
    fields
}

/// `ns` nanoseconds since the Unix epoch as RFC 3339 UTC (`2026-12-02T06:11:54.123456789Z`).
fn rfc3339(ns: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_nanos(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // date -u -d @1764656514 → Tue Dec  2 06:21:54 UTC 2025
        assert_eq!(
            rfc3339(1_764_656_514_000_000_123),
            "2025-12-02T06:21:54.000000123Z"
        );
        // A leap day.
        assert_eq!(
            rfc3339(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn severities_map_to_falco_priorities() {
        let all: Vec<_> = (0..=5).map(priority).collect();
        assert_eq!(
            all,
            [
                "Informational",
                "Notice",
                "Warning",
                "Error",
                "Critical",
                "Critical"
            ]
        );
    }
}
