//! A private registry and a registry outage, through the real `docker-registry` (Debian)
//! started by the test on a loopback port: behind htpasswd basic auth (the file written
//! by Debian's `htpasswd`) with Docker's `config.json` as a dockerconfigjson Secret
//! mounts it; and stopped under a running agent and before a restart, which must start
//! from the verified cached copy and reload once the registry answers again.

use rulehost_tests::hostile::rulehost;
use rulehost_tests::registry::LocalRegistry;
use rulehost_tests::scene::*;
use rulehost_tests::signing::*;
use rulehost_tests::*;
use std::path::Path;
use std::process::{Command, Output};

const USER: &str = "rules-ci";
const PASSWORD: &str = "pw-7f3a9c21e5";

/// `rulehost ARGS` with `DOCKER_CONFIG` pointing at `docker_config_dir` (so this
/// machine's own Docker login is never read).
fn rulehost_with_docker_config(args: &[&str], docker_config_dir: &Path) -> Output {
    Command::new(rulehost_bin())
        .args(args)
        .env("DOCKER_CONFIG", docker_config_dir)
        .output()
        .expect("target/release/rulehost")
}

/// One line of stderr, naming `what`, and no secret in it.
fn assert_one_line_naming(out: &Output, what: &[&str]) {
    assert!(!out.status.success(), "succeeded: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for part in what {
        assert!(stderr.contains(part), "{part:?} not in: {stderr}");
    }
    assert!(
        !stderr.contains(PASSWORD),
        "the password was shown: {stderr}"
    );
}

