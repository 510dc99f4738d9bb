//! Any cgroup path, and any `/proc/<pid>/cgroup` file, must classify or yield `None`,
//! never panic; a container found always has a full id (64 lowercase hex characters)
//! taken from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::containers::{parse_cgroup_path, parse_proc_cgroup};
use rulehost::events::Container;

fuzz_target!(|data: &[u8]| {
    // Paths reach the parser as text: lossily decoded cgroup-mkdir paths or file contents.
    let text = String::from_utf8_lossy(data);
    check(&text, parse_cgroup_path(&text));
    check(&text, parse_proc_cgroup(&text));
});

fn check(input: &str, found: Option<Container>) {
    if let Some(container) = found {
        let id = &container.id;
        assert!(
            id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "bad container id {id:?} from {input:?}"
        );
        assert!(input.contains(id.as_str()), "id {id:?} not in {input:?}");
    }
}
