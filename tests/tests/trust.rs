//! Which rules an agent loads: digest pins and cosign-format signatures, through the real
//! binary, checked at start and on every hot reload (files, a ConfigMap swap of a rule
//! and its signature together), with openssl as an independent ECDSA implementation.

use rulehost_tests::hostile::stderr_lines;
use rulehost_tests::scene::*;
use rulehost_tests::signing::*;
use rulehost_tests::*;
use std::path::Path;
use std::process::{Command, Output};

/// `inspect`'s signature status of `rule` against `key`.
fn inspected_status(rule: &Path, key: &Path) -> String {
    let out = cli(&[
        "inspect",
        rule.to_str().unwrap(),
        "--trusted-key",
        key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["signature"]["status"].as_str().unwrap().to_owned()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (Debian package openssl; `make setup` installs it)")
}

#[test]
fn signatures_are_cosigns_format_both_ways_with_openssl() {
    let dir = TempDir::new("trust-openssl");
    let (key, public) = keygen(&dir.0, "author");
    let rule = dir.0.join("k8s.wasm");
    std::fs::write(&rule, k8s_bytes()).unwrap();
    assert_eq!(inspected_status(&rule, &public), "unsigned");

    // rulehost signs; openssl verifies the DER signature over the file with the PEM key.
    sign(&key, &rule);
    assert_eq!(inspected_status(&rule, &public), "verified");
    let der = dir.0.join("sig.der");
    let decoded = Command::new("base64")
        .arg("-d")
        .arg(signature_of(&rule))
        .output()
        .unwrap();
    std::fs::write(&der, decoded.stdout).unwrap();
    let verified = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        public.to_str().unwrap(),
        "-signature",
        der.to_str().unwrap(),
        rule.to_str().unwrap(),
    ]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    // openssl signs with its own key; rulehost verifies against that key only.
    let (okey, opub) = (dir.0.join("o.key"), dir.0.join("o.pub"));
    assert!(
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            okey.to_str().unwrap()
        ])
        .status
        .success()
    );
    assert!(
        openssl(&[
            "ec",
            "-in",
            okey.to_str().unwrap(),
            "-pubout",
            "-out",
            opub.to_str().unwrap()
        ])
        .status
        .success()
    );
    let signed = openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        okey.to_str().unwrap(),
        rule.to_str().unwrap(),
    ]);
    assert!(signed.status.success());
    let encoded = Command::new("base64")
        .arg("-w0")
        .stdin(
            std::fs::File::open({
                std::fs::write(&der, &signed.stdout).unwrap();
                &der
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    std::fs::write(signature_of(&rule), encoded.stdout).unwrap();
    assert_eq!(inspected_status(&rule, &opub), "verified");
    assert_eq!(inspected_status(&rule, &public), "invalid");

    // An openssl (SEC1) private key signs through `rulehost rule sign` too.
    sign(&okey, &rule);
    assert_eq!(inspected_status(&rule, &opub), "verified");
}

/// `rulehost run --check` with `args`; its one error line.
fn refused_at_start(args: &[&str]) -> String {
    let out = run_check(args);
    assert!(!out.status.success(), "{args:?} must be refused");
    let lines = stderr_lines(&out);
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{}", brief(&lines));
    errors[0].clone()
}

#[test]
fn an_unsigned_wrongly_signed_or_unpinned_rule_is_refused_at_start() {
    let dir = TempDir::new("trust-start");
    let (key, public) = keygen(&dir.0, "operator");
    let (other, _) = keygen(&dir.0, "stranger");
    let cache = dir.0.join("cache");
    let rule = dir.0.join("k8s.wasm");
    std::fs::write(&rule, k8s_bytes()).unwrap();
    let (rule_arg, key_arg, cache_arg) = (
        rule.to_str().unwrap(),
        public.to_str().unwrap(),
        cache.to_str().unwrap(),
    );
    let with_key = [
        "--rule",
        rule_arg,
        "--trusted-key",
        key_arg,
        "--cache-dir",
        cache_arg,
    ];

    let error = refused_at_start(&with_key);
    assert!(
        error.contains(rule_arg) && error.contains("unsigned"),
        "{error}"
    );

    sign(&other, &rule);
    let error = refused_at_start(&with_key);
    assert!(error.contains("does not verify"), "{error}");

    sign(&key, &rule);
    let out = run_check(&with_key);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A pin in the config file: other bytes are refused, naming both digests.
    let actual = sha256_hex(&k8s_bytes());
    let pinned = sha256_hex(b"another rule");
    let config = dir.0.join("config.yaml");
    std::fs::write(
        &config,
        format!("rules:\n  - path: {rule_arg}\n    sha256: {pinned}\n"),
    )
    .unwrap();
    let error = refused_at_start(&[
        "--config",
        config.to_str().unwrap(),
        "--cache-dir",
        cache_arg,
    ]);
    for part in [rule_arg, &pinned, &actual] {
        assert!(error.contains(part), "{part} in {error}");
    }
    std::fs::write(
        &config,
        format!("rules:\n  - path: {rule_arg}\n    sha256: {actual}\n"),
    )
    .unwrap();
    let out = run_check(&[
        "--config",
        config.to_str().unwrap(),
        "--cache-dir",
        cache_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Publishes a ConfigMap version: the rule and (if any) its signature in a new
/// timestamped directory, then `..data` swapped to it at once, as the kubelet does.
fn publish(root: &Path, version: &str, rule: &[u8], signature: Option<&[u8]>) {
    let stamp = root.join(format!("..2026_12_02_{version}"));
    std::fs::create_dir_all(&stamp).unwrap();
    std::fs::write(stamp.join("k8s.wasm"), rule).unwrap();
    if let Some(signature) = signature {
        std::fs::write(stamp.join("k8s.wasm.sig"), signature).unwrap();
    }
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(stamp.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, root.join("..data")).unwrap();
}

/// The signature `key` makes over `bytes` (through `rulehost rule sign`).
fn signature(dir: &Path, key: &Path, bytes: &[u8]) -> Vec<u8> {
    let file = dir.join("to-sign.wasm");
    std::fs::write(&file, bytes).unwrap();
    sign(key, &file);
    std::fs::read(signature_of(&file)).unwrap()
}

#[test]
fn a_badly_signed_hot_reload_is_refused_and_the_old_rule_keeps_detecting() {
    let dir = TempDir::new("trust-reload");
    let keys = dir.0.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (key, public) = keygen(&keys, "operator");
    let (stranger, _) = keygen(&keys, "stranger");
    let root = dir.0.join("rules");
    std::fs::create_dir_all(&root).unwrap();
    let version = |tag: &str| rule_variant(&k8s_bytes(), tag);
    let v1 = version("signed-1");
    publish(&root, "1", &v1, Some(&signature(&keys, &key, &v1)));
    for name in ["k8s.wasm", "k8s.wasm.sig"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
    }
    let source = root.join("k8s.wasm");
    let scene = Scene::start(
        "trust-reload",
        45,
        &[
            "--rules",
            root.to_str().unwrap(),
            "--trusted-key",
            public.to_str().unwrap(),
            "--cache-dir",
            dir.0.join("..cache").to_str().unwrap(),
        ],
    );
    assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));

    let refusals = [
        ("stranger", Some(&stranger), "does not verify"),
        ("unsigned", None, "unsigned"),
    ];
    for (n, (tag, signer, why)) in refusals.into_iter().enumerate() {
        let bad = version(tag);
        let signature = signer.map(|key| signature(&keys, key, &bad));
        publish(&root, tag, &bad, signature.as_deref());
        let rejected = scene.agent.wait_for_log(&format!("{tag} refused"), |r| {
            r.is("rule rejected", &[("source", source.to_str().unwrap())])
                && r.field("reason").contains(why)
        });
        assert_eq!(
            rejected.field("kept_sha256"),
            sha256_hex(&v1),
            "{rejected:?}"
        );
        assert_eq!(
            scene.connect_expect_finding(n + 2, false),
            sha256_hex(&v1),
            "after {tag}"
        );
    }

    // The rule and its signature swapped together: the pair is what is checked.
    let v2 = version("signed-2");
    publish(&root, "2", &v2, Some(&signature(&keys, &key, &v2)));
    scene
        .agent
        .wait_for_log("the signed version reloaded", |r| {
            r.is(
                "rule reloaded",
                &[
                    ("sha256", &sha256_hex(&v2)),
                    ("trust", "signed"),
                    ("signed_by", public.to_str().unwrap()),
                ],
            )
        });
    assert_eq!(scene.connect_expect_finding(4, false), sha256_hex(&v2));
}

#[test]
fn a_pinned_rule_refuses_other_bytes_on_reload() {
    let dir = TempDir::new("trust-pin");
    let rule = dir.0.join("k8s.wasm");
    let v1 = rule_variant(&k8s_bytes(), "pinned");
    std::fs::write(&rule, &v1).unwrap();
    let config = dir.0.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "rules:\n  - path: {}\n    sha256: {}\n",
            rule.display(),
            sha256_hex(&v1)
        ),
    )
    .unwrap();
    let scene = Scene::start(
        "trust-pin",
        46,
        &[
            "--config",
            config.to_str().unwrap(),
            "--cache-dir",
            dir.0.join("cache").to_str().unwrap(),
        ],
    );
    assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));
    scene.agent.wait_for_log("the pinned version loaded", |r| {
        r.is(
            "rule loaded",
            &[("sha256", &sha256_hex(&v1)), ("trust", "pinned")],
        )
    });
    let v2 = rule_variant(&k8s_bytes(), "not pinned");
    write_atomically(&rule, &v2);
    let rejected = scene.agent.wait_for_log("the unpinned bytes refused", |r| {
        r.is("rule rejected", &[("source", rule.to_str().unwrap())])
    });
    let reason = rejected.field("reason");
    assert!(
        reason.contains(&sha256_hex(&v1)) && reason.contains(&sha256_hex(&v2)),
        "{reason}"
    );
    assert_eq!(scene.connect_expect_finding(2, false), sha256_hex(&v1));
}
