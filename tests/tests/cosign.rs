//! Interoperability with the real cosign (Debian trixie's 2.5), both ways, offline (keys,
//! no transparency log): a rule signed by `cosign sign-blob` loads in the agent and one
//! signed by `rulehost rule sign` passes `cosign verify-blob`; an artifact pushed and
//! signed by `rulehost rule push --key` passes `cosign verify`, and one signed by `cosign
//! sign` pulls with `rulehost rule pull --trusted-key`, through a local docker-registry.

use rulehost_tests::registry::LocalRegistry;
use rulehost_tests::scene::TempDir;
use rulehost_tests::signing::*;
use rulehost_tests::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        text(&out.stderr).lines().last().unwrap_or("")
    );
    text(&out.stdout)
}

/// A cosign key pair (`cosign generate-key-pair`, empty password): (private, public).
fn cosign_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let out = std::process::Command::new(target_dir().join("tools/bin/cosign"))
        .arg("generate-key-pair")
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "")
        .output()
        .unwrap();
    ok(&out, "cosign generate-key-pair");
    (dir.join("cosign.key"), dir.join("cosign.pub"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn blob_signatures_verify_across_cosign_and_rulehost() {
    let dir = TempDir::new("cosign-blob");
    let (cosign_key, cosign_pub) = cosign_keys(&dir.0);
    let (rulehost_key, rulehost_pub) = keygen(&dir.0, "author");
    let rule = dir.0.join("k8s.wasm");
    std::fs::copy(k8s_rule_file(), &rule).unwrap();

    // cosign signs, the agent loads it as signed by cosign.pub.
    let signature = signature_of(&rule);
    ok(
        &cosign(&[
            "sign-blob",
            "--key",
            path(&cosign_key),
            "--tlog-upload=false",
            "--yes",
            "--output-signature",
            path(&signature),
            path(&rule),
        ]),
        "cosign sign-blob",
    );
    let out = run_check(&["--trusted-key", path(&cosign_pub), "--rule", path(&rule)]);
    ok(&out, "the agent with cosign's signature");
    let loaded = text(&out.stderr);
    assert!(
        loaded.contains("trust=\"signed\"")
            && loaded.contains(&format!("signed_by=\"{}\"", cosign_pub.display())),
        "{}",
        brief(
            &loaded
                .lines()
                .filter(|l| l.contains("rule loaded"))
                .collect::<Vec<_>>()
        )
    );
    // The same signature does not pass for another key.
    let out = run_check(&["--trusted-key", path(&rulehost_pub), "--rule", path(&rule)]);
    assert!(
        !out.status.success(),
        "cosign's signature passed for another key"
    );

    // rulehost signs, cosign verifies it (and refuses it for cosign's own key).
    sign(&rulehost_key, &rule);
    let verify = |key: &Path| {
        cosign(&[
            "verify-blob",
            "--key",
            path(key),
            "--signature",
            path(&signature),
            "--insecure-ignore-tlog=true",
            path(&rule),
        ])
    };
    let out = verify(&rulehost_pub);
    ok(&out, "cosign verify-blob of rulehost's signature");
    assert!(
        text(&out.stderr).contains("Verified OK"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !verify(&cosign_pub).status.success(),
        "verified with the wrong key"
    );
}

#[test]
fn registry_signatures_verify_across_cosign_and_rulehost() {
    let registry = LocalRegistry::start("cosign");
    let dir = TempDir::new("cosign-oci");
    let (cosign_key, cosign_pub) = cosign_keys(&dir.0);
    let (rulehost_key, rulehost_pub) = keygen(&dir.0, "author");
    let rule = k8s_rule_file();

    // rulehost pushes and signs; cosign verifies the signature it finds by the digest.
    let reference = registry.reference("rules/by-rulehost:1");
    let pushed = ok(
        &cli(&[
            "rule",
            "push",
            path(&rule),
            &reference,
            "--key",
            path(&rulehost_key),
        ]),
        "rule push --key",
    );
    let pushed = pushed.trim();
    let verify = |key: &Path, what: &str| {
        cosign(&[
            "verify",
            "--key",
            path(key),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            what,
        ])
    };
    let out = verify(&rulehost_pub, pushed);
    let payloads = ok(&out, "cosign verify of rulehost's signature");
    let digest = pushed.rsplit_once('@').unwrap().1;
    assert!(payloads.contains(digest), "{payloads}");
    assert!(
        !verify(&cosign_pub, pushed).status.success(),
        "verified with the wrong key"
    );

    // rulehost pushes unsigned, cosign signs the digest, rulehost pulls it verified.
    let reference = registry.reference("rules/by-cosign:1");
    let pushed = ok(
        &cli(&["rule", "push", path(&rule), &reference]),
        "rule push",
    );
    let pulled = dir.0.join("pulled.wasm");
    let pull = |key: &Path| {
        cli(&[
            "rule",
            "pull",
            &reference,
            "-o",
            path(&pulled),
            "--trusted-key",
            path(key),
        ])
    };
    assert!(
        !pull(&cosign_pub).status.success(),
        "pulled before cosign signed it"
    );
    ok(
        &cosign(&[
            "sign",
            "--key",
            path(&cosign_key),
            "--tlog-upload=false",
            "--allow-http-registry",
            "--yes",
            pushed.trim(),
        ]),
        "cosign sign",
    );
    let out = pull(&cosign_pub);
    let said = ok(&out, "rule pull of cosign's signature");
    assert!(
        said.contains(&format!("signature verified with {}", cosign_pub.display())),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&rule).unwrap()
    );
    assert!(
        !pull(&rulehost_pub).status.success(),
        "cosign's signature passed for another key"
    );
}
