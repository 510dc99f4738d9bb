//! Rule state persisted to disk (`Dispatcher::persist_to`, redb): it survives a
//! `kill -9` of the host, rows of containers that vanished meanwhile are dropped at
//! start-up, eviction deletes rows, hot reload keeps persisting, a rule added later gets
//! its rows, a failing disk loses nothing in memory, and a bad state dir is a clear error.
//!
//! The "killed host" is this test binary run again as a child (`child_host`, selected by
//! the `RULEHOST_PERSIST_CHILD` env var): it writes state, says so on stdout, and gets
//! SIGKILL while it sleeps, so nothing of its shutdown ever runs.

use rulehost::dispatch::Dispatcher;
use rulehost::rules::{Limits, RuleEngine};
use rulehost::state::store::RestoreReport;
use rulehost_tests::*;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const K8S_ENV: &str = "KUBERNETES_SERVICE_HOST=10.96.0.1";
const CHILD_ENV: &str = "RULEHOST_PERSIST_CHILD";
const READY: &str = "persist-child: state written";
const K8S_KEY: &str = "rules/k8s_api_connection.wasm";
/// How long a child host may take to write its state.
const CHILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A fresh directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("rulehost-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn state_dir(&self) -> PathBuf {
        self.0.join("state")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Findings for a connect from container `tag` to the API server address.
fn connects(host: &mut Dispatcher, tag: u8) -> Vec<rulehost::sinks::Finding> {
    run(host, vec![connect(container(tag), "10.96.0.1", 443)])
}

fn detected(host: &mut Dispatcher, tag: u8) -> bool {
    let findings = connects(host, tag);
    if let Some(finding) = findings.first() {
        assert_eq!(finding.data()["container_id"], container_id(tag).as_str());
    }
    !findings.is_empty()
}

fn runtime() -> Arc<RuleEngine> {
    Arc::new(RuleEngine::new(Limits::default()).unwrap())
}

/// A host with the k8s_api_connection rule loaded from its file (as `run --rule` does).
fn k8s_file_host(runtime: &Arc<RuleEngine>) -> Dispatcher {
    let rule = runtime
        .load(
            "k8s_api_connection",
            &std::fs::read(k8s_rule_file()).unwrap(),
        )
        .unwrap();
    let mut host = Dispatcher::new(runtime.clone());
    host.add_from(K8S_KEY, rule).unwrap();
    host
}

/// Runs this binary as a child host in `mode`, waits until it has written its state,
/// SIGKILLs it and returns what it printed on stderr.
fn killed_child(mode: &str, dir: &Path) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_host", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // libtest prints `test child_host ... ` before the line, on the same line.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ready = stdout
            .lines()
            .map_while(Result::ok)
            .any(|line| line.ends_with(READY));
        let _ = tx.send(ready);
    });
    let ready = rx.recv_timeout(CHILD_TIMEOUT).unwrap_or(false);
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        panic!(
            "child host ({mode}) did not write its state: {}",
            brief(&stderr.lines().collect::<Vec<_>>())
        );
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// The child side of [`killed_child`]; a no-op test when run normally.
#[test]
fn child_host() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = spec.split_once(':').unwrap();
    let dir = Path::new(dir);
    // The host's log records, as the binary writes them, for the parent to read.
    rulehost::logging::init("info", rulehost::logging::LogFormat::Json).unwrap();
    match mode {
        // Containers 1 and 2 exec with the API server in their env, in two batches.
        "k8s" => {
            let mut host = k8s_host();
            host.persist_to(dir, |_| true).unwrap();
            assert!(run(&mut host, vec![exec(container(1), &[K8S_ENV])]).is_empty());
            assert!(run(&mut host, vec![exec(container(2), &[K8S_ENV])]).is_empty());
        }
        // Writes fail (file size limit) for a while, then succeed again.
        "disk-full" => disk_full_child(dir),
        other => panic!("unknown child mode {other}"),
    }
    println!("{READY}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[test]
fn state_survives_kill_9_and_the_next_connect_is_detected() {
    let tmp = TempDir::new("kill9");
    let dir = tmp.state_dir();
    killed_child("k8s", &dir);
    assert!(dir.join("state.redb").is_file());

    // A new host on the same directory: no exec is seen again, the connects are detected.
    let mut host = k8s_host();
    let report = host.persist_to(&dir, |_| true).unwrap();
    assert_eq!(
        report,
        RestoreReport {
            restored: 2,
            containers: 2,
            ..RestoreReport::default()
        }
    );
    assert_eq!(host.state_containers("TRC-1013"), 2);
    assert!(detected(&mut host, 1));
    assert!(detected(&mut host, 2));
    assert!(
        !detected(&mut host, 3),
        "container 3 never declared the API server"
    );
    assert_eq!(host.state_file(), Some(dir.join("state.redb").as_path()));
}

#[test]
fn rows_of_containers_that_vanished_while_down_are_dropped() {
    let tmp = TempDir::new("vanished");
    let dir = tmp.state_dir();
    killed_child("k8s", &dir);

    let alive = container_id(1);
    let mut host = k8s_host();
    let report = host.persist_to(&dir, |id| id == alive).unwrap();
    assert_eq!((report.restored, report.containers), (1, 1));
    assert_eq!(report.dropped, 1, "container 2 is gone");
    assert!(detected(&mut host, 1));
    assert!(!detected(&mut host, 2));
    drop(host);

    // Deleted on disk too: even claimed alive again, container 2 has nothing.
    let mut host = k8s_host();
    let report = host.persist_to(&dir, |_| true).unwrap();
    assert_eq!((report.restored, report.dropped), (1, 0));
    assert!(detected(&mut host, 1));
    assert!(!detected(&mut host, 2));
}

#[test]
fn container_eviction_deletes_its_rows() {
    let tmp = TempDir::new("evict");
    let dir = tmp.state_dir();
    let mut host = k8s_host();
    host.persist_to(&dir, |_| true).unwrap();
    run(
        &mut host,
        vec![
            exec(container(1), &[K8S_ENV]),
            exec(container(2), &[K8S_ENV]),
        ],
    );
    host.container_removed(&container_id(1));
    drop(host); // no shutdown step: every batch is already on disk

    let mut host = k8s_host();
    let report = host.persist_to(&dir, |_| true).unwrap();
    assert_eq!((report.restored, report.containers), (1, 1));
    assert_eq!(report.dropped, 0);
    assert!(
        !detected(&mut host, 1),
        "an evicted container is not restored"
    );
    assert!(detected(&mut host, 2));
}

#[test]
fn hot_reload_keeps_persisting_and_rules_added_later_get_their_rows() {
    let tmp = TempDir::new("reload");
    let dir = tmp.state_dir();
    let runtime = runtime();
    let mut host = k8s_file_host(&runtime);
    host.persist_to(&dir, |_| true).unwrap();
    run(&mut host, vec![exec(container(1), &[K8S_ENV])]);
    // A new version swapped in: it takes over the state and keeps writing it.
    let bytes = rule_variant(&std::fs::read(k8s_rule_file()).unwrap(), "v2");
    let v2 = runtime.load("k8s_api_connection", &bytes).unwrap();
    host.replace(K8S_KEY, v2).unwrap();
    run(&mut host, vec![exec(container(2), &[K8S_ENV])]);
    assert!(detected(&mut host, 1));
    // Unloading the rule keeps its rows on disk.
    assert!(host.remove(K8S_KEY).is_some());
    drop(host);

    // Restart with no rule loaded at first: the rows wait for their rule id.
    let mut host = Dispatcher::new(runtime.clone());
    let report = host.persist_to(&dir, |_| true).unwrap();
    assert_eq!(
        report,
        RestoreReport {
            containers: 2,
            kept: 2,
            ..RestoreReport::default()
        }
    );
    let rule = runtime
        .load(
            "k8s_api_connection",
            &std::fs::read(k8s_rule_file()).unwrap(),
        )
        .unwrap();
    host.add_from(K8S_KEY, rule.clone()).unwrap();
    assert!(detected(&mut host, 1));
    assert!(detected(&mut host, 2));

    // Unloaded and loaded again within one run: the rows are read back from disk.
    host.remove(K8S_KEY).unwrap();
    host.add_from(K8S_KEY, rule).unwrap();
    assert_eq!(host.state_containers("TRC-1013"), 2);
    assert!(detected(&mut host, 2));
    // And a state written now is persisted by the re-added rule.
    run(&mut host, vec![exec(container(3), &[K8S_ENV])]);
    drop(host);
    let mut host = k8s_host();
    assert_eq!(host.persist_to(&dir, |_| true).unwrap().restored, 3);
    assert!(detected(&mut host, 3));
}

#[test]
fn state_held_before_persisting_is_written_and_wins_over_the_disk() {
    let tmp = TempDir::new("before");
    let dir = tmp.state_dir();
    let mut host = k8s_host();
    host.persist_to(&dir, |_| true).unwrap();
    run(
        &mut host,
        vec![exec(container(1), &["KUBERNETES_SERVICE_HOST=10.0.0.1"])],
    );
    drop(host);

    // This host saw containers 1 and 2 before it opened the store: what it holds is
    // newer than the disk, so it is kept (not overwritten by the restore) and written.
    let mut host = k8s_host();
    run(
        &mut host,
        vec![
            exec(container(1), &[K8S_ENV]),
            exec(container(2), &[K8S_ENV]),
        ],
    );
    let report = host.persist_to(&dir, |_| true).unwrap();
    assert_eq!((report.restored, report.containers), (0, 1));
    drop(host);

    let mut host = k8s_host();
    let report = host.persist_to(&dir, |_| true).unwrap();
    assert_eq!((report.restored, report.containers), (2, 2));
    assert!(detected(&mut host, 1));
    assert!(detected(&mut host, 2));
    let old = run(&mut host, vec![connect(container(1), "10.0.0.1", 443)]);
    assert!(old.is_empty(), "{}", brief(&old));
}

#[test]
fn a_faulting_and_disabled_rule_keeps_persisting_its_state() {
    let tmp = TempDir::new("fault");
    let dir = tmp.state_dir();
    let mut host = host_with(Limits::default(), &["stateful-panic"]);
    host.persist_to(&dir, |_| true).unwrap();
    // One batch: a mark, then a trap after which the instance cannot be recreated (its
    // `init` refuses), so the rule ends disabled with its state parked.
    run(
        &mut host,
        vec![
            exec(container(1), &["MARK=kept"]),
            exec(container(2), &["TRAP=refuse-init"]),
        ],
    );
    assert!(host.is_disabled("FIXTURE-STATEFUL-PANIC"));
    drop(host);

    let mut host = host_with(Limits::default(), &["stateful-panic"]);
    let report = host.persist_to(&dir, |_| true).unwrap();
    // Container 1's mark and container 2's refuse-init flag.
    assert_eq!((report.restored, report.containers), (2, 2));
    let findings = connects(&mut host, 1);
    assert_eq!(findings.len(), 1, "{}", brief(&findings));
    assert_eq!(findings[0].data()["mark"], "kept");
}

/// Child: persist, then make writes fail with EFBIG (RLIMIT_FSIZE) while rules keep
/// changing state; detection must not notice. Then lift the limit: the next batch
/// writes everything that was pending.
fn disk_full_child(dir: &Path) {
    let mut host = host_with(Limits::default(), &["stateful-panic"]);
    host.persist_to(dir, |_| true).unwrap();
    run(&mut host, vec![exec(container(1), &["MARK=first"])]);
    let size = std::fs::metadata(dir.join("state.redb")).unwrap().len();
    set_file_size_limit(size);
    let big = format!("MARK={}", "x".repeat(16_000));
    for tag in 2..=20 {
        run(&mut host, vec![exec(container(tag), &[&big, K8S_ENV])]);
    }
    // Nothing was lost in memory: both rules still detect.
    let findings = connects(&mut host, 2);
    assert_eq!(findings.len(), 2, "{}", brief(&findings));
    set_file_size_limit(libc::RLIM_INFINITY);
    run(&mut host, vec![exec(container(21), &["MARK=after"])]);
}

fn set_file_size_limit(bytes: u64) {
    // SAFETY: plain libc calls on this (child) process; SIGXFSZ ignored so a write over
    // the limit fails with EFBIG instead of killing it.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[test]
fn failing_disk_writes_are_logged_retried_and_lose_nothing() {
    let tmp = TempDir::new("diskfull");
    let dir = tmp.state_dir();
    let stderr = killed_child("disk-full", &dir);
    let path = dir.join("state.redb");
    let path = path.to_str().unwrap();
    let logs = log_records(&stderr);
    let warnings: Vec<_> = logs
        .iter()
        .filter(|r| r.message().starts_with("cannot persist rule state") && r.field("path") == path)
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning while failing (rate limited): {}",
        brief(&logs)
    );
    assert_eq!(warnings[0].level(), "WARN");
    assert!(
        logs.iter()
            .any(|r| r.is("rule state is persisted again", &[("path", path)])),
        "{}",
        brief(&logs)
    );

    // Everything written while the disk refused reached it on the retry.
    let mut host = host_with(Limits::default(), &["stateful-panic"]);
    let report = host.persist_to(&dir, |_| true).unwrap();
    assert_eq!(report.containers, 21);
    assert_eq!(
        report.restored,
        21 + 19,
        "21 marks and 19 API server addresses"
    );
    let findings = connects(&mut host, 20);
    assert_eq!(findings.len(), 2);
    let mark = findings
        .iter()
        .find_map(|f| f.data().get("mark"))
        .expect("the stateful rule's finding");
    assert_eq!(mark.as_str().unwrap().len(), 16_000);
}

#[test]
fn a_bad_state_dir_is_a_clear_error_naming_the_path() {
    let tmp = TempDir::new("errors");
    let one_line = |error: anyhow::Error| {
        let text = format!("{error:#}");
        assert!(!text.contains('\n'), "{text}");
        text
    };

    // The directory cannot be created: a file is in the way.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let dir = file.join("state");
    let error = one_line(k8s_host().persist_to(&dir, |_| true).unwrap_err());
    assert!(error.contains(&dir.display().to_string()), "{error}");
    assert!(error.contains("state directory"), "{error}");

    // The store is not a redb file.
    let dir = tmp.path().join("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let error = one_line(k8s_host().persist_to(&dir, |_| true).unwrap_err());
    assert!(
        error.starts_with(&format!("cannot open the state store {}: ", path.display())),
        "{error}"
    );

    // A damaged store: a valid one with its pages overwritten.
    let dir = tmp.path().join("damaged");
    let mut host = k8s_host();
    host.persist_to(&dir, |_| true).unwrap();
    run(&mut host, vec![exec(container(1), &[K8S_ENV])]);
    drop(host);
    let path = dir.join("state.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for byte in &mut bytes[4096..len] {
        *byte ^= 0xa5;
    }
    std::fs::write(&path, bytes).unwrap();
    let error = one_line(k8s_host().persist_to(&dir, |_| true).unwrap_err());
    assert!(error.contains(&path.display().to_string()), "{error}");

    // The store path is a directory.
    let dir = tmp.path().join("is-dir");
    std::fs::create_dir_all(dir.join("state.redb")).unwrap();
    let error = one_line(k8s_host().persist_to(&dir, |_| true).unwrap_err());
    assert!(error.contains(&path_in(&dir)), "{error}");

    // Another host has the store open.
    let dir = tmp.path().join("busy");
    let mut first = k8s_host();
    first.persist_to(&dir, |_| true).unwrap();
    let mut second = k8s_host();
    let error = one_line(second.persist_to(&dir, |_| true).unwrap_err());
    assert!(error.contains(&path_in(&dir)), "{error}");
    // The refused host still works, without persisting.
    assert_eq!(second.state_file(), None);
    run(&mut second, vec![exec(container(1), &[K8S_ENV])]);
    assert!(detected(&mut second, 1));
}

fn path_in(dir: &Path) -> String {
    dir.join("state.redb").display().to_string()
}
