//! Any bytes handed to the ring-buffer decoder must decode or fail with an error, never
//! panic. A decoded record must not depend on bytes past the length its header gives,
//! nor (beyond the timestamp) on the clock offset, and an exec or connect must survive
//! the `run --record` / `replay` round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::sensor::{ProbeEvent, decode_with_clock};
use rulehost::events::parse::{Line, parse_line};

/// A realistic CLOCK_REALTIME - CLOCK_MONOTONIC offset (large kernel timestamps clamp
/// at u64::MAX), and one that clamps every timestamp at 0.
const EPOCH_OFFSET: i64 = 1_732_000_000_000_000_000;
const CLAMP_LOW: i64 = i64::MIN;

fuzz_target!(|record: &[u8]| {
    let Ok(event) = decode_with_clock(record, EPOCH_OFFSET) else {
        return;
    };
    let other = decode_with_clock(record, CLAMP_LOW).expect("fails with another clock offset");
    assert_eq!(without_timestamp(&event), without_timestamp(&other));

    // The header's length is in its second 4 bytes; whatever follows it is not the record.
    let len = u32::from_ne_bytes(record[4..8].try_into().unwrap()) as usize;
    if len < record.len() {
        let exact = decode_with_clock(&record[..len], EPOCH_OFFSET)
            .expect("decodes only with trailing bytes");
        assert_eq!(exact, event, "trailing bytes changed the record");
    }

    if let ProbeEvent::Event(event) | ProbeEvent::Escaped { event, .. } = &event {
        let json = serde_json::to_string(event).expect("recorded event serializes");
        match parse_line(&json) {
            Ok(Line::Event(replayed)) => assert_eq!(&*replayed, event, "replay differs: {json}"),
            other => panic!("recorded event does not replay: {other:?}: {json}"),
        }
    }
});

fn without_timestamp(event: &ProbeEvent) -> ProbeEvent {
    let mut event = event.clone();
    if let ProbeEvent::Event(event) | ProbeEvent::Escaped { event, .. } = &mut event {
        event.timestamp = 0;
    }
    event
}
