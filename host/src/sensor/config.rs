//! The kernel side's configuration: the embedded object, the `CONFIG` map, the ring
//! buffer size and the captured env names.

use super::*;

/// The object built by `ebpf/build.sh`, copied into OUT_DIR by build.rs.
pub(super) static EMBEDDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rulehost-probes.o"));

pub(super) fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no {name} map"))
}

pub(super) fn write_config(ebpf: &mut Ebpf, config: &abi::Config) -> Result<()> {
    let mut map: Array<_, PodConfig> = Array::try_from(map_mut(ebpf, abi::MAP_CONFIG)?)?;
    map.set(0, &PodConfig(*config), 0)?;
    Ok(())
}

/// A ring buffer must be a power-of-two number of pages.
pub(super) fn check_ring_bytes(bytes: u32) -> Result<u32> {
    if bytes < 4096 || !bytes.is_power_of_two() {
        bail!("the ring buffer size must be a power of two of at least 4 KiB, not {bytes} bytes");
    }
    Ok(bytes)
}

/// Entries for `LINEAGE`, one per possible pid: the kernel's `pid_max` (the default
/// when it cannot be read), never past the kernel's own ceiling. A pid_max raised
/// later leaves the new pids untracked (no lineage, never a wrong one).
pub(super) fn lineage_entries() -> u32 {
    let read = fs::read_to_string("/proc/sys/kernel/pid_max");
    match read.as_deref().map(str::trim).map(str::parse::<u32>) {
        Ok(Ok(pid_max)) => pid_max.clamp(abi::LINEAGE_DEFAULT, abi::LINEAGE_MAX),
        _ => {
            tracing::warn!(
                path = "/proc/sys/kernel/pid_max",
                entries = abi::LINEAGE_DEFAULT,
                "pid_max unreadable; lineage sized to the kernel's default"
            );
            abi::LINEAGE_DEFAULT
        }
    }
}

/// Validates the configuration and turns it into the kernel's `Config`.
pub(super) fn build_config(cfg: &ProbeConfig, ring_bytes: u32) -> Result<abi::Config> {
    let mut names: Vec<&str> = cfg.env_vars.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != cfg.env_vars.len() {
        bail!("env_vars lists a name twice");
    }
    if names.len() > abi::ENV_NAMES_MAX {
        bail!(
            "at most {} env_vars can be captured, {} given",
            abi::ENV_NAMES_MAX,
            names.len()
        );
    }
    for name in &names {
        if name.is_empty() || name.len() > abi::ENV_NAME_MAX || name.contains(['=', '\0']) {
            bail!(
                "env var name {name:?} is invalid (1..={} bytes, no '=' or NUL)",
                abi::ENV_NAME_MAX
            );
        }
    }
    let mut config = abi::Config {
        containers_only: cfg.containers_only as u32,
        wakeup_bytes: WAKEUP_BYTES.min(ring_bytes / 4),
        // cgroup v2's hierarchy id is always 0 (the `0::` line of /proc/self/cgroup).
        cgroup_hierarchy: 0,
        env_names: names.len() as u32,
        env_name_lens: [0; abi::ENV_NAMES_MAX],
        // On once the fork hook is attached (`attach_lineage`).
        lineage: 0,
        idle: 0,
        filter_connects: 0,
        _pad: 0,
        env_name_masks: [[0; abi::ENV_NAME_WORDS]; abi::ENV_NAMES_MAX],
        env_name_words: [[0; abi::ENV_NAME_WORDS]; abi::ENV_NAMES_MAX],
    };
    // In the order given: a slot's index is where its entries go in the record.
    for (slot, name) in cfg.env_vars.iter().enumerate() {
        config.env_name_lens[slot] = name.len() as u8;
        config.env_name_masks[slot] = abi::env_name_masks(name.len());
        config.env_name_words[slot] = abi::env_name_words(name.as_bytes());
    }
    Ok(config)
}
