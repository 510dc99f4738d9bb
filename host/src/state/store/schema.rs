//! The on-disk layout: tables, format check, and the small conversions rows need.

use super::*;

/// The database file inside the state directory.
pub const FILE_NAME: &str = "state.redb";
/// Layout version in the `meta` table.
pub const FORMAT: u64 = 1;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("containers");
pub(super) const STATE: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("state");

/// Page cache redb may use; state is small and read back only at start-up.
pub(super) const CACHE_BYTES: usize = 16 << 20;
/// While writes keep failing, the warning is repeated at most this often.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(60);

pub(super) type StateTable<'txn> =
    redb::Table<'txn, (&'static str, &'static str, &'static str), &'static [u8]>;

/// What `Dispatcher::persist_to` found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Entries put back into the state of the loaded rules.
    pub restored: usize,
    /// Containers whose entries were kept (still alive).
    pub containers: usize,
    /// Entries of containers that vanished while the host was down; deleted.
    pub dropped: usize,
    /// Entries of rules not loaded now; kept on disk for a rule with that id added later.
    pub kept: usize,
    /// Entries over the state bounds; not restored (left on disk).
    pub refused: usize,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored {} entr{} for {} container(s), dropped {} of vanished containers",
            self.restored,
            if self.restored == 1 { "y" } else { "ies" },
            self.containers,
            self.dropped
        )?;
        if self.kept > 0 {
            write!(f, ", kept {} of rules not loaded", self.kept)?;
        }
        if self.refused > 0 {
            write!(f, ", {} over the state bounds not restored", self.refused)?;
        }
        Ok(())
    }
}

pub(super) fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        // A damaged file is an error naming it, never a panic or silently wrong state.
        .set_check_integrity_on_open(true)
        .create(path)
}

/// Creates the tables of a new store; returns the store's format.
pub(super) fn check_format(db: &Database) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let format = {
        let mut meta = txn.open_table(META)?;
        let format = meta.get("format")?.map(|v| v.value());
        match format {
            Some(format) => format,
            None => {
                meta.insert("format", FORMAT)?;
                FORMAT
            }
        }
    };
    txn.open_table(CONTAINERS)?;
    txn.open_table(STATE)?;
    txn.commit()?;
    Ok(format)
}

/// Deletes every row of `container`, whatever the rule: one range per rule id, found by
/// skipping from one rule id to the next.
pub(super) fn delete_container(
    state: &mut StateTable<'_>,
    container: &str,
) -> Result<(), redb::Error> {
    // Keys of `container` under rule r are in [(r, container, ""), (r, container + NUL, "")).
    let end = format!("{container}\0");
    let mut from = String::new();
    loop {
        let rule = {
            let mut rows = state.range((from.as_str(), "", "")..)?;
            match rows.next() {
                Some(row) => row?.0.value().0.to_owned(),
                None => return Ok(()),
            }
        };
        state.retain_in(
            (rule.as_str(), container, "")..(rule.as_str(), end.as_str(), ""),
            |_, _| false,
        )?;
        // The smallest id after `rule`.
        from = rule;
        from.push('\0');
    }
}

pub(super) fn runtime_name(runtime: ContainerRuntime) -> &'static str {
    match runtime {
        ContainerRuntime::Docker => "docker",
        ContainerRuntime::Containerd => "containerd",
        ContainerRuntime::Crio => "crio",
        ContainerRuntime::Podman => "podman",
        ContainerRuntime::Kubernetes => "kubernetes",
        ContainerRuntime::Unknown => "unknown",
    }
}

pub(super) fn runtime_from(name: &str) -> ContainerRuntime {
    match name {
        "docker" => ContainerRuntime::Docker,
        "containerd" => ContainerRuntime::Containerd,
        "crio" => ContainerRuntime::Crio,
        "podman" => ContainerRuntime::Podman,
        "kubernetes" => ContainerRuntime::Kubernetes,
        _ => ContainerRuntime::Unknown,
    }
}
