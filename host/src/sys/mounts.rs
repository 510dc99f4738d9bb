//! The mount table, for every part of the host that needs it: filesystems by type, and
//! the one cgroup v2 root the whole host uses (the connect hooks and the container
//! resolver must agree on it, even with several cgroup2 mounts).

use anyhow::{Result, anyhow};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub target: PathBuf,
    pub fstype: String,
}

/// Parses a `/proc/self/mounts` table; malformed lines are skipped.
pub fn parse(table: &str) -> Vec<Mount> {
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            Some(Mount {
                target: unescape(target),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// This process's mounts (empty if `/proc/self/mounts` cannot be read).
pub fn current() -> Vec<Mount> {
    parse(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default())
}

/// Where a filesystem of `fstype` is mounted, first match.
pub fn find(mounts: &[Mount], fstype: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| m.fstype == fstype)
        .map(|m| m.target.clone())
}

/// The cgroup v2 root among `mounts`: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones, else the first `cgroup2` mount. `None` on
/// v1-only hosts.
pub fn cgroup2_root_in(mounts: &[Mount]) -> Option<PathBuf> {
    let rank = |path: &Path| match path.to_str() {
        Some("/sys/fs/cgroup") => 0,
        Some("/sys/fs/cgroup/unified") => 1,
        _ => 2,
    };
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .min_by_key(|m| rank(&m.target))
        .map(|m| m.target.clone())
}

/// This host's cgroup v2 root.
pub fn cgroup2_root() -> Result<PathBuf> {
    cgroup2_root_in(&current()).ok_or_else(|| {
        anyhow!(
            "no cgroup v2 hierarchy is mounted (needed to hook connects and resolve containers)"
        )
    })
}

/// Decodes the octal escapes (`\040` for a space) the kernel writes in mount tables.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(&[a, b, c]) = bytes.get(i + 1..i + 4)
            && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0');
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(table: &str) -> Option<PathBuf> {
        cgroup2_root_in(&parse(table))
    }

    #[test]
    fn cgroup2_root_detection() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
            cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
            cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(root(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified = "proc /proc proc rw 0 0\n\
            cgroup2 /mnt/other\\040cg cgroup2 rw 0 0\n\
            cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n";
        assert_eq!(root(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            root("cgroup2 /mnt/my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/my cg"))
        );
        assert_eq!(
            root("cgroup2 /mnt/a\\777\\04 cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/a\\777\\04"))
        );
        assert_eq!(root("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"), None);
        assert_eq!(root(""), None);
        assert_eq!(root("cgroup2"), None);
        // This machine has one, and it is a cgroup v2 root.
        assert!(cgroup2_root().unwrap().join("cgroup.procs").is_file());
    }

    #[test]
    fn finds_filesystems_by_type() {
        let table =
            parse("none /sys/kernel/trac\\145 tracefs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n");
        assert_eq!(
            find(&table, "tracefs"),
            Some(PathBuf::from("/sys/kernel/trace"))
        );
        assert_eq!(find(&table, "bpf"), Some(PathBuf::from("/sys/fs/bpf")));
        assert_eq!(find(&table, "cgroup2"), None);
    }
}
