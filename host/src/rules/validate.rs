//! A rule's metadata is untrusted input, checked once at load, the same way for
//! `inspect`, `run --check`, `run` and reload: every string and list bounded, ids and
//! names from a small alphabet (nothing that could forge a log line), severity 0..=4,
//! duplicates removed. Whatever passes is safe to copy into findings and logs.

use super::*;

/// Bounds on metadata strings (in characters) and lists.
const MAX_ID: usize = 64;
const MAX_VERSION: usize = 32;
const MAX_NAME: usize = 128;
const MAX_DESCRIPTION: usize = 1024;
const MAX_TAGS: usize = 16;
const MAX_TAG: usize = 32;
const MAX_MITRE_FIELD: usize = 128;
/// Entries of `selects` (each kind once; a few repeats are forgiven).
const MAX_SELECTS: usize = 16;
/// Env names a rule may ask for (what the kernel side can capture).
const MAX_ENV_VARS: usize = 8;
const MAX_ENV_NAME: usize = 63;
/// Highest severity (critical).
const MAX_SEVERITY: u8 = 4;

/// Checks `metadata`, removing duplicate tags, selected kinds and env names. Lists are
/// bounded as given, before duplicates are looked for, so the check costs the host
/// little whatever a rule returns.
pub fn validate_metadata(metadata: &mut Metadata) -> Result<()> {
    check_count("tags", metadata.tags.len(), MAX_TAGS)?;
    check_count("selects", metadata.selects.len(), MAX_SELECTS)?;
    check_count("env names", metadata.env_vars.len(), MAX_ENV_VARS)?;
    dedup(&mut metadata.tags);
    dedup(&mut metadata.selects);
    dedup(&mut metadata.env_vars);
    let word = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    check("id", &metadata.id, MAX_ID, word)?;
    check("version", &metadata.version, MAX_VERSION, |c| {
        c.is_ascii_graphic()
    })?;
    check("name", &metadata.name, MAX_NAME, printable)?;
    check("event_name", &metadata.event_name, MAX_ID, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
    })?;
    if !metadata.description.is_empty() {
        check(
            "description",
            &metadata.description,
            MAX_DESCRIPTION,
            printable,
        )?;
    }
    if metadata.severity > MAX_SEVERITY {
        bail!(
            "metadata severity is {}, above the highest ({MAX_SEVERITY}, critical)",
            metadata.severity
        );
    }
    for tag in &metadata.tags {
        check("tag", tag, MAX_TAG, |c| word(c) || c == ':')?;
    }
    if let Some(mitre) = &metadata.mitre {
        check("mitre.tactic", &mitre.tactic, MAX_MITRE_FIELD, printable)?;
        check(
            "mitre.technique",
            &mitre.technique,
            MAX_MITRE_FIELD,
            printable,
        )?;
        check("mitre.technique_id", &mitre.technique_id, MAX_ID, word)?;
    }
    if metadata.selects.is_empty() {
        bail!("metadata selects no event");
    }
    for name in &metadata.env_vars {
        check("env name", name, MAX_ENV_NAME, |c| {
            c.is_ascii_alphanumeric() || c == '_'
        })?;
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            bail!("metadata env name {name:?} starts with a digit");
        }
    }
    Ok(())
}

/// A list holds at most `max` entries.
fn check_count(what: &str, count: usize, max: usize) -> Result<()> {
    if count > max {
        bail!("metadata lists {count} {what}, more than {max}");
    }
    Ok(())
}

/// Printable text on one line (no control characters).
fn printable(c: char) -> bool {
    !c.is_control()
}

/// `value` is 1..=`max` characters, each `allowed`.
fn check(what: &str, value: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<()> {
    let shown = one_line(value, 64);
    if value.is_empty() {
        bail!("metadata {what} is empty");
    }
    if value.chars().nth(max).is_some() {
        bail!("metadata {what} \"{shown}\" is longer than {max} characters");
    }
    if let Some(bad) = value.chars().find(|&c| !allowed(c)) {
        bail!(
            "metadata {what} \"{shown}\" holds {:?}, which a {what} may not",
            bad
        );
    }
    Ok(())
}

/// Removes later duplicates, keeping the first occurrence's order.
fn dedup<T: PartialEq + Clone>(items: &mut Vec<T>) {
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        if !kept.contains(&item) {
            kept.push(item);
        }
    }
    *items = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Metadata {
        Metadata {
            id: "TRC-1013".into(),
            version: "0.1.0".into(),
            name: "Kubernetes API server connection detected".into(),
            event_name: "k8s_api_connection".into(),
            description: "A process inside a container connected.".into(),
            severity: 1,
            tags: vec!["container".into(), "container".into()],
            mitre: Some(Mitre {
                tactic: "Discovery".into(),
                technique: "Cloud Service Discovery".into(),
                technique_id: "T1526".into(),
            }),
            selects: vec![EventKind::ProcessExec, EventKind::ProcessExec],
            origin: Origin::Container,
            env_vars: vec!["KUBERNETES_SERVICE_HOST".into(); 3],
        }
    }

    fn refused(change: impl FnOnce(&mut Metadata)) -> String {
        let mut metadata = good();
        change(&mut metadata);
        validate_metadata(&mut metadata).unwrap_err().to_string()
    }

    #[test]
    fn good_metadata_passes_with_duplicates_removed() {
        let mut metadata = good();
        validate_metadata(&mut metadata).unwrap();
        assert_eq!(metadata.tags, ["container"]);
        assert_eq!(metadata.selects, [EventKind::ProcessExec]);
        assert_eq!(metadata.env_vars, ["KUBERNETES_SERVICE_HOST"]);
    }

    #[test]
    fn hostile_metadata_is_refused_in_one_line() {
        for (error, expected) in [
            (
                refused(|m| m.id = "TRC\nINFO forged".into()),
                "metadata id \"TRC\\nINFO forged\" holds '\\n'",
            ),
            (refused(|m| m.id.clear()), "metadata id is empty"),
            (
                refused(|m| m.severity = 255),
                "severity is 255, above the highest (4",
            ),
            (
                refused(|m| m.description = "x".repeat(2_000_000)),
                "description \"xxx",
            ),
            (
                refused(|m| m.tags = (0..100).map(|i| i.to_string()).collect()),
                "100 tags",
            ),
            (refused(|m| m.selects.clear()), "selects no event"),
            (
                refused(|m| m.env_vars = (0..9).map(|i| format!("V{i}")).collect()),
                "9 env names",
            ),
            (
                refused(|m| m.env_vars = vec!["A=B".into()]),
                "env name \"A=B\" holds '='",
            ),
            (
                refused(|m| m.event_name = "Bad Name".into()),
                "event_name \"Bad Name\"",
            ),
        ] {
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
            assert_eq!(error.lines().count(), 1, "{error:?}");
            assert!(error.len() < 300, "{} bytes", error.len());
        }
    }
}
