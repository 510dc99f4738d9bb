//! Hot reload: through the dispatcher's swap (no event lost or doubled, state kept) and
//! through a live `rulehost run` watching real files (in-place write, atomic rename,
//! ConfigMap `..data` swap, SIGHUP, broken replacements, id collisions, removal).

use rulehost::dispatch::Dispatcher;
use rulehost::rules::{Limits, RuleEngine};
use rulehost_tests::scene::*;
use rulehost_tests::*;
use std::sync::Arc;

#[test]
fn swapping_between_batches_loses_nothing_and_keeps_state() {
    let runtime = Arc::new(RuleEngine::new(Limits::default()).unwrap());
    let versions: Vec<Vec<u8>> = (0..2)
        .map(|i| rule_variant(&k8s_bytes(), &i.to_string()))
        .collect();
    let rules: Vec<_> = versions
        .iter()
        .map(|bytes| runtime.load("k8s_api_connection", bytes).unwrap())
        .collect();
    let mut host = Dispatcher::new(runtime.clone());
    host.add_from("rules/k8s.wasm", rules[0].clone()).unwrap();
    // One exec per container, before any swap; afterwards only connects.
    let containers: Vec<_> = (20..30).map(container).collect();
    let execs = containers
        .iter()
        .map(|c| exec(c.clone(), &["KUBERNETES_SERVICE_HOST=10.96.0.1"]))
        .collect();
    assert!(run(&mut host, execs).is_empty());
    let mut total = 0;
    for round in 0..20 {
        let live = &rules[round % 2];
        if round > 0 {
            host.replace("rules/k8s.wasm", live.clone()).unwrap();
        }
        let batch: Vec<_> = containers
            .iter()
            .map(|c| connect(c.clone(), "10.96.0.1", 443))
            .collect();
        let findings = run(&mut host, batch);
        assert_eq!(
            findings.len(),
            containers.len(),
            "round {round}: every connect exactly once"
        );
        assert!(
            findings.iter().all(|f| *f.rule().sha256 == *live.sha256),
            "findings name the live version"
        );
        total += findings.len();
    }
    assert_eq!(total, 200);
    assert_eq!(host.state_containers("TRC-1013"), 10);
}

#[test]
fn a_failed_swap_keeps_the_old_version_and_its_state() {
    let runtime = Arc::new(RuleEngine::new(Limits::default()).unwrap());
    let rule = runtime.load("k8s_api_connection", &k8s_bytes()).unwrap();
    let mut host = Dispatcher::new(runtime.clone());
    host.add_from("a.wasm", rule.clone()).unwrap();
    let c = container(31);
    run(
        &mut host,
        vec![exec(c.clone(), &["KUBERNETES_SERVICE_HOST=10.96.0.1"])],
    );
    // Another source with the same rule id collides, in add and in replace.
    let other = runtime
        .load("k8s_api_connection", &rule_variant(&k8s_bytes(), "x"))
        .unwrap();
    let error = host
        .add_from("b.wasm", other.clone())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rule id TRC-1013 is already loaded from a.wasm"),
        "{error}"
    );
    assert!(host.replace("missing.wasm", other).is_err());
    assert_eq!(run(&mut host, vec![connect(c, "10.96.0.1", 443)]).len(), 1);
}

