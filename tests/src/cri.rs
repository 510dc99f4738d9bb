//! A real containerd with its CRI plugin (Debian's `containerd`), started by a test in
//! a private directory, and pods created through the CRI gRPC API as kubelet creates
//! them: pod metadata and labels, a `/kubepods/...` cgroup parent (cgroupfs driver),
//! host network, container labels. No registry is reachable here, so the one image
//! (busybox-static) is built as an OCI layout and imported.

use crate::live::wait_until;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, KeyValue,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tonic::transport::Channel;

/// The image every pod here runs (its default entrypoint sleeps: the sandbox image too).
pub const IMAGE: &str = "docker.io/library/rulehost-busybox:1";

/// A pod with one container, as a test wants it.
pub struct PodSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub container: &'a str,
    pub command: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
}

/// A running containerd, stopped (pods removed first) on drop.
pub struct Containerd {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    pods: Vec<String>,
}

impl Containerd {
    /// Starts containerd in `/tmp/rulehost-containerd-<name>-<pid>` and imports the image.
    pub fn start(name: &str) -> Containerd {
        let dir =
            std::env::temp_dir().join(format!("rulehost-containerd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &socket)).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package `containerd`; `make test` installs it)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut client = None;
        wait_until(
            || {
                client = runtime.block_on(connect(&socket));
                client.is_some()
            },
            || {
                format!(
                    "containerd at {} never answered; see {}",
                    socket.display(),
                    dir.join("containerd.log").display()
                )
            },
        );
        let containerd = Containerd {
            child,
            dir,
            socket,
            runtime,
            client: client.unwrap(),
            pods: Vec::new(),
        };
        containerd.import_image();
        containerd
    }

    fn import_image(&self) {
        self.import(&oci_image(&self.dir.join("image")));
    }

    /// Imports an image tarball (OCI layout or `docker save`) as kubelet's images are.
    pub fn import(&self, tar: &Path) {
        // Bounded (coreutils' timeout): a stuck import fails the test with containerd's log.
        let status = Command::new("timeout")
            .args(["300", "ctr"])
            .arg("--address")
            .arg(&self.socket)
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
            ])
            .arg(tar)
            .stdout(Stdio::null())
            .status()
            .expect("ctr");
        assert!(
            status.success(),
            "ctr images import {} failed: {status}; {}",
            tar.display(),
            self.log_tail()
        );
    }

