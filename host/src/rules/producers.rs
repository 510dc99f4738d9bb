//! What built a rule, from the component's `producers` sections (the tool-conventions
//! custom section): its source language and language runtime (componentize-js,
//! componentize-py, rustc, wit-component), shown by `inspect`.

use std::collections::{BTreeMap, BTreeSet};
use wasmparser::{KnownCustom, Parser, Payload};

/// Every `producers` entry of the component and the modules it nests, by field
/// (`language`, `processed-by`, `sdk`), each `name version` once. A section that does
/// not parse is skipped: this only describes the rule, the load checks it.
pub fn producers(bytes: &[u8]) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for payload in Parser::new(0).parse_all(bytes).flatten() {
        let Payload::CustomSection(section) = payload else {
            continue;
        };
        let KnownCustom::Producers(reader) = section.as_known() else {
            continue;
        };
        for field in reader.into_iter().flatten() {
            for value in field.values.into_iter().flatten() {
                let entry = match value.version {
                    "" => value.name.to_owned(),
                    version => format!("{} {version}", value.name),
                };
                found
                    .entry(field.name.to_owned())
                    .or_default()
                    .insert(entry);
            }
        }
    }
    found
}
