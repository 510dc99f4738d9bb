//! Which container a process runs in: parsing cgroup paths into a container id and
//! runtime, and mapping the kernel's cgroup id (the cgroup v2 directory's inode number,
//! what `bpf_get_current_cgroup_id` returns) to a path and container with a bounded cache.

pub(crate) mod sweep;

use crate::events::{Container, ContainerRuntime, Pod};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod paths;
mod resolver;
#[cfg(test)]
mod tests;

use paths::*;
pub use paths::{cgroup_id_of_pid, parse_cgroup_path, parse_proc_cgroup};
pub use resolver::{ContainerResolver, DEFAULT_MAX_ENTRIES, DEFAULT_MIN_WALK_INTERVAL, Resolution};
