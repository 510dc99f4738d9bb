//! Container metadata from the Docker Engine API over its Unix socket (`bollard`): the
//! container's name, image and labels, and its pod from the `io.kubernetes.*` labels
//! where present (dockershim, cri-dockerd).

use crate::events::{Container, ContainerRuntime, Pod};
use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use std::path::{Path, PathBuf};

/// Where the Docker Engine listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Seconds one request may take.
const TIMEOUT_SECS: u64 = 2;

/// A connected Docker Engine.
#[derive(Clone)]
pub struct DockerEngine {
    socket: PathBuf,
    client: Docker,
}

impl DockerEngine {
    /// Connects to the engine at `socket` and agrees on an API version.
    pub async fn connect(socket: &Path) -> Result<DockerEngine> {
        let path = socket
            .to_str()
            .ok_or_else(|| anyhow!("socket path {} is not UTF-8", socket.display()))?;
        let client = Docker::connect_with_unix(path, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("connecting to Docker socket {}", socket.display()))?
            .negotiate_version()
            .await
            .map_err(|e| anyhow!("Docker {}: {e}", socket.display()))?;
        let version = client
            .version()
            .await
            .map_err(|e| anyhow!("Docker {}: {e}", socket.display()))?;
        tracing::info!(
            socket = %socket.display(),
            version = version.version.as_deref().unwrap_or("?"),
            "Docker engine connected"
        );
        Ok(DockerEngine {
            socket: socket.to_path_buf(),
            client,
        })
    }

    /// What the engine knows of container `id`; `None` when it does not know it.
    pub async fn lookup(&self, id: &str) -> Result<Option<Container>> {
        let inspected = match self.client.inspect_container(id, None).await {
            Ok(inspected) => inspected,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(error) => return Err(anyhow!("Docker {}: {error}", self.socket.display())),
        };
        let config = inspected.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        let label = |key: &str| labels.get(key).filter(|v| !v.is_empty()).cloned();
        let pod = label("io.kubernetes.pod.name").map(|name| Pod {
            name,
            namespace: label("io.kubernetes.pod.namespace").unwrap_or_default(),
            uid: label("io.kubernetes.pod.uid").unwrap_or_default(),
            labels: Default::default(),
        });
        Ok(Some(Container {
            name: inspected
                .name
                .map(|n| n.trim_start_matches('/').to_owned())
                .filter(|n| !n.is_empty()),
            image: config.image.filter(|i| !i.is_empty()),
            image_id: inspected.image.filter(|i| !i.is_empty()),
            pod,
            ..Container::new(id, ContainerRuntime::Docker)
        }))
    }
}
