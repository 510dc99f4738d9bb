//! The agent's operator-facing outputs on the real kernel: `--listen` (health,
//! readiness, Prometheus metrics scraped with a real HTTP client) and `--webhook`
//! sinks posting to real HTTP servers (tiny_http) that are down, up, or never answer.
//! Runs as root (as CI does).

use rulehost_tests::live::{LiveAgent, TestCgroup, connector_bin, wait_until};
use rulehost_tests::scrape::{get, sample, scrape_until};
use rulehost_tests::{brief, cloud_rule_file, fixture, k8s_rule_file, trigger_id};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

const KSH: &str = "KUBERNETES_SERVICE_HOST";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rulehost-outputs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An API server address for the test's connects: a listener only this test has.
fn api_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    (listener, address)
}

#[test]
fn health_readiness_and_metrics_move_with_real_traffic() {
    let dir = temp_dir("metrics");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(k8s_rule_file(), rules.join("k8s.wasm")).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "exceptions:\n  - rule: TRC-1013\n    comm: suppressme\n",
    )
    .unwrap();
    let suppressme = dir.join("suppressme");
    std::os::unix::fs::symlink(connector_bin(), &suppressme).unwrap();
    let trap = fixture("trap-every-event");
    let agent = LiveAgent::start(
        "metrics",
        &[
            "--listen",
            "127.0.0.1:0",
            "--rules",
            rules.to_str().unwrap(),
            "--rule",
            trap.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(get(&agent, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&agent, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(&agent, "/nope").0, 404);
    let before = get(&agent, "/metrics").1;
    let k8s_info = before
        .lines()
        .find(|l| l.starts_with("rulehost_rule_info{rule=\"TRC-1013\""))
        .unwrap_or_else(|| {
            panic!(
                "no TRC-1013 info: {}",
                brief(&before.lines().collect::<Vec<_>>())
            )
        });
    assert!(
        k8s_info.contains("sha256=\"") && k8s_info.ends_with(" 1"),
        "{k8s_info}"
    );
    let connects = "rulehost_events_total{kind=\"security_socket_connect\"}";
    let findings = "rulehost_findings_total{rule=\"TRC-1013\"}";
    let (connects_before, findings_before) = (sample(&before, connects), sample(&before, findings));

    // Three findings written, one suppressed by the exception.
    let (_listener, address) = api_server();
    let id = trigger_id(70);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    let env = [(KSH, "127.0.0.1")];
    for _ in 0..3 {
        cgroup.run(&env, &["tcp", &address]);
    }
    cgroup.run_as(&suppressme, &env, &["tcp", &address]);
    agent.wait_for("three for the container", |_| {
        agent.findings_for(&id).len() >= 3
    });
    let after = scrape_until(&agent, "the suppressed finding", |s| {
        sample(s, "rulehost_findings_suppressed_total{rule=\"TRC-1013\"}") >= 1.0
    });
    assert_eq!(
        sample(
            &after,
            "rulehost_findings_suppressed_total{rule=\"TRC-1013\"}"
        ),
        1.0
    );
    // The agent sees the whole node (other tests run in parallel): at least ours.
    assert!(
        sample(&after, connects) >= connects_before + 4.0,
        "connects"
    );
    assert!(
        sample(&after, findings) >= findings_before + 3.0,
        "findings"
    );
    assert!(sample(&after, "rulehost_event_to_finding_seconds_count") >= 3.0);
    assert!(sample(&after, "rulehost_rule_faults_total{rule=\"FIXTURE-TRAP\"}") >= 1.0);

    // A rule added and a broken file: counted by result, the info follows.
    // Written beside and renamed in, as a ConfigMap update is: the watcher never sees
    // half a file, so each file is exactly one reload.
    let put = |name: &str, bytes: &[u8]| {
        let staged = dir.join(name);
        std::fs::write(&staged, bytes).unwrap();
        std::fs::rename(&staged, rules.join(name)).unwrap();
    };
    put("cloud.wasm", &std::fs::read(cloud_rule_file()).unwrap());
    put("broken.wasm", b"not wasm");
    let reloaded = scrape_until(&agent, "one loaded and one rejected reload", |s| {
        sample(s, "rulehost_reloads_total{result=\"loaded\"}") >= 1.0
            && sample(s, "rulehost_reloads_total{result=\"rejected\"}") >= 1.0
    });
    assert_eq!(
        sample(&reloaded, "rulehost_reloads_total{result=\"loaded\"}"),
        1.0
    );
    assert_eq!(
        sample(&reloaded, "rulehost_reloads_total{result=\"rejected\"}"),
        1.0
    );
    let infos = reloaded
        .lines()
        .filter(|l| l.starts_with("rulehost_rule_info{"))
        .count();
    assert_eq!(infos, 3, "k8s, the trap fixture and the cloud rule");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A finding as its webhook posted it.
struct Posted {
    body: Value,
}

/// Serves `server` in a thread, answering 200 and keeping every body.
fn collect(server: tiny_http::Server) -> std::sync::Arc<std::sync::Mutex<Vec<Posted>>> {
    let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = posted.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut text = String::new();
            let _ = request.as_reader().read_to_string(&mut text);
            if let Ok(body) = serde_json::from_str(&text) {
                sink.lock().unwrap().push(Posted { body });
            }
            let _ = request.respond(tiny_http::Response::empty(200));
        }
    });
    posted
}