#[test]
fn a_private_registry_is_used_with_its_login_and_refused_without_one_in_one_line() {
    let registry = LocalRegistry::start_with_login("auth", USER, PASSWORD);
    let dir = TempDir::new("registry-auth");
    let login = dir.0.join("config.json");
    registry.docker_config(&login, USER, PASSWORD);
    let wrong = dir.0.join("wrong.json");
    registry.docker_config(&wrong, USER, "not-the-password");
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let reference = registry.reference("private/k8s:v1");
    let rule = k8s_rule_file();
    let rule = rule.to_str().unwrap();
    let pulled = dir.0.join("pulled.wasm");
    let pulled = pulled.to_str().unwrap();

    // Without any login: push and pull are refused in one line naming the registry.
    let out = rulehost_with_docker_config(&["rule", "push", rule, &reference], &empty);
    assert_one_line_naming(
        &out,
        &[
            &registry.address,
            "requires credentials",
            "no registry config",
        ],
    );
    let out = rulehost_with_docker_config(&["rule", "pull", &reference, "-o", pulled], &empty);
    assert_one_line_naming(&out, &[&registry.address, "requires credentials"]);

    // With the login: push, then pull the same bytes (the flag and Docker's default place).
    let out = cli(&[
        "rule",
        "push",
        rule,
        &reference,
        "--registry-config",
        login.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::copy(&login, empty.join("config.json")).unwrap();
    let out = rulehost_with_docker_config(&["rule", "pull", &reference, "-o", pulled], &empty);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(pulled).unwrap(), k8s_bytes());

    // A wrong password is named as refused, with the file it came from.
    let out = cli(&[
        "rule",
        "pull",
        &reference,
        "-o",
        pulled,
        "--registry-config",
        wrong.to_str().unwrap(),
    ]);
    assert_one_line_naming(
        &out,
        &[&registry.address, "refused the credentials", "wrong.json"],
    );

    // The agent pulls it with the login too, and logs no secret.
    let scene = Scene::start(
        "registry-auth",
        48,
        &[
            "--rule",
            &format!("oci://{reference}"),
            "--registry-config",
            login.to_str().unwrap(),
            "--cache-dir",
            dir.0.join("cache").to_str().unwrap(),
        ],
    );
    assert_eq!(
        scene.connect_expect_finding(1, true),
        sha256_hex(&k8s_bytes())
    );
    let leaked: Vec<String> = scene
        .agent
        .log()
        .into_iter()
        .filter(|l| l.contains(PASSWORD))
        .collect();
    assert!(leaked.is_empty(), "{}", brief(&leaked));

    // And an agent without it does not start, saying why in one line.
    let out = rulehost(
        &[
            "run",
            "--check",
            "--no-state-dir",
            "--rule",
            &format!("oci://{reference}"),
            "--registry-config",
            wrong.to_str().unwrap(),
            "--cache-dir",
            dir.0.join("cache-none").to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_naming(&out, &["cannot load rule", "refused the credentials"]);
}

/// `rule push` with a login and a signing key; the digest.
fn push_signed(bytes: &[u8], reference: &str, key: &Path, login: &Path, dir: &Path) -> String {
    let file = dir.join("push.wasm");
    std::fs::write(&file, bytes).unwrap();
    let out = cli(&[
        "rule",
        "push",
        file.to_str().unwrap(),
        reference,
        "--key",
        key.to_str().unwrap(),
        "--registry-config",
        login.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .trim()
        .rsplit_once('@')
        .unwrap()
        .1
        .to_owned()
}

#[test]
fn an_agent_starts_from_its_verified_cache_while_the_registry_is_down_and_reloads_when_it_is_back()
{
    let mut registry = LocalRegistry::start_with_login("outage", USER, PASSWORD);
    let dir = TempDir::new("registry-outage");
    let login = dir.0.join("config.json");
    registry.docker_config(&login, USER, PASSWORD);
    let (key, public) = keygen(&dir.0, "author");
    let reference = registry.reference("rules/k8s:stable");
    let v1 = rule_variant(&k8s_bytes(), "outage-1");
    let digest = push_signed(&v1, &reference, &key, &login, &dir.0);
    let source = format!("oci://{reference}");
    let cache = dir.0.join("cache");
    let args_of = |cache: &Path| -> Vec<String> {
        [
            "--rule",
            &source,
            "--trusted-key",
            public.to_str().unwrap(),
            "--registry-config",
            login.to_str().unwrap(),
            "--oci-follow",
            "200ms",
            "--cache-dir",
            cache.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    {
        // A first start pulls and caches v1.
        let owned = args_of(&cache);
        let first: Vec<&str> = owned.iter().map(String::as_str).collect();
        let scene = Scene::start("registry-outage-1", 49, &first);
        assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));
    }

    // The registry goes down; a tampered copy of the cache is refused at start.
    registry.stop();
    let tampered = dir.0.join("tampered");
    copy_dir(&cache, &tampered);
    let cached_rule = find_file(&tampered, "k8s.wasm");
    let mut bytes = std::fs::read(&cached_rule).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&cached_rule, bytes).unwrap();
    let owned = args_of(&tampered);
    let check: Vec<&str> = [
        &["run", "--check", "--no-state-dir"][..],
        &owned.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat();
    let out = cli(&check);
    assert_one_line_naming(
        &out,
        &[
            "cannot load rule",
            "no verified copy in the cache",
            "tampered",
        ],
    );

    // The real cache starts the agent on v1, with one WARN saying so.
    let owned = args_of(&cache);
    let second: Vec<&str> = owned.iter().map(String::as_str).collect();
    let scene = Scene::start("registry-outage-2", 50, &second);
    let warned = scene.agent.wait_for_log("the start from the cache", |r| {
        r.message() == "registry unavailable at start; running the verified cached copy and following the tag"
    });
    assert_eq!(
        (warned.level(), warned.field("digest")),
        ("WARN", digest.clone())
    );
    assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));

    // The follow loop meets the outage (logged once), then the registry is back and the
    // tag moves: the agent reloads the new signed version.
    scene
        .agent
        .wait_for_log("the follow loop meeting the outage", |r| {
            r.is(
                "registry unreachable; the running version stays",
                &[("source", &source)],
            )
        });
    registry.resume();
    scene
        .agent
        .wait_for_log("the registry answering again", |r| {
            r.is("registry answers again", &[("source", &source)])
        });
    let v2 = rule_variant(&k8s_bytes(), "outage-2");
    push_signed(&v2, &reference, &key, &login, &dir.0);
    scene.agent.wait_for_log("v2 reloaded", |r| {
        r.is("rule reloaded", &[("sha256", &sha256_hex(&v2))])
    });
    assert_eq!(scene.connect_expect_finding(2, false), sha256_hex(&v2));
    let outages: Vec<String> = scene
        .agent
        .log_records()
        .iter()
        .filter(|r| r.message() == "registry unreachable; the running version stays")
        .map(|r| r.field("error"))
        .collect();
    assert_eq!(
        outages.len(),
        1,
        "the outage logged {} times: {}",
        outages.len(),
        brief(&outages)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The one file called `name` under `dir`.
fn find_file(dir: &Path, name: &str) -> std::path::PathBuf {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let found = find_file(&path, name);
            if found.exists() {
                return found;
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return path;
        }
    }
    dir.join("missing").join(name)
}
