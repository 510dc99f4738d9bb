//! Connects no rule can match cost the agent nothing (issue: near-zero cost): the
//! shipped rule tells the host what it watches (the world's `interest`, 0.1.2), and the
//! kernel drops connects to anything else before they reach the ring buffer. An exec
//! that declares a new address and connects to it at once is still detected, although
//! user space has not told the kernel about that address yet: such an exec keeps its
//! cgroup's connects flowing until user space has processed it. On the real kernel.

use rulehost_tests::live::*;
use rulehost_tests::*;

const KSH: &str = "KUBERNETES_SERVICE_HOST";

/// The agent's `rulehost_kernel_filtered{reason="unwatched"}` now.
fn unwatched(metrics: &str) -> u64 {
    rulehost::install_tls_provider();
    let body = reqwest::blocking::get(metrics)
        .and_then(|r| r.text())
        .expect("GET /metrics");
    body.lines()
        .find(|l| l.starts_with("rulehost_kernel_filtered_total{reason=\"unwatched\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn unrelated_connects_stay_in_the_kernel_and_exec_then_connect_is_always_seen() {
    // The emulation budgets: this tests the kernel's filter, here and in the matrix's VMs.
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend(rulehost_tests::EMULATION_BUDGETS);
    let agent = LiveAgent::start("connect-filter", &args);
    let metrics = format!("http://{}/metrics", agent.ready["listen"].as_str().unwrap());
    let id = trigger_id(0x90);
    let quiet = TestCgroup::new(&format!("cri-containerd-{id}.scope"));

    // Unrelated connects (no env declared, so no exec keeps them flowing) until the
    // kernel filters one: from then on it filters every one (the filter only opens for
    // a cgroup with an unprocessed exec that captured env entries).
    let reached = |port: u64| {
        read_json_lines(&agent.record)
            .iter()
            .filter(|e| e["address"]["ip"] == "127.0.0.7" && e["address"]["port"] == port)
            .count()
    };
    wait_until(
        || {
            quiet.run(&[], &["tcp", "127.0.0.7:9"]);
            unwatched(&metrics) > 0
        },
        || "the kernel never filtered a connect".to_owned(),
    );
    // The counter also counts host processes' unwatched connects (this test's own
    // metric requests among them): it can only grow by at least the burst.
    let before = unwatched(&metrics);
    quiet.run(&[], &["burst", "200", "127.0.0.7:10"]);

    // Each: a fresh container execs with a new address declared and connects at once.
    // Their findings also mark the burst as handled: their records follow its in the
    // ring buffer, so once they are written, any burst connect sent would be too.
    let ids: Vec<String> = (0..20u8).map(|n| trigger_id(0xa0 + n)).collect();
    for (n, id) in ids.iter().enumerate() {
        let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
        let ip = format!("127.0.1.{}", n + 1);
        cgroup.run(&[(KSH, &ip)], &["tcp", &format!("{ip}:9")]);
    }
    for id in &ids {
        agent.wait_for("the exec-then-connect finding", |f| {
            f["data"]["container_id"] == id.as_str()
        });
    }
    assert_eq!(
        reached(10),
        0,
        "burst connects that reached user space, of 200"
    );
    wait_until(
        || unwatched(&metrics) >= before + 200,
        || {
            format!(
                "{} of the 200 burst connects counted as filtered",
                unwatched(&metrics) - before
            )
        },
    );
}