fn about(posted: &[Posted], id: &str, pointer: &str) -> Vec<Value> {
    posted
        .iter()
        .filter(|p| p.body.pointer(pointer) == Some(&Value::from(id)))
        .map(|p| p.body.clone())
        .collect()
}

#[test]
fn a_webhook_receiver_down_then_up_gets_every_finding_and_falco_gets_its_format() {
    let dir = temp_dir("webhook");
    // Bound but not listening: connects are refused (the receiver is down) and the
    // port stays ours until it listens.
    let down = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    down.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let down_addr = down.local_addr().unwrap().as_socket().unwrap();
    let falco = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let falco_addr = falco.server_addr().to_ip().unwrap();
    let falco_posted = collect(falco);
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "webhooks:\n  - url: http://{falco_addr}/falco\n    format: falco\n    name: sidekick\n"
        ),
    )
    .unwrap();
    let agent = LiveAgent::start(
        "webhook",
        &[
            "--webhook",
            &format!("http://{down_addr}/hook?token=secret"),
            "--config",
            config.to_str().unwrap(),
            "--node-name",
            "node-hook",
        ],
    );
    let (_listener, address) = api_server();
    let id = trigger_id(71);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    for _ in 0..5 {
        cgroup.run(&[(KSH, "127.0.0.1")], &["tcp", &address]);
    }
    agent.wait_for("five for the container", |_| {
        agent.findings_for(&id).len() >= 5
    });
    let refused = agent.wait_for_log("the down receiver retried", |r| {
        r.message() == "webhook receiver unavailable; retrying with backoff"
    });
    assert!(
        !refused.field("sink").contains("secret"),
        "{}",
        refused.field("sink")
    );

    // The receiver comes up: every finding made while it was down arrives, in order.
    down.listen(128).unwrap();
    let up = tiny_http::Server::from_listener(TcpListener::from(down), None).unwrap();
    let posted = collect(up);
    wait_until(
        || about(&posted.lock().unwrap(), &id, "/data/container_id").len() >= 5,
        || {
            format!(
                "{} of 5 findings posted",
                about(&posted.lock().unwrap(), &id, "/data/container_id").len()
            )
        },
    );
    let written = agent.findings_for(&id);
    assert_eq!(
        about(&posted.lock().unwrap(), &id, "/data/container_id"),
        written
    );

    // The Falco sink got the same five, in Falco's shape.
    wait_until(
        || {
            about(
                &falco_posted.lock().unwrap(),
                &id,
                "/output_fields/container.id",
            )
            .len()
                >= 5
        },
        || "five Falco events".into(),
    );
    let falco_events = about(
        &falco_posted.lock().unwrap(),
        &id,
        "/output_fields/container.id",
    );
    assert_eq!(falco_events.len(), 5);
    let event = &falco_events[0];
    // TRC-1013 has severity 1.
    assert_eq!(event["priority"], "Notice", "{event}");
    assert_eq!(event["source"], "rulehost");
    assert_eq!(event["hostname"], "node-hook");
    assert_eq!(event["rule"], written[0]["signature"]["name"]);
    assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
    assert!(
        event["tags"]
            .as_array()
            .unwrap()
            .contains(&Value::from("TRC-1013"))
    );
    assert_eq!(event["output_fields"]["proc.name"], "connector");
    assert_eq!(event["output_fields"]["rulehost.ip"], "127.0.0.1");
    assert!(event["output"].as_str().unwrap().contains(&id), "{event}");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_receiver_that_never_answers_costs_only_counted_drops() {
    let dir = temp_dir("silent");
    // Accepts connections and never reads nor answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "webhooks:\n  - url: http://{silent_addr}/\n    name: silent\n    queue: 2\n    timeout_ms: 600000\n"
        ),
    )
    .unwrap();
    let mut agent = LiveAgent::start(
        "silent",
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let (_listener, address) = api_server();
    let id = trigger_id(72);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    for _ in 0..10 {
        cgroup.run(&[(KSH, "127.0.0.1")], &["tcp", &address]);
    }
    // The event loop is not held: every finding is written.
    agent.wait_for("ten for the container", |_| {
        agent.findings_for(&id).len() >= 10
    });
    assert_eq!(get(&agent, "/healthz").0, 200);
    // One finding in flight, two queued: the rest of what was written is dropped.
    // Findings are counted as written before they are offered to the sink, so every
    // scrape has dropped <= written - 2, and once the sink holds its three,
    // dropped == written - 3.
    let written = |s: &str| -> f64 {
        s.lines()
            .filter(|l| l.starts_with("rulehost_findings_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let dropped = |s: &str| sample(s, "rulehost_output_dropped_total{sink=\"silent\"}");
    let scrape = scrape_until(&agent, "drops of all but three", |s| {
        dropped(s) >= 7.0 && dropped(s) >= written(s) - 3.0
    });
    assert!(
        dropped(&scrape) <= written(&scrape) - 2.0,
        "written {}, dropped {}",
        written(&scrape),
        dropped(&scrape)
    );
    assert!(agent.stop().success());
    let undelivered = agent.wait_for_log("the exit count", |r| {
        r.message() == "webhook receiver did not take every finding before exit"
    });
    assert!(undelivered.field("undelivered").parse::<u64>().unwrap() >= 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh agent's first scrape already has every series whose labels it knows: the
/// kernel's drop kinds and filter reasons, reload results, each loaded rule's counters
/// and each configured sink's, all at 0 (a dashboard shows 0, an alert on absence stays
/// quiet).
#[test]
fn a_fresh_agent_exports_every_known_series_at_zero() {
    let agent = LiveAgent::start(
        "fresh-metrics",
        &[
            "--listen",
            "127.0.0.1:0",
            "--webhook",
            "http://127.0.0.1:9/never-called",
        ],
    );
    let scrape = get(&agent, "/metrics").1;
    let series = [
        "rulehost_kernel_drops_total{kind=\"exec\"}",
        "rulehost_kernel_drops_total{kind=\"connect\"}",
        "rulehost_kernel_drops_total{kind=\"cgroup\"}",
        "rulehost_kernel_filtered_total{reason=\"host_cgroup\"}",
        "rulehost_reloads_total{result=\"rejected\"}",
        "rulehost_findings_total{rule=\"TRC-1013\"}",
        "rulehost_findings_suppressed_total{rule=\"TRC-1013\"}",
        "rulehost_findings_dropped_total{rule=\"TRC-1013\"}",
        "rulehost_rule_faults_total{rule=\"TRC-1013\"}",
        "rulehost_rule_refusals_total{rule=\"TRC-1013\",bound=\"log_lines\"}",
        "rulehost_output_sent_total{sink=\"webhook:http://127.0.0.1:9/never-called\"}",
        "rulehost_output_dropped_total{sink=\"webhook:http://127.0.0.1:9/never-called\"}",
        "rulehost_output_failures_total{sink=\"webhook:http://127.0.0.1:9/never-called\"}",
    ];
    // The kernel's host-cgroup filter may already have counted (host processes run);
    // everything else here cannot have moved yet.
    let exact = |s: &str| !s.starts_with("rulehost_kernel_filtered_total");
    let missing: Vec<&str> = series
        .iter()
        .copied()
        .filter(|s| {
            !scrape.lines().any(|l| match exact(s) {
                true => l == format!("{s} 0"),
                false => l.starts_with(&format!("{s} ")),
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} series missing (or not at 0) in a fresh scrape: {}",
        missing.len(),
        series.len(),
        brief(&missing)
    );
}
