//! Rule state on disk, so it survives a restart of the host (including `kill -9`).
//!
//! One redb database, `<state-dir>/state.redb`, with three tables:
//!
//! - `meta`: `&str -> u64`; `"format"` is [`FORMAT`], the layout below.
//! - `containers`: `&str -> &str`; container id -> its runtime (`"containerd"`, …), the
//!   part of a container needed to intern it again after a restart. A container has a row
//!   here iff some rule has state rows for it (written in the same transaction).
//! - `state`: `(&str, &str, &str) -> &[u8]`; (rule id, container id, key) -> value.
//!   Container handles are per-process numbers, so rows are keyed by container id.
//!   Ordered by rule id first: a rule's rows are one range.
//!
//! The dispatcher writes behind: a [`RuleState`] records which (container, key) entries
//! changed, and after each batch every change of every rule goes out in one write
//! transaction (redb commits durably and atomically, so a `kill -9` loses at most the
//! batch being dispatched). A container that goes away has its rows deleted; at start-up
//! the rows of containers that vanished while the host was down are deleted.

use crate::events::{Container, ContainerRuntime};
use crate::logging::error_line;
use crate::state::ContainerTable;
use crate::state::{Changes, RuleState};
use anyhow::{Result, anyhow, bail};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rustc_hash::{FxHashMap, FxHashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod interest;
mod schema;

use schema::*;
pub use schema::{FILE_NAME, FORMAT, RestoreReport};

/// The open store and what the dispatcher knows is on disk.
pub(crate) struct StateStore {
    path: PathBuf,
    /// `None` after an I/O error that requires reopening; reopened on the next write.
    db: Option<Database>,
    /// Handles of the containers that have a `containers` row.
    on_disk: FxHashSet<u64>,
    /// Containers that went away whose rows are still to be deleted.
    evicted: Vec<String>,
    /// When the last write-failure warning was printed, while writes fail.
    warned: Option<Instant>,
}

impl StateStore {
    /// Opens (creating) `<dir>/state.redb`.
    pub(crate) fn open(dir: &Path) -> Result<StateStore> {
        // Created private: it tells which containers rules are tracking, and how.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow!("cannot create the state directory {}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let fail = |e: &(dyn std::error::Error + 'static)| {
            anyhow!(
                "cannot open the state store {}: {}",
                path.display(),
                error_line(e)
            )
        };
        let db = open_db(&path).map_err(|e| fail(&e))?;
        let format = check_format(&db).map_err(|e| fail(&e))?;
        if format != FORMAT {
            bail!(
                "cannot open the state store {}: it has format {format}, this rulehost reads format {FORMAT}",
                path.display()
            );
        }
        Ok(StateStore {
            path,
            db: Some(db),
            on_disk: FxHashSet::default(),
            evicted: Vec::new(),
            warned: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Start-up sweep: deletes the rows of containers for which `alive` is false (and
    /// rows without a container), interns the others into `table`. Fills `containers`
    /// and `dropped` of the report; returns it with the number of rows kept.
    pub(crate) fn sweep(
        &mut self,
        alive: impl Fn(&str) -> bool,
        table: &mut ContainerTable,
    ) -> Result<(RestoreReport, usize)> {
        self.sweep_inner(alive, table).map_err(|e| {
            anyhow!(
                "cannot read the state store {}: {}",
                self.path.display(),
                error_line(&e)
            )
        })
    }

    fn sweep_inner(
        &mut self,
        alive: impl Fn(&str) -> bool,
        table: &mut ContainerTable,
    ) -> Result<(RestoreReport, usize), redb::Error> {
        let mut report = RestoreReport::default();
        let mut kept_rows = 0;
        // Alive containers: runtime, and how many rows they have.
        let mut live: FxHashMap<String, (ContainerRuntime, usize)> = FxHashMap::default();
        let txn = self.db()?.begin_write()?;
        {
            let mut containers = txn.open_table(CONTAINERS)?;
            let mut gone = Vec::new();
            for row in containers.iter()? {
                let (id, runtime) = row?;
                let id = id.value();
                if alive(id) {
                    live.insert(id.to_owned(), (runtime_from(runtime.value()), 0));
                } else {
                    gone.push(id.to_owned());
                }
            }
            let mut state = txn.open_table(STATE)?;
            state.retain(|(_, container, _), _| match live.get_mut(container) {
                Some((_, rows)) => {
                    *rows += 1;
                    kept_rows += 1;
                    true
                }
                None => {
                    report.dropped += 1;
                    false
                }
            })?;
            gone.extend(
                live.iter()
                    .filter(|(_, (_, rows))| *rows == 0)
                    .map(|(id, _)| id.clone()),
            );
            for id in &gone {
                containers.remove(id.as_str())?;
            }
        }
        txn.commit()?;
        for (id, (runtime, rows)) in live {
            if rows > 0 {
                let handle = table.intern(&Container::new(id, runtime));
                self.on_disk.insert(handle);
                report.containers += 1;
            }
        }
        Ok((report, kept_rows))
    }

    /// Puts the rows of rule `rule_id` back into `state`, for containers `table` knows;
    /// values already held are kept. Returns (restored, refused by the bounds, rows read).
    pub(crate) fn restore_rule(
        &mut self,
        rule_id: &str,
        state: &mut RuleState,
        table: &ContainerTable,
    ) -> Result<(usize, usize, usize)> {
        self.restore_inner(rule_id, state, table).map_err(|e| {
            anyhow!(
                "cannot read the state store {}: {}",
                self.path.display(),
                error_line(&e)
            )
        })
    }

    fn restore_inner(
        &mut self,
        rule_id: &str,
        state: &mut RuleState,
        table: &ContainerTable,
    ) -> Result<(usize, usize, usize), redb::Error> {
        let (mut restored, mut refused, mut read) = (0, 0, 0);
        let txn = self.db()?.begin_read()?;
        let rows = match txn.open_table(STATE) {
            Ok(rows) => rows,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((0, 0, 0)),
            Err(error) => return Err(error.into()),
        };
        // Every key of this rule sorts below (`rule_id` + NUL, "", "").
        let end = format!("{rule_id}\0");
        for row in rows.range((rule_id, "", "")..(end.as_str(), "", ""))? {
            let (key, value) = row?;
            let (_, container, key) = key.value();
            read += 1;
            // A container without a handle was evicted; its rows are being deleted.
            let Some(handle) = table.handle_of(container) else {
                continue;
            };
            if state.restore(handle, key, value.value()) {
                restored += 1;
            } else if state.get(handle, key).is_none() {
                refused += 1;
            }
        }
        Ok((restored, refused, read))
    }

    /// A container went away: its rows are deleted at the next write. Returns whether
    /// it had any (so a write is needed).
    pub(crate) fn forget(&mut self, handle: u64, id: &str) -> bool {
        if self.on_disk.remove(&handle) {
            self.evicted.push(id.to_owned());
            true
        } else {
            false
        }
    }

    /// Whether some container eviction is still to be written.
    #[cfg(test)]
    pub(crate) fn has_evictions(&self) -> bool {
        !self.evicted.is_empty()
    }

    /// Writes the recorded changes of `rules` (rule id, state) and pending evictions in
    /// one transaction. On failure everything stays pending for the next call, and a
    /// warning is printed.
    pub(crate) fn flush<'a>(
        &mut self,
        rules: impl Iterator<Item = (&'a str, &'a mut RuleState)>,
        table: &ContainerTable,
    ) {
        let mut taken: Vec<(&str, &mut RuleState, Changes)> = rules
            .filter(|(_, state)| state.has_changes())
            .filter_map(|(id, state)| {
                let changes = state.take_changes()?;
                Some((id, state, changes))
            })
            .collect();
        if taken.is_empty() && self.evicted.is_empty() {
            return;
        }
        match self.write(&taken, table) {
            Ok(written) => {
                self.on_disk.extend(written);
                self.evicted.clear();
                if self.warned.take().is_some() {
                    tracing::info!(path = %self.path.display(), "rule state is persisted again");
                }
            }
            Err(error) => {
                for (_, state, changes) in taken.drain(..) {
                    state.resume_changes(Some(changes));
                }
                self.write_failed(&error);
            }
        }
    }

    /// After a failed write: reopens after an I/O error (redb refuses further use of
    /// the handle), and warns at most once a minute.
    pub(super) fn write_failed(&mut self, error: &redb::Error) {
        if matches!(error, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.db = None;
        }
        let now = Instant::now();
        if self
            .warned
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
        {
            tracing::warn!(
                path = %self.path.display(),
                error = %error_line(error),
                "cannot persist rule state (repeated at most once a minute)"
            );
            self.warned = Some(now);
        }
    }

    /// One write transaction; returns the handles whose `containers` row it added.
    fn write(
        &mut self,
        taken: &[(&str, &mut RuleState, Changes)],
        table: &ContainerTable,
    ) -> Result<FxHashSet<u64>, redb::Error> {
        let mut added = FxHashSet::default();
        let mut wrote = !self.evicted.is_empty();
        let txn = self.db()?.begin_write()?;
        {
            let mut containers = txn.open_table(CONTAINERS)?;
            let mut state = txn.open_table(STATE)?;
            for id in &self.evicted {
                containers.remove(id.as_str())?;
                delete_container(&mut state, id)?;
            }
            for (rule_id, rule_state, changes) in taken {
                for (handle, keys) in changes.iter() {
                    // Not a container (or one that went away since): nothing to keep.
                    let Some(container) = table.get(handle) else {
                        continue;
                    };
                    wrote = true;
                    for key in keys {
                        let row = (*rule_id, container.id.as_str(), key.as_str());
                        match rule_state.get(handle, key) {
                            Some(value) => {
                                if !self.on_disk.contains(&handle) && added.insert(handle) {
                                    containers.insert(
                                        container.id.as_str(),
                                        runtime_name(container.runtime),
                                    )?;
                                }
                                state.insert(row, value)?;
                            }
                            None => {
                                state.remove(row)?;
                            }
                        }
                    }
                }
            }
        }
        if wrote {
            txn.commit()?;
        } else {
            // Only non-container handles changed: no commit (and no sync) for nothing.
            txn.abort()?;
        }
        Ok(added)
    }

    /// The database, reopened if an earlier I/O error closed it.
    fn db(&mut self) -> Result<&Database, redb::Error> {
        if self.db.is_none() {
            self.db = Some(open_db(&self.path)?);
        }
        Ok(self.db.as_ref().expect("just opened"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateLimits;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rulehost-persist-unit-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn container(tag: u8) -> Container {
        Container::new(format!("{tag:02x}").repeat(32), ContainerRuntime::Crio)
    }

    #[test]
    fn the_store_can_move_with_the_dispatcher() {
        fn send<T: Send>() {}
        send::<StateStore>();
        send::<crate::dispatch::Dispatcher>();
    }

    #[test]
    fn runtime_names_round_trip() {
        for runtime in [
            ContainerRuntime::Docker,
            ContainerRuntime::Containerd,
            ContainerRuntime::Crio,
            ContainerRuntime::Podman,
            ContainerRuntime::Kubernetes,
            ContainerRuntime::Unknown,
        ] {
            assert_eq!(runtime_from(runtime_name(runtime)), runtime);
        }
    }

    #[test]
    fn eviction_deletes_a_container_under_every_rule_only() {
        let dir = temp_dir("evict");
        let mut store = StateStore::open(&dir).unwrap();
        let mut table = ContainerTable::default();
        let (a, b) = (table.intern(&container(1)), table.intern(&container(2)));
        // Rule ids that are prefixes of one another, and keys around the range edges.
        let ids = ["R", "R1", "R\u{1}", "S"];
        let mut states: Vec<RuleState> = ids
            .iter()
            .map(|_| {
                let mut state = RuleState::new(StateLimits::default());
                state.record_changes();
                for handle in [a, b] {
                    state.set(handle, "", vec![1]).unwrap();
                    state.set(handle, "k", vec![2]).unwrap();
                    state.set(handle, "\u{10ffff}", vec![3]).unwrap();
                }
                state
            })
            .collect();
        store.flush(ids.iter().copied().zip(states.iter_mut()), &table);
        assert!(states.iter().all(|s| !s.has_changes()));
        assert!(store.forget(a, &container(1).id));
        assert!(!store.forget(a, &container(1).id));
        store.flush(ids.iter().copied().zip(states.iter_mut()), &table);
        assert!(!store.has_evictions());

        // After a restart (a new store and table), only container 2's rows are left.
        drop(store);
        let mut store = StateStore::open(&dir).unwrap();
        let mut table = ContainerTable::default();
        let (report, kept) = store.sweep(|_| true, &mut table).unwrap();
        assert_eq!((report.containers, report.dropped, kept), (1, 0, 12));
        assert!(table.handle_of(&container(1).id).is_none());
        let handle = table.handle_of(&container(2).id).unwrap();
        assert_eq!(table.get(handle).unwrap().runtime, ContainerRuntime::Crio);
        for id in ids {
            let mut state = RuleState::new(StateLimits::default());
            let (restored, refused, read) = store.restore_rule(id, &mut state, &table).unwrap();
            assert_eq!((restored, refused, read), (3, 0, 3), "rule {id:?}");
            assert_eq!(state.get(handle, "\u{10ffff}"), Some(&[3u8][..]));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn removed_keys_are_deleted_and_bounds_apply_on_restore() {
        let dir = temp_dir("remove");
        let mut store = StateStore::open(&dir).unwrap();
        let mut table = ContainerTable::default();
        let handle = table.intern(&container(3));
        let mut state = RuleState::new(StateLimits::default());
        state.record_changes();
        for key in ["a", "b", "c"] {
            state.set(handle, key, key.as_bytes().to_vec()).unwrap();
        }
        store.flush(std::iter::once(("R", &mut state)), &table);
        state.remove(handle, "b");
        store.flush(std::iter::once(("R", &mut state)), &table);
        drop(store);

        let mut store = StateStore::open(&dir).unwrap();
        let mut table = ContainerTable::default();
        let (_, kept) = store.sweep(|_| true, &mut table).unwrap();
        assert_eq!(kept, 2);
        let handle = table.handle_of(&container(3).id).unwrap();
        let mut state = RuleState::new(StateLimits {
            max_keys_per_container: 1,
            ..StateLimits::default()
        });
        let (restored, refused, _) = store.restore_rule("R", &mut state, &table).unwrap();
        assert_eq!((restored, refused), (1, 1));
        assert_eq!(state.get(handle, "a"), Some(&b"a"[..]));
        assert_eq!(state.get(handle, "b"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
