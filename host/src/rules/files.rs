//! Rule bytes as the wasmtime side takes them: the built-in rule, and a rule file read
//! within the size bound.

use super::MAX_BUDGET_BYTES;
use std::path::Path;

/// The k8s_api_connection rule, byte-for-byte `target/rules/k8s_api_connection.wasm`.
pub const BUILTIN_K8S_API_CONNECTION: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/k8s_api_connection.wasm"));

/// Name the built-in rule is reported under.
pub const BUILTIN_NAME: &str = "k8s_api_connection";

/// Largest rule the host compiles by default: a rule file is untrusted input, and
/// compiling costs time and memory in proportion to its size. JavaScript and Python
/// rules carry their language runtime: 10 to 20 MiB. A rule's budget may raise it
/// ([`super::RuleBudget`]).
pub const MAX_RULE_BYTES: usize = 32 << 20;

/// Reads a rule file, refusing (without reading it all) one over what any budget allows
/// ([`MAX_BUDGET_BYTES`]); the rule's own bound is checked at load.
pub fn read_rule_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BUDGET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_BUDGET_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than the {} MiB any rule may be",
                MAX_BUDGET_BYTES >> 20
            ),
        ));
    }
    Ok(bytes)
}
