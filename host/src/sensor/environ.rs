//! The user-space fallback for env capture: when the kernel could not walk a new
//! process's environment (no walk on this kernel, or one longer than its walk), the
//! wanted entries are read from `/proc/<pid>/environ` as the exec is drained. Racy by
//! nature: a process that already exited (or exec'd again, or rewrote its environment)
//! cannot be read as it was, so such events stay marked incomplete, and events completed
//! this way are marked `env_from_proc`.

use super::ProbeEvent;
use crate::events::{Body, Event};
use std::io::Read;

/// Most bytes of a `/proc/<pid>/environ` read (a larger environment is read in part,
/// and stays marked incomplete when a wanted name is not in that part).
const ENVIRON_READ_MAX: u64 = 256 << 10;

/// Fills in an exec's wanted env entries from `/proc` when the kernel marked them
/// incomplete.
pub(super) fn complete(event: &mut ProbeEvent, wanted: &[String]) {
    let event = match event {
        ProbeEvent::Event(event) | ProbeEvent::Escaped { event, .. } => event,
        _ => return,
    };
    if wanted.is_empty() {
        return;
    }
    let pid = event.process.pid;
    let Event {
        body: Body::ProcessExec { env, truncated, .. },
        ..
    } = event
    else {
        return;
    };
    if !truncated.env_incomplete {
        return;
    }
    let Some((entries, whole)) = read_environ(pid) else {
        return;
    };
    let (found, cut) = wanted_entries(&entries, wanted);
    merge(env, found, truncated, cut, whole);
}

/// `/proc`'s entries first; what the kernel found for names `/proc` no longer shows is
/// kept after them.
fn merge(
    env: &mut Vec<String>,
    found: Vec<String>,
    truncated: &mut crate::events::Truncation,
    cut: bool,
    whole: bool,
) {
    let mut merged = found;
    for entry in env.drain(..) {
        let name = entry.split('=').next().unwrap_or("").to_owned();
        if !merged
            .iter()
            .any(|f| f.split('=').next() == Some(name.as_str()))
        {
            merged.push(entry);
        }
    }
    *env = merged;
    truncated.env |= cut;
    truncated.env_incomplete = !whole;
    truncated.env_from_proc = true;
}

/// The process's environment as raw entries, and whether it was read whole.
fn read_environ(pid: u32) -> Option<(Vec<u8>, bool)> {
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut bytes = Vec::new();
    file.take(ENVIRON_READ_MAX + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    let whole = bytes.len() as u64 <= ENVIRON_READ_MAX;
    bytes.truncate(ENVIRON_READ_MAX as usize);
    Some((bytes, whole))
}

/// The first entry of each wanted name, in the order names are wanted, each cut as the
/// kernel cuts it; and whether one was cut.
fn wanted_entries(environ: &[u8], wanted: &[String]) -> (Vec<String>, bool) {
    let limit = rulehost_ebpf_common::EXEC_ENV_ENTRY_MAX - 1;
    let mut cut = false;
    let mut found = Vec::new();
    for name in wanted {
        let prefix = format!("{name}=");
        let Some(entry) = environ
            .split(|b| *b == 0)
            .find(|e| e.starts_with(prefix.as_bytes()))
        else {
            continue;
        };
        let entry = match entry.len() > limit {
            true => {
                cut = true;
                &entry[..limit]
            }
            false => entry,
        };
        found.push(String::from_utf8_lossy(entry).into_owned());
    }
    (found, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_entries_come_in_name_order_first_one_each_and_cut_like_the_kernel() {
        let long = format!("LONG={}", "x".repeat(400));
        let environ = format!("B=2\0A=1\0B=3\0AB=no\0{long}\0");
        let (found, cut) = wanted_entries(
            environ.as_bytes(),
            &["A".into(), "B".into(), "LONG".into(), "MISSING".into()],
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(&found[..2], ["A=1", "B=2"]);
        assert_eq!(found[2].len(), rulehost_ebpf_common::EXEC_ENV_ENTRY_MAX - 1);
        assert!(cut);
    }

    #[test]
    fn an_incomplete_exec_of_a_live_process_is_completed_from_proc() {
        use std::io::BufRead;
        // It says "ready" once it runs with its environment (after its exec), then
        // waits for its stdin to close.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo ready; read line"])
            .env("RULEHOST_ENVIRON_TEST", "10.0.0.1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("the child's first line");
        assert_eq!(ready, "ready\n");
        let mut event = ProbeEvent::Event(Event {
            timestamp: 0,
            process: crate::events::Process {
                pid: child.id(),
                ..Default::default()
            },
            cgroup_id: 0,
            container: None,
            body: Body::ProcessExec {
                filename: "/bin/sh".into(),
                argv: vec![],
                env: vec![],
                synthetic: false,
                truncated: crate::events::Truncation {
                    env_incomplete: true,
                    ..Default::default()
                },
            },
        });
        complete(&mut event, &["RULEHOST_ENVIRON_TEST".into()]);
        drop(child.stdin.take());
        let _ = child.wait();
        let ProbeEvent::Event(Event {
            body: Body::ProcessExec { env, truncated, .. },
            ..
        }) = event
        else {
            unreachable!()
        };
        assert_eq!(env, ["RULEHOST_ENVIRON_TEST=10.0.0.1"]);
        assert!(
            truncated.env_from_proc && !truncated.env_incomplete,
            "{truncated:?}"
        );
    }
}