    /// Runs a pod as kubelet would, and starts its container; returns the container id.
    pub fn run_pod(&mut self, spec: &PodSpec) -> String {
        let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.into(),
                uid: spec.uid.into(),
                namespace: spec.namespace.into(),
                attempt: 0,
            }),
            log_directory: self.log_directory().display().to_string(),
            labels: labels(spec.labels),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{}", spec.uid),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.container.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..ImageSpec::default()
            }),
            command: spec.command.iter().map(|s| (*s).into()).collect(),
            envs: spec
                .env
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            labels: labels(&[
                ("io.kubernetes.container.name", spec.container),
                ("io.kubernetes.pod.name", spec.name),
                ("io.kubernetes.pod.namespace", spec.namespace),
                ("io.kubernetes.pod.uid", spec.uid),
            ]),
            log_path: format!("{}.log", spec.container),
            ..ContainerConfig::default()
        };
        self.run(sandbox, container)
    }

    /// Runs a pod sandbox, then creates and starts its container, as kubelet does;
    /// returns the container id.
    pub fn run(&mut self, sandbox: PodSandboxConfig, container: ContainerConfig) -> String {
        let mut client = self.client.clone();
        let pod_id = self
            .runtime
            .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox: {}; {}", e.message(), self.log_tail()))
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(pod_id.clone());
        let container_id = self
            .runtime
            .block_on(client.create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(container),
                sandbox_config: Some(sandbox),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer: {}; {}", e.message(), self.log_tail()))
            .into_inner()
            .container_id;
        self.runtime
            .block_on(client.start_container(StartContainerRequest {
                container_id: container_id.clone(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer: {}; {}", e.message(), self.log_tail()));
        container_id
    }
}

impl Containerd {
    /// The last lines of containerd's own log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "containerd log: {}",
            crate::brief(&lines[lines.len().saturating_sub(3)..])
        )
    }

    /// Where pods' container logs go (CRI's log_directory).
    pub fn log_directory(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Waits until container `id` has exited.
    pub fn wait_exited(&self, id: &str) {
        let exited = || {
            let mut client = self.client.clone();
            let status = self.runtime.block_on(client.container_status(
                k8s_cri::v1::ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                },
            ));
            status
                .ok()
                .and_then(|s| s.into_inner().status)
                .is_some_and(|s| s.state == k8s_cri::v1::ContainerState::ContainerExited as i32)
        };
        wait_until(exited, || format!("container {id} never exited"));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let mut client = self.client.clone();
        // Each call bounded short: after a failure containerd may be the one stuck, and
        // it is killed below anyway.
        let bound = std::time::Duration::from_secs(15);
        for pod in std::mem::take(&mut self.pods) {
            let stop = StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            };
            let remove = RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            };
            self.runtime.block_on(async {
                let _ = tokio::time::timeout(bound, client.stop_pod_sandbox(stop)).await;
                let _ = tokio::time::timeout(bound, client.remove_pod_sandbox(remove)).await;
            });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client once containerd answers `Version` (asked with a short bound, so a starting
/// containerd is polled, not waited on).
async fn connect(socket: &Path) -> Option<RuntimeServiceClient<Channel>> {
    let probe = rulehost::metadata::cri::channel(socket).await.ok()?;
    RuntimeServiceClient::new(probe)
        .version(VersionRequest::default())
        .await
        .ok()?;
    // Pod creation is slow under emulation (the kernel matrix's VMs): a minute or two,
    // not seconds (bounded, so a stuck containerd fails the test with its log).
    let timeout = std::time::Duration::from_secs(120);
    let channel = rulehost::metadata::cri::channel_with_timeout(socket, timeout)
        .await
        .ok()?;
    Some(RuntimeServiceClient::new(channel))
}

/// `containerd config default`, with this machine's needs: a private root, state and
/// socket, the local image as sandbox image, the native snapshotter (no overlayfs
/// needed), no AppArmor, and no OOM score changes (root lacks CAP_SYS_RESOURCE).
fn config_toml(dir: &Path, socket: &Path) -> String {
    let default = Command::new("containerd")
        .args(["config", "default"])
        .output()
        .expect("containerd config default");
    let mut config = String::from_utf8(default.stdout).unwrap();
    for (from, to) in [
        (
            "root = \"/var/lib/containerd\"",
            format!("root = \"{}/root\"", dir.display()),
        ),
        (
            "state = \"/run/containerd\"",
            format!("state = \"{}/state\"", dir.display()),
        ),
        (
            "address = \"/run/containerd/containerd.sock\"",
            format!("address = \"{}\"", socket.display()),
        ),
        (
            "sandbox_image = \"registry.k8s.io/pause:3.6\"",
            format!("sandbox_image = \"{IMAGE}\""),
        ),
        (
            "snapshotter = \"overlayfs\"",
            "snapshotter = \"native\"".into(),
        ),
        ("disable_apparmor = false", "disable_apparmor = true".into()),
        (
            "restrict_oom_score_adj = false",
            "restrict_oom_score_adj = true".into(),
        ),
    ] {
        assert!(
            config.contains(from),
            "containerd's default config lacks {from:?}"
        );
        config = config.replace(from, &to);
    }
    config
}

/// Writes an OCI image layout tarball of busybox-static (entrypoint `sleep`) under
/// `dir`; returns its path.
fn oci_image(dir: &Path) -> PathBuf {
    use crate::sha256_hex;
    let blobs = dir.join("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = busybox_layer(dir);
    let blob = |bytes: &[u8]| -> (String, usize) {
        let digest = sha256_hex(bytes);
        std::fs::write(blobs.join(&digest), bytes).unwrap();
        (format!("sha256:{digest}"), bytes.len())
    };
    let (layer_digest, layer_size) = blob(&std::fs::read(&layer).unwrap());
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "100000"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = blob(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"},
        }],
    });
    std::fs::write(dir.join("layout/index.json"), index.to_string()).unwrap();
    std::fs::write(
        dir.join("layout/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let image = dir.join("image.tar");
    tar(&dir.join("layout"), &image);
    image
}

/// A root filesystem of busybox-static (`/bin/busybox`, `sh`, `sleep`, `nc`) as an
/// uncompressed layer tarball under `dir`; returns its path.
pub fn busybox_layer(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("/bin/busybox (Debian package `busybox-static`)");
    for applet in ["sh", "sleep", "nc", "mkfifo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let layer = dir.join("layer.tar");
    tar(&rootfs, &layer);
    layer
}

fn tar(from: &Path, to: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(from)
        .arg("-cf")
        .arg(to)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success(), "tar {} failed", from.display());
}
