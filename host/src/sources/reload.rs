//! Hot reload: noticing that rule files changed, compiling and validating the new
//! versions off the event path, and handing the dispatcher finished rules to swap in.
//!
//! Files change in three ways in practice, and all three are events in the file's
//! *directory*, which is what is watched: an in-place write (close-after-write on the
//! file), an atomic rename over it (moved-to), and the Kubernetes ConfigMap layout, where
//! `rule.wasm` is a symlink through `..data`, itself a symlink swapped atomically to a new
//! timestamped directory (moved-to of `..data`; a watch on the file alone misses it).
//! Whatever the event, the reaction is the same: rescan, and reload what hashes differently.

use crate::rules::{Rule, RuleEngine, sha256_hex};
use crate::trust::{Trust, Verdict};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Quiet time after a file event before rescanning, so a multi-step update (write then
/// rename, or the ConfigMap dance) is seen once, complete.
const SETTLE: Duration = Duration::from_millis(5);

/// Where rules come from: single files (`--rule`, pulled registry rules) and
/// directories of `*.wasm` (`--rules`), and which of their bytes may load.
#[derive(Debug, Clone, Default)]
pub struct RuleSources {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    /// Digest pins and trusted keys every read is checked against.
    pub trust: Arc<Trust>,
}

impl RuleSources {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }

    /// Every rule file the sources name now, as given (symlinks are followed when read).
    /// Hidden entries (`..data`, editor temp files) are not rules.
    pub fn scan(&self) -> BTreeSet<PathBuf> {
        let mut found: BTreeSet<PathBuf> = self.files.iter().cloned().collect();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with('.') && name.ends_with(".wasm") && entry.path().is_file() {
                    found.insert(entry.path());
                }
            }
        }
        found
    }

    /// The directories whose events can mean a rule changed.
    fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let parents = self.files.iter().map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
        parents.chain(self.dirs.iter().cloned()).collect()
    }
}

/// What a rescan found, for the dispatcher to apply between two batches.
pub enum Change {
    /// A new file, compiled and validated, and what vouched for its bytes.
    Add {
        path: PathBuf,
        rule: Arc<Rule>,
        trust: Verdict,
    },
    /// A new version of a loaded file, compiled and validated.
    Replace {
        path: PathBuf,
        rule: Arc<Rule>,
        trust: Verdict,
    },
    /// The file is gone.
    Remove { path: PathBuf },
    /// The file changed but cannot be loaded; the loaded version (if any) stays.
    /// `sha256` is of the bytes refused (none when unreadable), so the same bytes are
    /// not retried on every event, and different ones are.
    Reject {
        path: PathBuf,
        reason: String,
        sha256: Option<String>,
    },
}

/// A changed rule file to compile: its bytes, read once, and what they replace.
pub struct Compile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// What a refusal of these bytes is remembered by (see [`fingerprint`]).
    pub fingerprint: String,
    /// What vouched for the bytes (a pin, a trusted key's signature, or nothing).
    pub trust: Verdict,
    /// Whether a version of the file is loaded (so the result replaces it).
    pub replaces: bool,
}

impl Compile {
    /// Compiles and validates the bytes into an add, a replace or a reject. Blocking
    /// (a bounded child process when the engine isolates compiles): run it off the
    /// event path.
    pub fn run(self, runtime: &RuleEngine) -> Change {
        match runtime.load(&crate::sources::rule_name(&self.path), &self.bytes) {
            Ok(rule) if self.replaces => Change::Replace {
                path: self.path,
                rule,
                trust: self.trust,
            },
            Ok(rule) => Change::Add {
                path: self.path,
                rule,
                trust: self.trust,
            },
            Err(error) => Change::Reject {
                path: self.path,
                reason: format!("{error:#}"),
                sha256: Some(self.fingerprint),
            },
        }
    }
}

/// What a rescan found: changes to apply now, and files to compile first.
#[derive(Default)]
pub struct Scan {
    pub changes: Vec<Change>,
    pub compiles: Vec<Compile>,
}