#[test]
fn live_reload_by_atomic_rename_and_in_place_write_keeps_detecting() {
    let dir = TempDir::new("rename");
    let rule = dir.0.join("k8s.wasm");
    let v1 = rule_variant(&k8s_bytes(), "v1");
    std::fs::write(&rule, &v1).unwrap();
    let cache = dir.0.join("cache");
    let scene = Scene::start(
        "reload-rename",
        40,
        &[
            "--rule",
            rule.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));

    // Atomic rename: the container's exec was before the reload; no new exec needed.
    let v2 = rule_variant(&k8s_bytes(), "v2");
    write_atomically(&rule, &v2);
    let reloaded = scene.agent.wait_for_log("v2 reloaded", |r| {
        r.is("rule reloaded", &[("sha256", &sha256_hex(&v2))])
    });
    for (field, value) in [
        ("rule", "k8s"),
        ("id", "TRC-1013"),
        ("event", "k8s_api_connection"),
        ("version", "0.3.0"),
        ("previous_sha256", &sha256_hex(&v1)),
    ] {
        assert_eq!(reloaded.field(field), value, "{reloaded:?}");
    }
    assert_eq!(scene.connect_expect_finding(2, false), sha256_hex(&v2));

    // In-place write of the same file.
    let v3 = rule_variant(&k8s_bytes(), "v3");
    std::fs::write(&rule, &v3).unwrap();
    scene.agent.wait_for_log("v3 reloaded", |r| {
        r.is(
            "rule reloaded",
            &[
                ("sha256", &sha256_hex(&v3)),
                ("source", rule.to_str().unwrap()),
            ],
        )
    });
    assert_eq!(scene.connect_expect_finding(3, false), sha256_hex(&v3));

    // A broken replacement is rejected with one line; the running version stays.
    write_atomically(&rule, b"not wasm at all");
    let rejected = scene.agent.wait_for_log("the broken file rejected", |r| {
        r.is("rule rejected", &[("source", rule.to_str().unwrap())])
    });
    assert!(
        rejected.field("reason").contains("not a WebAssembly file"),
        "{rejected:?}"
    );
    assert_eq!(rejected.field("kept_version"), "0.3.0");
    assert_eq!(rejected.field("kept_sha256"), sha256_hex(&v3));
    assert_eq!(scene.connect_expect_finding(4, false), sha256_hex(&v3));

    // Back to a version seen before (served from the compile cache).
    std::fs::write(&rule, &v1).unwrap();
    scene.agent.wait_for_log("v1 reloaded", |r| {
        r.is(
            "rule reloaded",
            &[
                ("sha256", &sha256_hex(&v1)),
                ("source", rule.to_str().unwrap()),
                ("previous_sha256", &sha256_hex(&v3)),
            ],
        )
    });
    assert_eq!(scene.connect_expect_finding(5, false), sha256_hex(&v1));
}

#[test]
fn live_reload_through_a_configmap_data_swap() {
    let dir = TempDir::new("configmap");
    let root = &dir.0;
    let publish = |version: &str, bytes: &[u8]| {
        let stamp = root.join(format!("..2026_11_23_{version}"));
        std::fs::create_dir_all(&stamp).unwrap();
        std::fs::write(stamp.join("k8s.wasm"), bytes).unwrap();
        let tmp = root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(stamp.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
    };
    let v1 = rule_variant(&k8s_bytes(), "cm1");
    publish("1", &v1);
    let rule = root.join("k8s.wasm");
    std::os::unix::fs::symlink("..data/k8s.wasm", &rule).unwrap();
    let cache = root.join("..cache");
    let scene = Scene::start(
        "reload-configmap",
        41,
        &[
            "--rules",
            root.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));
    let v2 = rule_variant(&k8s_bytes(), "cm2");
    publish("2", &v2);
    scene
        .agent
        .wait_for_log("the new ConfigMap version reloaded", |r| {
            r.is(
                "rule reloaded",
                &[
                    ("rule", "k8s"),
                    ("id", "TRC-1013"),
                    ("sha256", &sha256_hex(&v2)),
                ],
            )
        });
    assert_eq!(scene.connect_expect_finding(2, false), sha256_hex(&v2));
}

#[test]
fn live_rules_directory_adds_collides_and_removes() {
    let dir = TempDir::new("dir");
    let first = dir.0.join("a.wasm");
    let v1 = rule_variant(&k8s_bytes(), "a");
    std::fs::write(&first, &v1).unwrap();
    let cache = dir.0.join(".cache");
    let mut scene = Scene::start(
        "reload-dir",
        42,
        &[
            "--rules",
            dir.0.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));
    // A second file with the same rule id is refused, naming both.
    let second = dir.0.join("b.wasm");
    write_atomically(&second, &rule_variant(&k8s_bytes(), "b"));
    let rejected = scene
        .agent
        .wait_for_log("the colliding file rejected", |r| {
            r.is("rule rejected", &[("source", second.to_str().unwrap())])
        });
    assert!(
        rejected.field("reason").contains(&format!(
            "rule id TRC-1013 is already loaded from {}",
            first.display()
        )),
        "{rejected:?}"
    );
    // Removing the loaded file unloads it.
    std::fs::remove_file(&first).unwrap();
    scene.agent.wait_for_log("a.wasm unloaded", |r| {
        r.is(
            "rule unloaded",
            &[
                ("rule", "a"),
                ("id", "TRC-1013"),
                ("sha256", &sha256_hex(&v1)),
            ],
        )
    });
    // SIGHUP rescans: b.wasm's id is now free.
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(scene.agent.pid() as i32, libc::SIGHUP) };
    scene.agent.wait_for_log("b.wasm loaded", |r| {
        r.is(
            "rule loaded",
            &[
                ("rule", "b"),
                ("id", "TRC-1013"),
                ("sha256", &sha256_hex(&rule_variant(&k8s_bytes(), "b"))),
            ],
        )
    });
    assert!(scene.agent.stop().success());
}
