//! Precompiled code is trusted code: wasmtime's `deserialize` runs whatever native code a
//! `.cwasm` holds, so whoever can write one into the compile cache runs code as the agent.
//! As ssh does for its keys, the cache directory and each artifact are used only when the
//! agent's own user owns them and neither group nor others may write them; the directory
//! is created 0700 and artifacts are written 0600.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why `path` (the cache directory or an artifact in it) must not be trusted, if so.
pub(super) fn refusal(path: &Path, want_dir: bool) -> Option<String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) => return Some(format!("{}: {error}", path.display())),
    };
    let kind_ok = match want_dir {
        true => meta.is_dir(),
        false => meta.is_file(),
    };
    let mode = meta.mode() & 0o7777;
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    let why = if !kind_ok {
        Some(match want_dir {
            true => "is not a directory",
            false => "is not a regular file",
        })
    } else if meta.uid() != me {
        Some("is owned by another user")
    } else if mode & 0o022 != 0 {
        Some("is writable by group or others")
    } else {
        None
    }?;
    Some(format!(
        "{} {why} (owner uid {}, mode {mode:04o}; the agent runs as uid {me})",
        path.display(),
        meta.uid()
    ))
}

/// Creates the cache directory (0700, parents included) if missing, then checks it:
/// `Err` says why it must not be used.
pub(super) fn prepare_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| format!("{}: {error}", dir.display()))?;
    match refusal(dir, true) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Writes `bytes` to a new file `path`, readable and writable by its owner only.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_private_directory_and_private_files_of_ours_are_trusted() {
        let dir = std::env::temp_dir().join(format!("rulehost-cache-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = dir.join("a/cache");
        assert_eq!(prepare_dir(&cache), Ok(()));
        let mode = std::fs::metadata(&cache).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = prepare_dir(&cache).unwrap_err();
        assert!(
            why.contains("writable by group or others") && why.contains("0777"),
            "{why}"
        );
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();

        let artifact = cache.join("x.cwasm");
        write_private(&artifact, b"code").unwrap();
        assert_eq!(refusal(&artifact, false), None);
        std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(refusal(&artifact, false).is_some());
        // Another user's file (root may give it away).
        std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&artifact, Some(65534), None).unwrap();
        let why = refusal(&artifact, false).unwrap();
        assert!(why.contains("owned by another user"), "{why}");
        // A link is not followed.
        let link = cache.join("link.cwasm");
        std::os::unix::fs::symlink(&artifact, &link).unwrap();
        assert!(
            refusal(&link, false)
                .unwrap()
                .contains("not a regular file")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
