//! A rule's metadata is untrusted: whatever a rule returns, validation must end quickly
//! with Ok or an error, never panic; and what it accepts must be what the host may copy
//! into findings and log lines: bounded, on one line, severity 0..=4, no duplicates,
//! and stable (validating it again changes nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::events::EventKind;
use rulehost::rules::{Metadata, Mitre, Origin, validate_metadata};

/// Splits the input into metadata fields at 0xff bytes: severity byte, id, version,
/// name, event name, description, tags (`,`), mitre (`|`), env names (`,`), selects.
fn metadata(data: &[u8]) -> Option<Metadata> {
    let (&severity, rest) = data.split_first()?;
    let mut parts = rest.split(|&b| b == 0xff);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (id, version, name, event_name, description) = (text(), text(), text(), text(), text());
    let list = |s: String, sep: char| -> Vec<String> {
        match s.is_empty() {
            true => Vec::new(),
            false => s.split(sep).map(str::to_owned).collect(),
        }
    };
    let tags = list(text(), ',');
    let mitre = list(text(), '|');
    let env_vars = list(text(), ',');
    let selects = text()
        .bytes()
        .map(|b| match b % 2 {
            0 => EventKind::ProcessExec,
            _ => EventKind::SocketConnect,
        })
        .collect();
    Some(Metadata {
        id,
        version,
        name,
        event_name,
        description,
        severity,
        tags,
        mitre: match mitre.as_slice() {
            [tactic, technique, technique_id] => Some(Mitre {
                tactic: tactic.clone(),
                technique: technique.clone(),
                technique_id: technique_id.clone(),
            }),
            _ => None,
        },
        selects,
        origin: Origin::Any,
        env_vars,
    })
}

fn one_line(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

fn no_duplicates<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .all(|(i, item)| !items[..i].contains(item))
}

fuzz_target!(|data: &[u8]| {
    let Some(mut m) = metadata(data) else {
        return;
    };
    if validate_metadata(&mut m).is_err() {
        return;
    }
    assert!(m.severity <= 4, "severity {}", m.severity);
    let mut texts = vec![&m.id, &m.version, &m.name, &m.event_name, &m.description];
    texts.extend(&m.tags);
    texts.extend(&m.env_vars);
    if let Some(mitre) = &m.mitre {
        texts.extend([&mitre.tactic, &mitre.technique, &mitre.technique_id]);
    }
    for text in &texts {
        assert!(one_line(text), "accepted a control character: {text:?}");
        assert!(text.chars().count() <= 1024, "accepted {} chars", text.len());
    }
    assert!(m.tags.len() <= 16 && m.env_vars.len() <= 8 && m.selects.len() <= 2);
    assert!(no_duplicates(&m.tags) && no_duplicates(&m.env_vars) && no_duplicates(&m.selects));
    let mut again = m.clone();
    validate_metadata(&mut again).expect("accepted metadata validates again");
    assert_eq!(again, m, "validating again changed it");
});
