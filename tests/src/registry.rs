//! A real OCI registry for the rule push/pull tests: Debian's `docker-registry` (the
//! CNCF distribution registry), on a loopback port, storing in a temp directory, open or
//! behind htpasswd basic auth (the file written by Debian's `htpasswd`). No registry
//! outside the machine is involved.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running registry, stopped and its storage removed on drop.
pub struct LocalRegistry {
    child: Option<Child>,
    config: PathBuf,
    /// `127.0.0.1:PORT`, as a reference's registry part.
    pub address: String,
    storage: PathBuf,
    dir: PathBuf,
}

impl LocalRegistry {
    /// Starts an open one and waits until its API answers.
    pub fn start(name: &str) -> LocalRegistry {
        LocalRegistry::start_with(name, None)
    }

    /// Starts one that only `user` with `password` may use (basic auth).
    pub fn start_with_login(name: &str, user: &str, password: &str) -> LocalRegistry {
        LocalRegistry::start_with(name, Some((user, password)))
    }

    fn start_with(name: &str, login: Option<(&str, &str)>) -> LocalRegistry {
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
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            storage.display()
        );
        if let Some((user, password)) = login {
            let htpasswd = dir.join("htpasswd");
            write_htpasswd(&htpasswd, user, password);
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rulehost-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let mut registry = LocalRegistry {
            child: None,
            config,
            address,
            storage,
            dir,
        };
        registry.resume();
        registry
    }

    /// Stops the registry (its storage stays): an outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port and storage; waits until it answers.
    pub fn resume(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("registry.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry; `make setup` installs it)");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls `GET /v2/` until it answers 200, or 401 behind auth (bounded: a failure,
    /// not a guess).
    fn wait_ready(&mut self) {
        let url = format!("http://{}/v2/", self.address);
        rulehost::install_tls_provider();
        let client = reqwest::blocking::Client::new();
        let child = self.child.as_mut().expect("a started registry");
        crate::live::wait_until(
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("docker-registry exited ({status}): {}", tail(&self.dir));
                }
                client
                    .get(&url)
                    .send()
                    .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 401)
            },
            || format!("registry at {url} never answered: {}", tail(&self.dir)),
        );
    }

    /// Docker's config.json with a login for this registry, as `docker login` and a
    /// dockerconfigjson Secret write it, at `path`.
    pub fn docker_config(&self, path: &Path, user: &str, password: &str) {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let config = serde_json::json!({"auths": {self.address.clone(): {"auth": auth}}});
        std::fs::write(path, config.to_string()).unwrap();
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

/// A bcrypt htpasswd file (what the registry accepts) written by Debian's `htpasswd`.
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(path)
        .args([user, password])
        .output()
        .expect("htpasswd (Debian package apache2-utils; `make setup` installs it)");
    assert!(
        out.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
