//! Whatever bytes a rule returns from `packed.on-events` (world 0.1.3) must decode or be
//! refused with an offset inside them, never panic, and never yield more than the
//! bytes could hold (a hostile count reserves nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::rules::{FieldNames, decode_findings};

fuzz_target!(|data: &[u8]| {
    match decode_findings(data, &mut FieldNames::default()) {
        Ok(findings) => {
            // Each finding takes at least 8 bytes and each field at least 6.
            let fields: usize = findings.iter().map(|f| f.values.len()).sum();
            assert!(
                4 + 8 * findings.len() + 6 * fields <= data.len(),
                "{} findings with {fields} fields from {} bytes",
                findings.len(),
                data.len()
            );
        }
        Err(malformed) => assert!(
            malformed.at <= data.len(),
            "offset {} past {} bytes",
            malformed.at,
            data.len()
        ),
    }
});
