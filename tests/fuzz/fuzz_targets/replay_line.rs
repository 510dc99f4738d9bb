//! Any line of a replay file (Tracee v0.24 JSON or rulehost's own event format) must
//! parse or fail with an error, never panic; and an event it yields must survive being
//! written in rulehost's format (what `run --record` writes) and read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::events::parse::{Line, parse_line};

fuzz_target!(|data: &[u8]| {
    // Replay reads lines of text; non-UTF-8 input never gets this far.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(Line::Event(event)) = parse_line(line) else {
        return;
    };
    let json = serde_json::to_string(&event).expect("event serializes");
    match parse_line(&json) {
        Ok(Line::Event(again)) => assert_eq!(again, event, "round trip differs: {json}"),
        other => panic!("written event does not parse back: {other:?}: {json}"),
    }
});
