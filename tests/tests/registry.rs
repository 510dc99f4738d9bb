//! Rules through a real OCI registry (Debian's docker-registry, started by the test on
//! a loopback port; nothing outside the machine): push, pull, cosign-style signatures
//! beside the artifact, tampering refused, and a live agent following a tag.

use rulehost_tests::hostile::{self, rulehost};
use rulehost_tests::registry::LocalRegistry;
use rulehost_tests::scene::*;
use rulehost_tests::signing::*;
use rulehost_tests::*;
use std::path::Path;
use std::process::Output;

/// `rule push FILE REF [--key KEY]`; the pushed manifest digest.
fn push(dir: &Path, bytes: &[u8], reference: &str, key: Option<&Path>) -> String {
    let file = dir.join("push.wasm");
    std::fs::write(&file, bytes).unwrap();
    let mut args = vec!["rule", "push", file.to_str().unwrap(), reference];
    if let Some(key) = key {
        args.extend(["--key", key.to_str().unwrap()]);
    }
    let out = cli(&args);
    assert!(
        out.status.success(),
        "push {reference}: {}",
        text(&out.stderr)
    );
    let printed = text(&out.stdout);
    printed
        .trim()
        .rsplit_once('@')
        .map(|(_, digest)| digest.to_owned())
        .unwrap_or_else(|| panic!("push printed no digest: {printed}"))
}

/// `rule pull REF -o FILE --trusted-key KEY`.
fn pull(reference: &str, output: &Path, key: &Path) -> Output {
    let _ = std::fs::remove_file(output);
    cli(&[
        "rule",
        "pull",
        reference,
        "-o",
        output.to_str().unwrap(),
        "--trusted-key",
        key.to_str().unwrap(),
    ])
}

#[test]
fn pushed_rules_pull_only_when_signed_by_a_trusted_key_and_untampered() {
    let registry = LocalRegistry::start("pull");
    let dir = TempDir::new("registry-pull");
    let (key, public) = keygen(&dir.0, "author");
    let (_, stranger) = keygen(&dir.0, "stranger");
    let pulled = dir.0.join("pulled.wasm");
    let v1 = rule_variant(&k8s_bytes(), "oci-1");
    let reference = registry.reference("rules/k8s:1");
    let digest = push(&dir.0, &v1, &reference, Some(&key));

    let out = pull(&format!("oci://{reference}"), &pulled, &public);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&pulled).unwrap(), v1, "the bytes pushed");
    assert!(text(&out.stdout).contains(&digest), "{}", text(&out.stdout));

    let refusals: [(&str, &Path, &str); 2] = [
        (&reference, &stranger, "does not verify"),
        (&registry.reference("rules/other:1"), &public, "unsigned"),
    ];
    push(
        &dir.0,
        &rule_variant(&k8s_bytes(), "unsigned"),
        refusals[1].0,
        None,
    );
    for (reference, key, why) in refusals {
        let out = pull(reference, &pulled, key);
        assert!(
            !out.status.success(),
            "{reference} pulled with {}",
            key.display()
        );
        assert!(
            text(&out.stderr).contains(why),
            "{why}: {}",
            text(&out.stderr)
        );
        assert!(!pulled.exists(), "nothing written for a refused pull");
    }

    // inspect reads a registry rule like a file, and shows which key its signature has.
    let out = cli(&[
        "inspect",
        &format!("oci://{reference}"),
        "--trusted-key",
        public.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sha256"], sha256_hex(&v1), "{report}");
    assert_eq!(report["signature"]["status"], "verified", "{report}");
    assert_eq!(report["signature"]["digest"], digest.as_str(), "{report}");

    // replay takes a registry rule wherever it takes a rule file.
    let out = rulehost(
        &["replay", "--rule", &format!("oci://{reference}"), "-"],
        &hostile::k8s_scenario(0x51),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let findings = hostile::stdout_findings(&out);
    assert_eq!(findings.len(), 1, "{}", brief(&findings));
    assert_eq!(
        findings[0]["rule"]["sha256"],
        sha256_hex(&v1),
        "{}",
        brief(&findings)
    );
    assert_eq!(findings[0]["rule"]["name"], "k8s", "{}", brief(&findings));

    // A config entry pinning other bytes refuses the artifact at start, naming both.
    let config = dir.0.join("config.yaml");
    let pinned = sha256_hex(b"another rule");
    std::fs::write(
        &config,
        format!("rules:\n  - oci: {reference}\n    sha256: {pinned}\n"),
    )
    .unwrap();
    let cache = dir.0.join("cache");
    let out = run_check(&[
        "--config",
        config.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a mismatching pin loaded");
    let error = text(&out.stderr);
    for part in [reference.as_str(), &pinned, &sha256_hex(&v1)] {
        assert!(error.contains(part), "{part} in {error}");
    }

    // Someone with write access to the registry's storage changes the rule's bytes
    // (same length): the layer digest no longer matches, the signature chain breaks.
    let manifest = registry.blob_file(&digest);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = registry.blob_file(layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out = pull(&reference, &pulled, &public);
    assert!(!out.status.success(), "a tampered layer pulled");
    assert!(!pulled.exists(), "nothing written for a tampered layer");
    assert!(text(&out.stderr).contains(layer), "{}", text(&out.stderr));
}

#[test]
fn an_agent_follows_a_signed_tag_and_keeps_its_rule_when_an_unsigned_one_is_pushed() {
    let registry = LocalRegistry::start("follow");
    let dir = TempDir::new("registry-follow");
    let (key, public) = keygen(&dir.0, "author");
    let reference = registry.reference("rules/k8s:stable");
    let v1 = rule_variant(&k8s_bytes(), "follow-1");
    push(&dir.0, &v1, &reference, Some(&key));
    let source = format!("oci://{reference}");
    let scene = Scene::start(
        "registry-follow",
        47,
        &[
            "--rule",
            &source,
            "--trusted-key",
            public.to_str().unwrap(),
            "--oci-follow",
            "200ms",
            "--cache-dir",
            dir.0.join("cache").to_str().unwrap(),
        ],
    );
    assert_eq!(scene.connect_expect_finding(1, true), sha256_hex(&v1));

    // The tag moves to an unsigned artifact: refused, the running version stays.
    let unsigned = rule_variant(&k8s_bytes(), "follow-unsigned");
    let moved = push(&dir.0, &unsigned, &reference, None);
    scene
        .agent
        .wait_for_log("the unsigned digest refused", |r| {
            r.is("rule rejected", &[("source", &source), ("digest", &moved)])
        });
    assert_eq!(scene.connect_expect_finding(2, false), sha256_hex(&v1));

    // A signed push to the tag is pulled, verified and hot-reloaded.
    let v2 = rule_variant(&k8s_bytes(), "follow-2");
    push(&dir.0, &v2, &reference, Some(&key));
    scene.agent.wait_for_log("the signed digest reloaded", |r| {
        r.is("rule reloaded", &[("sha256", &sha256_hex(&v2))])
    });
    assert_eq!(scene.connect_expect_finding(3, false), sha256_hex(&v2));
}
