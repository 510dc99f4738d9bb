//! The container image as an operator runs it: the image `make image` built (loaded
//! from target/image/rulehost.tar into a Docker Engine this test starts), started by
//! `deploy/docker-run.sh` with exactly the DaemonSet's host access, detecting a connect
//! from another docker container. Runs as root on the real kernel (as CI does).

use rulehost_tests::docker::{Dockerd, IMAGE, api_server};
use rulehost_tests::live::wait_until;
use rulehost_tests::{brief, target_dir};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The findings (JSON lines) the agent container printed on stdout so far.
fn findings(dockerd: &Dockerd, agent: &str) -> Vec<Value> {
    dockerd
        .logs(agent)
        .0
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value.get("signature").is_some())
        .collect()
}

/// The agent container's log lines (its stderr) so far.
fn agent_log(dockerd: &Dockerd, agent: &str) -> Vec<String> {
    dockerd.logs(agent).1.lines().map(str::to_owned).collect()
}

#[test]
fn the_image_run_as_the_daemonset_would_detects_a_connect_from_another_container() {
    let tar = target_dir().join("image/rulehost.tar");
    assert!(
        tar.exists(),
        "{} is missing: run `make image` (`make test` does)",
        tar.display()
    );
    let mut dockerd = Dockerd::start("image");
    dockerd
        .docker(&["load", "-i", tar.to_str().unwrap()])
        .expect("docker load of the rulehost image");
    let state = dockerd.dir.join("state");
    let port = api_server();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker-run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["-d", "--name", "rulehost-agent", "--"])
        .args(["--ready-file", "/var/lib/rulehost/ready.json"])
        .env(
            "DOCKER_HOST",
            format!("unix://{}", dockerd.socket.display()),
        )
        .env("RULEHOST_STATE_DIR", &state)
        .env("RULEHOST_IMAGE", "rulehost:dev")
        .env("NODE_NAME", "node-image")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-run.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dockerd.adopt("rulehost-agent");
    wait_until(
        || state.join("ready.json").exists(),
        || {
            format!(
                "the agent in the image never got ready; its log: {}",
                brief(&agent_log(&dockerd, "rulehost-agent"))
            )
        },
    );

    let id = dockerd.run(&[
        "--name",
        "api-client",
        "-e",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--entrypoint",
        "/bin/nc",
        IMAGE,
        "127.0.0.1",
        &port,
    ]);
    dockerd.wait_exited(&id);
    let mut found = Vec::new();
    wait_until(
        || {
            found = findings(&dockerd, "rulehost-agent")
                .into_iter()
                .filter(|f| f["data"]["container_id"] == id.as_str())
                .collect();
            !found.is_empty()
        },
        || {
            format!(
                "no finding for the api-client container; agent log: {}",
                brief(&agent_log(&dockerd, "rulehost-agent"))
            )
        },
    );
    let finding = &found[0];
    assert_eq!(finding["signature"]["id"], "TRC-1013");
    assert_eq!(finding["node"], "node-image");
    assert_eq!(
        finding["event"]["container"]["name"], "api-client",
        "{finding}"
    );
    assert_eq!(finding["event"]["container"]["image"], IMAGE, "{finding}");
    assert_eq!(finding["data"]["port"].to_string(), port);
}
