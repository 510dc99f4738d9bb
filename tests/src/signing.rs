//! `rulehost rule` commands for the trust and registry tests: the real binary makes
//! the keys and signatures the agent is then asked to accept or refuse.

use crate::hostile::rulehost;
use std::path::{Path, PathBuf};
use std::process::Output;

/// `rulehost ARGS` with no stdin; its output.
pub fn cli(args: &[&str]) -> Output {
    rulehost(args, &[])
}

/// `rulehost run --check --no-state-dir ARGS`: loads (and checks) the rules, attaches
/// nothing; its output.
pub fn run_check(args: &[&str]) -> Output {
    cli(&[&["run", "--check", "--no-state-dir"][..], args].concat())
}

/// Command output as text (for assertion messages).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A key pair from `rulehost rule keygen`: (private, public).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let out = cli(&[
        "rule",
        "keygen",
        "--output-prefix",
        prefix.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Signs `rule` with `key`, writing `<rule>.sig`.
pub fn sign(key: &Path, rule: &Path) {
    let out = cli(&[
        "rule",
        "sign",
        "--key",
        key.to_str().unwrap(),
        rule.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Where `rule`'s signature file is.
pub fn signature_of(rule: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", rule.display()))
}

/// The real cosign (Debian trixie's 2.5, fetched by `make setup` into target/tools/bin)
/// run with `args`, offline: keys only, no transparency log; an empty key password.
pub fn cosign(args: &[&str]) -> Output {
    let bin = crate::target_dir().join("tools/bin/cosign");
    std::process::Command::new(&bin)
        .args(args)
        .env("COSIGN_PASSWORD", "")
        .output()
        .unwrap_or_else(|e| panic!("{} (`make setup` fetches it): {e}", bin.display()))
}
