//! A real OCI registry for the rule push/pull tests: Debian's `docker-registry` (the
//! CNCF distribution registry), on a loopback port, storing in a temp directory. No
//! registry outside the machine is involved.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running registry, stopped and its storage removed on drop.
pub struct LocalRegistry {
    child: Child,
    /// `127.0.0.1:PORT`, as a reference's registry part.
    pub address: String,
    storage: PathBuf,
    dir: PathBuf,
}

impl LocalRegistry {
    /// Starts one and waits until its API answers.
    pub fn start(name: &str) -> LocalRegistry {
        let dir =
            std::env::temp_dir().join(format!("rulehost-registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        // A port the kernel just handed out; the registry binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry; `make setup` installs it)");
        let mut registry = LocalRegistry {
            child,
            address,
            storage,
            dir,
        };
        registry.wait_ready();
        registry
    }

    /// Polls `GET /v2/` until it answers 200 (bounded: a failure, not a guess).
    fn wait_ready(&mut self) {
        let url = format!("http://{}/v2/", self.address);
        rulehost::install_tls_provider();
        let client = reqwest::blocking::Client::new();
        crate::live::wait_until(
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("docker-registry exited ({status}): {}", tail(&self.dir));
                }
                client
                    .get(&url)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            },
            || format!("registry at {url} never answered: {}", tail(&self.dir)),
        );
    }

    /// `127.0.0.1:PORT/REPOSITORY:TAG`.
    pub fn reference(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.address)
    }

    /// Where the registry keeps the blob with this digest (to tamper with it).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The last lines of the registry's log.
    pub fn log(&self) -> String {
        tail(&self.dir)
    }
}

/// The last lines of the log in a registry's directory.
fn tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
