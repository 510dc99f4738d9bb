//! Several rules at once, each in its own store, each given only what it selected; and
//! shipping: a rule file loads on any host of a compatible world version.

use rulehost::rules::WORLD_VERSION;
use rulehost_tests::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

const API: &str = "KUBERNETES_SERVICE_HOST=10.96.0.1";

fn both() -> rulehost::dispatch::Dispatcher {
    host_with_files(&[k8s_rule_file(), cloud_rule_file()]).unwrap()
}

#[test]
fn each_rule_sees_only_what_it_selected_and_reports_its_own_findings() {
    let mut host = both();
    let c = container(50);
    let findings = run(
        &mut host,
        vec![
            exec(c.clone(), &[API]),
            connect(c.clone(), "10.96.0.1", 443),
            connect(c.clone(), "169.254.169.254", 80),
            connect(c.clone(), "::ffff:169.254.169.254", 80),
            connect(c.clone(), "fd00:ec2::254", 80),
            connect(None, "169.254.169.254", 80),
            exec(None, &[API]),
        ],
    );
    let by_rule = |id: &str| -> Vec<_> {
        findings
            .iter()
            .filter(|f| f.signature().id == id)
            .map(|f| (f.data()["ip"].clone(), f.data()["port"].clone()))
            .collect()
    };
    assert_eq!(by_rule("TRC-1013"), vec![(json!("10.96.0.1"), json!(443))]);
    assert_eq!(
        by_rule("RH-1001"),
        vec![
            (json!("169.254.169.254"), json!(80)),
            (json!("169.254.169.254"), json!(80)),
            (json!("fd00:ec2::254"), json!(80)),
        ]
    );
    // k8s selects exec + connect from containers (5); the cloud rule watches only the
    // metadata services' connects (3: its `interest` keeps the others from it).
    assert_eq!(host.delivered("TRC-1013"), 5);
    assert_eq!(host.delivered("RH-1001"), 3);
    let cloud = findings
        .iter()
        .find(|f| f.signature().id == "RH-1001")
        .unwrap();
    assert_eq!(cloud.signature().event_name, "cloud_metadata_access");
    assert_eq!(cloud.data()["container_id"], json!(container_id(50)));
    assert_eq!(cloud.data()["comm"], json!("curl"));
}

#[test]
fn a_rule_id_collision_is_reported() {
    let error = host_with_files(&[k8s_rule_file(), k8s_rule_file()])
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("rule id TRC-1013 is already loaded"),
        "{error}"
    );
    let k8s = k8s_rule_file();
    let out = Command::new(rulehost_bin())
        .args([
            "replay",
            "--rule",
            k8s.to_str().unwrap(),
            "--rule",
            k8s.to_str().unwrap(),
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("rule id TRC-1013 is already loaded"),
        "{stderr}"
    );
}

#[test]
fn replay_runs_several_rule_files() {
    let events = std::env::temp_dir().join(format!("rulehost-many-{}.jsonl", std::process::id()));
    let id = container_id(51);
    let line = |body: &str| {
        format!(
            r#"{{"timestamp":1,"process":{{"pid":7,"tid":7,"ppid":1,"uid":0,"comm":"python3"}},"container":{{"id":"{id}","runtime":"docker"}},{body}}}"#
        )
    };
    let text = [
        line(r#""type":"process_exec","filename":"/usr/bin/python3","env":["KUBERNETES_SERVICE_HOST=10.96.0.1"]"#),
        line(r#""type":"socket_connect","address":{"family":"ipv4","ip":"10.96.0.1","port":443},"socket_type":"stream""#),
        line(r#""type":"socket_connect","address":{"family":"ipv4","ip":"169.254.169.254","port":80},"socket_type":"stream""#),
    ]
    .join("\n");
    std::fs::write(&events, text).unwrap();
    let (k8s, cloud) = (k8s_rule_file(), cloud_rule_file());
    let out = Command::new(rulehost_bin())
        .args([
            "replay",
            "--rule",
            k8s.to_str().unwrap(),
            "--rule",
            cloud.to_str().unwrap(),
        ])
        .arg(&events)
        .output()
        .unwrap();
    std::fs::remove_file(&events).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|f| format!("{} {}", f["signature"]["event_name"], f["rule"]["name"]))
        .collect();
    assert_eq!(
        names,
        vec![
            r#""k8s_api_connection" "k8s_api_connection""#,
            r#""cloud_metadata_access" "cloud_metadata_access""#
        ]
    );
}

/// The k8s rule as if built against another version of the world: every interface
/// name it imports and exports re-targeted (same length, so the binary stays valid).
fn retargeted(version: &str) -> PathBuf {
    assert_eq!(version.len(), "0.1.0".len());
    let bytes = std::fs::read(k8s_rule_file()).unwrap();
    let needle = format!("@{WORLD_VERSION}").into_bytes();
    let needle = needle.as_slice();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(needle) {
            out.push(b'@');
            out.extend_from_slice(version.as_bytes());
            i += needle.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let path = std::env::temp_dir().join(format!(
        "rulehost-k8s-{version}-{}.wasm",
        std::process::id()
    ));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn a_rule_for_a_compatible_world_version_loads_and_runs() {
    let path = retargeted("0.1.9");
    let mut host = host_with_files(std::slice::from_ref(&path)).unwrap();
    let c = container(52);
    let findings = run(
        &mut host,
        vec![exec(c.clone(), &[API]), connect(c, "10.96.0.1", 443)],
    );
    assert_eq!(findings.len(), 1);
    let out = Command::new(rulehost_bin())
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["world"], "rulehost:rule@0.1.9");
    assert_eq!(
        report["host_world"],
        format!("rulehost:rule@{WORLD_VERSION}")
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_rule_for_an_incompatible_world_version_gives_a_clear_error() {
    let path = retargeted("0.2.0");
    let out = Command::new(rulehost_bin())
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "targets rulehost:rule@0.2.0, incompatible with this host's rulehost:rule@{WORLD_VERSION}"
        )),
        "{stderr}"
    );
    std::fs::remove_file(path).unwrap();
}
