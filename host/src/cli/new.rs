//! `rulehost new --lang rust|js|python NAME`: a rule project that builds and passes its
//! replay test out of the box. The SDK of its language and `wit/rule.wit` are copied in
//! from this binary, so the project builds without a rulehost checkout.

use crate::logging::say;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// The languages a rule project can be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Js,
    Python,
}

/// Files every project gets, whatever its language.
const COMMON: &[(&str, &str)] = &[
    ("wit/rule.wit", include_str!("../../../wit/rule.wit")),
    (
        "events.jsonl",
        include_str!("../../templates/common/events.jsonl"),
    ),
    ("test.sh", include_str!("../../templates/common/test.sh")),
    (
        "README.md",
        include_str!("../../templates/common/README.md"),
    ),
];

const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    ("build.sh", include_str!("../../templates/rust/build.sh")),
    ("rulehost-sdk/Cargo.toml", SDK_CARGO_TOML),
    (
        "rulehost-sdk/src/lib.rs",
        include_str!("../../../sdk/src/lib.rs"),
    ),
    (
        "rulehost-sdk/src/findings.rs",
        include_str!("../../../sdk/src/findings.rs"),
    ),
    (
        "rulehost-sdk/src/metadata.rs",
        include_str!("../../../sdk/src/metadata.rs"),
    ),
    (
        "rulehost-sdk/src/net.rs",
        include_str!("../../../sdk/src/net.rs"),
    ),
    (
        "rulehost-sdk/src/packed.rs",
        include_str!("../../../sdk/src/packed.rs"),
    ),
    ("rulehost-wire/Cargo.toml", WIRE_CARGO_TOML),
    (
        "rulehost-wire/src/lib.rs",
        include_str!("../../../wire/src/lib.rs"),
    ),
];

const JS: &[(&str, &str)] = &[
    ("rule.js", include_str!("../../templates/js/rule.js")),
    ("build.sh", include_str!("../../templates/js/build.sh")),
    (
        "rulehost-rule.js",
        include_str!("../../../sdk-js/rulehost-rule.js"),
    ),
    ("package.json", include_str!("../../../sdk-js/package.json")),
    (
        "package-lock.json",
        include_str!("../../../sdk-js/package-lock.json"),
    ),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/python/app.py")),
    ("build.sh", include_str!("../../templates/python/build.sh")),
    (
        "rulehost_rule/__init__.py",
        include_str!("../../../sdk-python/rulehost_rule/__init__.py"),
    ),
    (
        "requirements.txt",
        include_str!("../../../sdk-python/requirements.txt"),
    ),
];

const SDK_CARGO_TOML: &str = r#"[package]
name = "rulehost-sdk"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
rulehost-wire = { path = "../rulehost-wire" }
"#;

const WIRE_CARGO_TOML: &str = r#"[package]
name = "rulehost-wire"
version = "0.1.0"
edition = "2024"
publish = false
"#;

/// Writes the project `name` in language `language` into `dir/name`.
pub(super) fn new(language: Language, name: &str, dir: &Path) -> Result<()> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let words = Words::of(name, language);
    let files = match language {
        Language::Rust => RUST,
        Language::Js => JS,
        Language::Python => PYTHON,
    };
    for (path, text) in COMMON.iter().chain(files) {
        let target = root.join(path);
        let parent = target.parent().expect("a file under the project");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        std::fs::write(&target, words.fill(text))
            .with_context(|| format!("cannot write {}", target.display()))?;
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", target.display()))?;
        }
    }
    say(format_args!(
        "created {}: ./build.sh builds {}.wasm, ./test.sh replays events.jsonl through it",
        root.display(),
        words.file
    ))
}

/// A project name: lowercase letters, digits, `-` and `_`, starting with a letter.
fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "rule name {name:?} must be 1 to 40 lowercase letters, digits, `-` or `_`, starting with a letter"
        );
    }
    Ok(())
}

/// What the templates' `{{...}}` placeholders become for one project.
struct Words {
    name: String,
    file: String,
    id: String,
    type_name: String,
    language: &'static str,
    source: &'static str,
    grants: String,
}

impl Words {
    fn of(name: &str, language: Language) -> Words {
        let file = name.replace('-', "_");
        let id = format!("CUSTOM-{}", file.to_ascii_uppercase().replace('_', "-"));
        let type_name = file
            .split('_')
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        let (language_name, source) = match language {
            Language::Rust => ("Rust", "src/lib.rs"),
            Language::Js => ("JavaScript", "rule.js"),
            Language::Python => ("Python", "app.py"),
        };
        // A JavaScript or Python runtime reads the clocks and random numbers.
        let grants = match language {
            Language::Rust => String::new(),
            _ => format!("--grant {id}=wasi:clocks,random "),
        };
        Words {
            name: name.to_owned(),
            file,
            id,
            type_name,
            language: language_name,
            source,
            grants,
        }
    }

    fn fill(&self, text: &str) -> String {
        let build_note = match self.language {
            "Rust" => {
                "`build.sh` needs the `wasm32-unknown-unknown` target (`rustup target add \
                       wasm32-unknown-unknown`) and `wasm-tools` (`cargo install wasm-tools`) or jco."
            }
            "JavaScript" => {
                "`build.sh` installs the pinned componentize-js with npm the first time."
            }
            _ => "`build.sh` makes a venv with the pinned componentize-py the first time.",
        };
        let grant_note = match self.grants.is_empty() {
            true => String::new(),
            false => format!(
                "\n\nIts language runtime reads the clocks and random numbers, which rulehost \
                 grants per rule id: add `{}` (or `grants: {{{}: {{wasi: [clocks, random]}}}}` \
                 in the config file).",
                self.grants.trim_end(),
                self.id
            ),
        };
        text.replace("{{NAME}}", &self.name)
            .replace("{{FILE}}", &self.file)
            .replace("{{ID}}", &self.id)
            .replace("{{TYPE}}", &self.type_name)
            .replace("{{EVENT}}", &self.file)
            .replace("{{LANGUAGE}}", self.language)
            .replace("{{SOURCE}}", self.source)
            .replace("{{GRANTS}}", &self.grants)
            .replace("{{BUILD_NOTE}}", build_note)
            .replace("{{GRANT_NOTE}}", &grant_note)
    }
}
