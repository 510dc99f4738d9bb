//! The start-up sweep: containers already running when the host starts, which may never
//! exec again, are not missed. Every process in a container cgroup is read from /proc
//! and given to the rules as a synthetic exec (marked `synthetic`), with the env entries
//! the rules asked for read from `/proc/<pid>/environ`.

use crate::containers::{ContainerResolver, Resolution};
use crate::events::{Body, Event, Process, Truncation};
use std::path::Path;

/// Most argv bytes a synthetic exec carries, like the kernel capture.
const ARGV_MAX: usize = 2048;

/// Synthetic exec events for every process now running in a container.
pub(crate) fn running_containers(
    resolver: &mut ContainerResolver,
    env_vars: &[String],
) -> Vec<Event> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let now = crate::events::now_ns();
    pids.into_iter()
        .filter_map(|pid| process_event(resolver, pid, env_vars, now))
        .collect()
}

/// A synthetic exec for `pid` if it runs in a container (and still exists).
fn process_event(
    resolver: &mut ContainerResolver,
    pid: u32,
    env_vars: &[String],
    timestamp: u64,
) -> Option<Event> {
    let cgroup_id = resolver.cgroup_id_of_pid(pid)?;
    let Resolution::Container(container) = resolver.resolve_event(cgroup_id, pid) else {
        return None;
    };
    let dir = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let field = |name: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
    let filename = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let env = std::fs::read(dir.join("environ"))
        .map(|bytes| wanted_env(&bytes, env_vars))
        .unwrap_or_default();
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let argv_truncated = cmdline.len() > ARGV_MAX;
    Some(Event {
        timestamp,
        process: Process {
            pid,
            tid: pid,
            ppid: field("PPid:")?,
            uid: field("Uid:")?,
            comm: comm.trim_end_matches('\n').into(),
            ..Process::default()
        },
        cgroup_id,
        container: Some(container),
        body: Body::ProcessExec {
            filename,
            argv: crate::events::nul_separated(&cmdline[..cmdline.len().min(ARGV_MAX)]),
            env,
            synthetic: true,
            truncated: Truncation {
                argv: argv_truncated,
                ..Truncation::default()
            },
        },
    })
}

/// The `NAME=value` entries of a NUL-separated environment whose names are wanted.
pub(crate) fn wanted_env(environ: &[u8], env_vars: &[String]) -> Vec<String> {
    crate::events::nul_separated(environ)
        .into_iter()
        .filter(|entry| {
            let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
            env_vars.iter().any(|wanted| wanted == name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wanted_entries_are_kept() {
        let environ =
            b"PATH=/bin\0KUBERNETES_SERVICE_HOST=10.96.0.1\0KUBERNETES_SERVICE_HOSTX=1\0\xff=\0";
        let wanted = vec!["KUBERNETES_SERVICE_HOST".to_owned()];
        assert_eq!(
            wanted_env(environ, &wanted),
            vec!["KUBERNETES_SERVICE_HOST=10.96.0.1"]
        );
        assert!(wanted_env(b"", &wanted).is_empty());
    }
}
