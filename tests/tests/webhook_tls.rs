//! HTTPS webhooks against real TLS receivers (hyper over rustls, tests/src/tls.rs) with a
//! CA this test makes: delivered when the sink trusts that CA, refused (counted, logged
//! once) when it trusts another, and mutual TLS accepted with the client certificate and
//! refused without it. Runs as root on the real kernel (as CI does).

use rulehost_tests::live::{LiveAgent, TestCgroup, wait_until};
use rulehost_tests::scrape::{sample, scrape_until};
use rulehost_tests::tls::{ClientAuth, Pki, TlsReceiver};
use rulehost_tests::{brief, trigger_id};
use std::net::TcpListener;

const RETRYING: &str = "webhook receiver unavailable; retrying with backoff";

#[test]
fn https_webhooks_deliver_only_to_receivers_they_trust_and_that_trust_them() {
    let dir = std::env::temp_dir().join(format!("rulehost-webhook-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = Pki::new(&dir);
    let server = TlsReceiver::start(&pki, ClientAuth::None);
    let mutual = TlsReceiver::start(&pki, ClientAuth::Required);
    let file = |name| pki.file(name).display().to_string();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "webhooks:
  - url: https://{server}/hook
    name: trusted
    ca_file: {ca}
  - url: https://{server}/hook?token=secret
    name: wrong-ca
    ca_file: {other}
  - url: https://{mutual}/hook
    name: mtls
    ca_file: {ca}
    cert_file: {cert}
    key_file: {key}
  - url: https://{mutual}/hook
    name: no-client-cert
    ca_file: {ca}
",
            server = server.addr,
            mutual = mutual.addr,
            ca = file("ca.pem"),
            other = file("other-ca.pem"),
            cert = file("client.pem"),
            key = file("client.key"),
        ),
    )
    .unwrap();
    let agent = LiveAgent::start(
        "webhook-tls",
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let started: Vec<String> = agent
        .log_records()
        .iter()
        .filter(|r| r.message() == "webhook sink started")
        .map(|r| format!("{}={}", r.field("sink"), r.field("tls")))
        .collect();
    assert!(
        started.contains(&"mtls=ca_file, client certificate".to_string()),
        "{}",
        brief(&started)
    );

    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = api.local_addr().unwrap().to_string();
    let id = trigger_id(72);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    cgroup.run(
        &[("KUBERNETES_SERVICE_HOST", "127.0.0.1")],
        &["tcp", &address],
    );
    agent.wait_for("the finding", |_| agent.findings_for(&id).len() == 1);
    let about_id = |receiver: &TlsReceiver| {
        receiver
            .posted()
            .into_iter()
            .filter(|body| body.pointer("/data/container_id") == Some(&id.as_str().into()))
            .count()
    };
    wait_until(
        || about_id(&server) == 1 && about_id(&mutual) == 1,
        || {
            format!(
                "trusted got {}, mtls got {} of 1",
                about_id(&server),
                about_id(&mutual)
            )
        },
    );

    // The refused sinks keep retrying: wait for a few attempts each, then check they
    // were logged once, counted, and delivered nothing.
    let scrape = scrape_until(&agent, "3 failures on each refused sink", |scrape| {
        ["wrong-ca", "no-client-cert"].iter().all(|sink| {
            sample(
                scrape,
                &format!("rulehost_output_failures_total{{sink=\"{sink}\"}}"),
            ) >= 3.0
        })
    });
    for sink in ["trusted", "mtls"] {
        let sent = sample(
            scrape.as_str(),
            &format!("rulehost_output_sent_total{{sink=\"{sink}\"}}"),
        );
        assert_eq!(sent, 1.0, "{sink}");
    }
    let records = agent.log_records();
    for (sink, cause) in [("wrong-ca", "UnknownIssuer"), ("no-client-cert", "")] {
        let sent = sample(
            scrape.as_str(),
            &format!("rulehost_output_sent_total{{sink=\"{sink}\"}}"),
        );
        assert_eq!(sent, 0.0, "{sink}");
        let logged: Vec<String> = records
            .iter()
            .filter(|r| r.message() == RETRYING && r.field("sink") == sink)
            .map(|r| r.field("error"))
            .collect();
        assert_eq!(logged.len(), 1, "{sink}: {}", brief(&logged));
        assert!(logged[0].contains(cause), "{sink}: {}", logged[0]);
    }
    assert!(
        mutual.refused_handshakes() >= 3,
        "the mTLS receiver refused {} handshakes",
        mutual.refused_handshakes()
    );
    let leaked: Vec<String> = agent
        .log()
        .into_iter()
        .filter(|line| line.contains("secret"))
        .collect();
    assert!(
        leaked.is_empty(),
        "a token reached the log: {}",
        brief(&leaked)
    );
    drop(agent);
    drop(cgroup);
    let _ = std::fs::remove_dir_all(&dir);
}
