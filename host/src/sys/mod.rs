//! What touches the host itself: the mount table and the one cgroup v2 root the whole
//! agent uses.

pub mod mounts;
