//! A live agent watching rule files, and a container-like cgroup that connects to a
//! local "API server": the stage of the hot-reload and rule-trust tests.

use crate::live::{LiveAgent, TestCgroup};
use crate::{brief, k8s_rule_file, trigger_id};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

pub const KSH: &str = "KUBERNETES_SERVICE_HOST";

/// The built k8s_api_connection rule's bytes.
pub fn k8s_bytes() -> Vec<u8> {
    std::fs::read(k8s_rule_file()).expect("make build leaves the rule file")
}

/// A temp directory for one test, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("rulehost-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces `path` atomically (write a temp file, rename over).
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A live agent, a container-like cgroup and a listener its connects go to.
pub struct Scene {
    pub agent: LiveAgent,
    pub cgroup: TestCgroup,
    pub id: String,
    pub port: u16,
    _listener: TcpListener,
}

impl Scene {
    pub fn start(name: &str, tag: u8, args: &[&str]) -> Scene {
        let agent = LiveAgent::start(name, args);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let id = trigger_id(tag);
        let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
        Scene {
            agent,
            cgroup,
            id,
            port,
            _listener: listener,
        }
    }

    /// A connect from the container; waits for its finding (the `n`-th) and returns its sha256.
    pub fn connect_expect_finding(&self, n: usize, with_env: bool) -> String {
        let env: &[(&str, &str)] = if with_env { &[(KSH, "127.0.0.1")] } else { &[] };
        self.cgroup
            .run(env, &["tcp", &format!("127.0.0.1:{}", self.port)]);
        self.agent.wait_for(&format!("#{n}"), |_| {
            self.agent.findings_for(&self.id).len() >= n
        });
        let findings = self.agent.findings_for(&self.id);
        assert_eq!(findings.len(), n, "{}", brief(&findings));
        findings[n - 1]["rule"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}
