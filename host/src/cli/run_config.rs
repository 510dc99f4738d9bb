//! Every `run` flag is also a key of the config file (`ring_buffer_kib: 16384` is
//! `--ring-buffer-kib 16384`): the file's flag keys become arguments placed before the
//! command line's, so a flag given on the command line wins (lists add up). `grants`,
//! `exceptions`, `webhooks` and `rules` are the file's own keys. An unknown key is one line naming the
//! file, line and key.

use anyhow::{Result, anyhow, bail};
use clap::CommandFactory;
use std::ffi::OsString;
use std::path::Path;

/// Keys of the config file that are not flags.
const OWN_KEYS: &[&str] = &["grants", "exceptions", "webhooks", "rules"];

/// The command line with `run --config FILE`'s flag keys spliced in after `run`.
pub fn with_config_flags(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(run) = args.iter().position(|a| a == "run") else {
        return Ok(args);
    };
    let Some(path) = config_path(&args[run + 1..]) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow!("cannot read config {}: {e}", path.display()))?;
    let flags = flags_of(&path, &text)?;
    let mut spliced = args[..=run].to_vec();
    spliced.extend(flags);
    spliced.extend_from_slice(&args[run + 1..]);
    Ok(spliced)
}

/// The value of `--config FILE` or `--config=FILE`.
fn config_path(args: &[OsString]) -> Option<std::path::PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    None
}

/// Refuses a key that is no `run` flag (a typo must not be ignored).
/// A [`crate::config::FlagCheck`].
pub(crate) fn check_flags(path: &Path, text: &str, config: &crate::config::Config) -> Result<()> {
    let command = super::Cli::command();
    let run = command
        .find_subcommand("run")
        .ok_or_else(|| anyhow!("no run command"))?;
    for key in config.flags.keys() {
        run_flag(run, path, text, key)?;
    }
    Ok(())
}

/// The `run` flag a key names.
fn run_flag<'c>(
    run: &'c clap::Command,
    path: &Path,
    text: &str,
    key: &str,
) -> Result<&'c clap::Arg> {
    let long = key.replace('_', "-");
    run.get_arguments()
        .find(|a| {
            let names = a.get_long_and_visible_aliases().unwrap_or_default();
            names.contains(&long.as_str()) && long != "config"
        })
        .ok_or_else(|| {
            anyhow!(
                "config {}: line {}: unknown key `{key}` (neither a `run` flag nor grants, budgets, exceptions, webhooks or rules)",
                path.display(),
                line_of(text, key)
            )
        })
}

/// The arguments the file's flag keys stand for.
fn flags_of(path: &Path, text: &str) -> Result<Vec<OsString>> {
    let document: serde_json::Map<String, serde_json::Value> = match crate::config::parse_yaml(text)
    {
        Ok(Some(map)) => map,
        Ok(None) => return Ok(Vec::new()),
        Err(error) => bail!("config {}: {error}", path.display()),
    };
    let command = super::Cli::command();
    let run = command
        .find_subcommand("run")
        .ok_or_else(|| anyhow!("no run command"))?;
    let mut flags = Vec::new();
    for (key, value) in document {
        if OWN_KEYS.contains(&key.as_str()) {
            continue;
        }
        let long = key.replace('_', "-");
        let arg = run_flag(run, path, text, &key)?;
        let takes_value = arg.get_action().takes_values();
        for item in values(&value) {
            match (takes_value, item.as_str()) {
                (true, _) => flags.extend([format!("--{long}").into(), item.into()]),
                (false, "true") => flags.push(format!("--{long}").into()),
                (false, "false") => {}
                (false, other) => bail!(
                    "config {}: line {}: `{key}` is a switch: true or false, not {other}",
                    path.display(),
                    line_of(text, &key)
                ),
            }
        }
    }
    Ok(flags)
}

/// A key's values as argument text (a list gives one per item).
fn values(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(values).collect(),
        serde_json::Value::String(text) => vec![text.clone()],
        other => vec![other.to_string()],
    }
}

/// The line a top-level key is on (1-based; 0 when not found).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| line.starts_with(&format!("{key}:")))
        .map_or(0, |n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<OsString> {
        text.split(' ').map(Into::into).collect()
    }

    /// `command` with CONFIG naming a file holding `config` (one file per call: tests
    /// run in parallel).
    fn spliced(config: &str, command: &str) -> Result<String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "rulehost-cli-config-{}-{n}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, config).unwrap();
        let command = command.replace("CONFIG", path.to_str().unwrap());
        let out = with_config_flags(args(&command));
        let _ = std::fs::remove_file(&path);
        out.map(|a| {
            a.iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
                .replace(path.to_str().unwrap(), "CONFIG")
        })
    }

    #[test]
    fn flag_keys_come_before_the_command_line_so_flags_win() {
        let config = "ring_buffer_kib: 16384\nrule: [a.wasm, b.wasm]\nno_state_dir: true\ncheck: false\nexceptions: []\n";
        assert_eq!(
            spliced(config, "rulehost run --config CONFIG --ring-buffer-kib 64").unwrap(),
            "rulehost run --no-state-dir --ring-buffer-kib 16384 --rule a.wasm --rule b.wasm --config CONFIG --ring-buffer-kib 64"
        );
        // Parsed, the command line's value wins and the file's list is there.
        use clap::Parser;
        let line = spliced(config, "rulehost run --config CONFIG --ring-buffer-kib 64").unwrap();
        let cli = crate::cli::Cli::try_parse_from(line.split(' ')).unwrap();
        let crate::cli::Command::Run(run) = cli.command else {
            panic!("not run");
        };
        assert_eq!(
            (run.ring_buffer_kib, run.rules.len(), run.no_state_dir),
            (Some(64), 2, true)
        );
        assert_eq!(
            spliced(config, "rulehost replay x").unwrap(),
            "rulehost replay x"
        );
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let error = spliced(
            "exceptions: []\nring_bufer_kib: 4\n",
            "rulehost run --config CONFIG",
        )
        .unwrap_err()
        .to_string();
        assert!(error.ends_with(": line 2: unknown key `ring_bufer_kib` (neither a `run` flag nor grants, budgets, exceptions, webhooks or rules)"), "{error}");
        let error = spliced("check: maybe\n", "rulehost run --config CONFIG")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1: `check` is a switch: true or false, not maybe"),
            "{error}"
        );
    }
}
