//! `rulehost new --lang rust|js|python NAME`: each project builds with its language's
//! own toolchain (cargo + jco, componentize-js, componentize-py: the pinned ones `make`
//! installed, through `RULEHOST_TOOLS`) and passes its replay test as written.

use rulehost_tests::{brief, rulehost_bin, target_dir};
use std::path::Path;
use std::process::{Command, Output};

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_owned)
        .collect()
}

/// The workspace's pinned toolchain, which has the wasm target.
fn toolchain() -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rust-toolchain.toml");
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// `rulehost new --lang LANGUAGE --dir DIR NAME`.
fn new(language: &str, dir: &Path, name: &str) -> Output {
    Command::new(rulehost_bin())
        .args([
            "new",
            "--lang",
            language,
            "--dir",
            dir.to_str().unwrap(),
            name,
        ])
        .output()
        .unwrap()
}

fn script(dir: &Path, name: &str) -> Output {
    Command::new(dir.join(name))
        .env("RULEHOST_TOOLS", target_dir().join("tools"))
        .env("RULEHOST", rulehost_bin())
        .env("RUSTUP_TOOLCHAIN", toolchain())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap()
}

#[test]
fn a_new_project_in_each_language_builds_and_passes_its_replay_test() {
    let dir = std::env::temp_dir().join(format!("rulehost-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for language in ["rust", "js", "python"] {
        let name = format!("probe-{language}");
        let out = new(language, &dir, &name);
        assert!(out.status.success(), "{language}: {}", brief(&lines(&out)));
        let project = dir.join(&name);
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        assert!(
            readme.contains("rulehost rule sign") && readme.contains("rulehost rule push"),
            "{language}: the README says how to sign and push"
        );
        let built = script(&project, "build.sh");
        assert!(
            built.status.success(),
            "{language} build: {}",
            brief(&lines(&built))
        );
        let file = project.join(format!("probe_{language}.wasm"));
        assert!(file.exists(), "{language}: no {}", file.display());
        let tested = script(&project, "test.sh");
        assert!(
            tested.status.success(),
            "{language} test: {}",
            brief(&lines(&tested))
        );
        assert!(
            lines(&tested).iter().any(|l| l == "test: ok (1 finding)"),
            "{language}: {}",
            brief(&lines(&tested))
        );
        // The same name again is refused, and nothing is overwritten.
        let again = new(language, &dir, &name);
        assert!(!again.status.success());
        assert!(project.join("test.sh").exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_name_is_refused_in_one_line() {
    let out = new("js", Path::new("/tmp"), "../escape");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("\"../escape\""), "{err}");
}
