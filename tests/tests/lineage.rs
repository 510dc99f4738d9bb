//! Attribution that survives leaving the cgroup (issue: detection an attacker cannot
//! step around), on the real kernel with a real Docker container: a container's shell
//! connects, is moved to the cgroup v2 root (what a container with CAP_SYS_ADMIN and a
//! writable cgroupfs can do to itself; here the test does it from the host, the same
//! kernel operation), and connects again through a child it forks afterwards. Both
//! connects are findings of that container, the second marked as having left its
//! cgroup. A host process that enters the container's namespaces with `nsenter`,
//! without joining its cgroup, stays a host process.

use rulehost_tests::docker::{Dockerd, IMAGE, api_server};
use rulehost_tests::live::*;
use rulehost_tests::*;
use std::io::Write;
use std::process::Command;

#[test]
fn a_container_process_moved_to_the_root_cgroup_stays_attributed_and_nsenter_does_not() {
    let mut dockerd = Dockerd::start("lineage");
    let port = api_server();
    let socket = dockerd.socket.to_str().unwrap().to_owned();
    let mut agent = LiveAgent::start("lineage", &["--docker-socket", &socket]);
    assert_ne!(agent.ready["lineage_hook"], "none", "{}", agent.ready);

    // Connect, then block on a FIFO (no timing: the test's write releases it), then
    // connect again from a child forked after the move.
    let script =
        format!("mkfifo /tmp/go; nc 127.0.0.1 {port}; read line < /tmp/go; nc 127.0.0.1 {port}");
    let id = dockerd.run(&[
        "--name",
        "escaper",
        "-e",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--entrypoint",
        "/bin/sh",
        IMAGE,
        "-c",
        &script,
    ]);
    agent.wait_for("the first connect's finding", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    let shell: u32 = dockerd
        .docker(&["inspect", "--format", "{{.State.Pid}}", &id])
        .expect("docker inspect")
        .parse()
        .expect("a pid");
    assert_ne!(
        shell,
        0,
        "the container exited early: {:?}",
        dockerd.logs(&id)
    );

    // A host process in the container's mount namespace, never in its cgroup.
    let mut nsenter = Command::new("nsenter")
        .arg(format!("--target={shell}"))
        .args(["--mount", "/bin/nc", "127.0.0.1", &port])
        .spawn()
        .expect("nsenter (util-linux)");
    let host_pid = nsenter.id();
    assert!(nsenter.wait().expect("nsenter").success());

    // Out of the container's cgroup, into the root one.
    let root = cgroup_root();
    std::fs::write(root.join("cgroup.procs"), shell.to_string()).expect("move to the root");
    let root_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&root).unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{shell}/root/tmp/go"))
        .and_then(|mut fifo| fifo.write_all(b"go\n"))
        .expect("release the shell");
    let escaped = agent.wait_for("the connect after leaving the cgroup", |f| {
        f["data"]["container_id"] == id.as_str()
            && f["event"]["process"]["left_container_cgroup"] == true
    });
    assert_eq!(
        escaped["event"]["cgroup_id"], root_id,
        "{}",
        escaped["event"]
    );
    assert_eq!(escaped["event"]["container"]["name"], "escaper");
    dockerd.wait_exited(&id);

    let status = agent.stop();
    assert!(status.success(), "{status}");
    let findings = agent.findings();
    let marks: Vec<(String, bool)> = findings
        .iter()
        .map(|f| {
            (
                f["data"]["container_id"].as_str().unwrap_or("").to_owned(),
                f["event"]["process"]["left_container_cgroup"] == true,
            )
        })
        .collect();
    assert_eq!(
        marks,
        vec![(id.clone(), false), (id.clone(), true)],
        "{}",
        brief(&findings)
    );
    assert!(
        findings
            .iter()
            .all(|f| f["event"]["process"]["pid"] != host_pid),
        "the nsenter process (pid {host_pid}) was attributed: {}",
        brief(&findings)
    );
}