/// Compares the files the sources name with what is loaded (path -> sha256): reads
/// and hashes what changed, compiling nothing. Blocking file reads: run it off the
/// event path.
pub fn scan(
    sources: &RuleSources,
    loaded: &BTreeMap<PathBuf, String>,
    rejected: &BTreeMap<PathBuf, String>,
) -> Scan {
    let present = sources.scan();
    let mut scan = Scan::default();
    for path in &present {
        // Read through the resolved path, so the rule and its signature come from one
        // directory snapshot (a ConfigMap swaps `..data` between any two reads).
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let bytes = match crate::rules::read_rule_file(&real) {
            Ok(bytes) => bytes,
            Err(error) => {
                // A listed file that vanished mid-swap is retried on the next event.
                if loaded.contains_key(path) || sources.files.contains(path) {
                    scan.changes.push(Change::Reject {
                        path: path.clone(),
                        reason: format!("cannot read: {error}"),
                        sha256: None,
                    });
                }
                continue;
            }
        };
        let sha256 = sha256_hex(&bytes);
        let signature = match sources.trust.requires_signatures() {
            true => crate::trust::read_signature(&real),
            false => None,
        };
        let fingerprint = fingerprint(&sha256, signature.as_deref());
        if loaded.get(path) == Some(&sha256) || rejected.get(path) == Some(&fingerprint) {
            continue;
        }
        let trust = match sources
            .trust
            .check(path, &sha256, &bytes, signature.as_deref())
        {
            Ok(trust) => trust,
            Err(reason) => {
                scan.changes.push(Change::Reject {
                    path: path.clone(),
                    reason,
                    sha256: Some(fingerprint),
                });
                continue;
            }
        };
        scan.compiles.push(Compile {
            path: path.clone(),
            bytes,
            replaces: loaded.contains_key(path),
            sha256,
            fingerprint,
            trust,
        });
    }
    for path in loaded.keys() {
        if !present.contains(path) && !sources.files.contains(path) {
            scan.changes.push(Change::Remove { path: path.clone() });
        }
    }
    scan
}

/// What a refused version of a file is remembered by: its bytes' sha256, and its
/// signature's when one is read, so a corrected signature alone is retried.
fn fingerprint(sha256: &str, signature: Option<&[u8]>) -> String {
    match signature {
        Some(signature) => format!("{sha256}+sig:{}", sha256_hex(signature)),
        None => sha256.to_owned(),
    }
}

/// [`scan`], then every compile one after the other: the start-up load.
pub fn plan(
    runtime: &RuleEngine,
    sources: &RuleSources,
    loaded: &BTreeMap<PathBuf, String>,
    rejected: &BTreeMap<PathBuf, String>,
) -> Vec<Change> {
    let Scan {
        mut changes,
        compiles,
    } = scan(sources, loaded, rejected);
    changes.extend(compiles.into_iter().map(|compile| compile.run(runtime)));
    changes
}

/// inotify on the directories of the rule sources.
pub struct Watcher {
    fd: AsyncFd<OwnedFd>,
}

impl Watcher {
    pub fn new(sources: &RuleSources) -> Result<Watcher> {
        // SAFETY: plain syscall; the fd is owned right away.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        for dir in sources.watch_dirs() {
            let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .context("rule path holds a NUL byte")?;
            // SAFETY: valid fd and NUL-terminated path.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), mask) } < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("watching {} for rule changes", dir.display()));
            }
        }
        // SAFETY: the descriptor is owned by the AsyncFd and closed only when it drops.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|_| anyhow::anyhow!("cannot register the inotify descriptor with tokio"))?;
        Ok(Watcher { fd })
    }

    /// Waits for file events, then for them to settle.
    pub async fn changed(&mut self) {
        loop {
            if self.drain_ready().await {
                break;
            }
        }
        while tokio::time::timeout(SETTLE, self.drain_ready())
            .await
            .is_ok()
        {}
    }

    /// Waits until readable and discards the pending events; true if there were any.
    async fn drain_ready(&self) -> bool {
        let Ok(mut guard) = self.fd.readable().await else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: reading into a local buffer of the given size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            any = true;
        }
        guard.clear_ready();
        any
    }
}

/// Loaded rule files and their hashes, plus the hashes last rejected (so a broken file
/// is reported once, not on every unrelated event).
#[derive(Debug, Default)]
pub struct Loaded {
    pub rules: BTreeMap<PathBuf, String>,
    pub rejected: BTreeMap<PathBuf, String>,
}

impl Loaded {
    /// Records the outcome of applying a change.
    pub fn record(&mut self, path: &Path, sha256: Option<&str>) {
        self.rejected.remove(path);
        match sha256 {
            Some(sha) => {
                self.rules.insert(path.to_path_buf(), sha.to_owned());
            }
            None => {
                self.rules.remove(path);
            }
        }
    }

    /// Records that these bytes of `path` were refused (the file may have changed
    /// again since: only what was actually refused is remembered).
    pub fn reject(&mut self, path: &Path, sha256: Option<&str>) {
        match sha256 {
            Some(sha) => {
                self.rejected.insert(path.to_path_buf(), sha.to_owned());
            }
            None => {
                self.rejected.remove(path);
            }
        }
    }
}
