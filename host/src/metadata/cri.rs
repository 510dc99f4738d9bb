//! Container and pod metadata from a CRI runtime (containerd, CRI-O) over its gRPC API,
//! as kubelet sees it: the container's name, image and labels, and its pod's name,
//! namespace, uid and labels. Uses the `k8s-cri` bindings (tonic) over a Unix socket.

use crate::events::{Container, Pod};
use anyhow::{Context, Result, anyhow};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, ContainerStatusRequest, ListContainersRequest, PodSandboxStatusRequest,
    VersionRequest,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where CRI runtimes listen by default: containerd, CRI-O, k3s's containerd.
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// How long one lookup (all its calls) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A gRPC channel to a Unix socket (for the CRI clients here and in tests).
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    channel_with_timeout(socket, CALL_TIMEOUT).await
}

/// [`channel`] with calls bounded by `timeout` (a test's pod creation under emulation
/// takes far longer than a metadata lookup may).
pub async fn channel_with_timeout(
    socket: &Path,
    timeout: std::time::Duration,
) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector dials the Unix socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// A connected CRI runtime.
#[derive(Clone)]
pub struct Cri {
    socket: PathBuf,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Connects to the runtime at `socket` and asks its version (so a dead socket is
    /// known at once).
    pub async fn connect(socket: &Path) -> Result<Cri> {
        let channel = channel(socket)
            .await
            .with_context(|| format!("connecting to CRI socket {}", socket.display()))?;
        let mut client = RuntimeServiceClient::new(channel);
        let version = client
            .version(VersionRequest::default())
            .await
            .map_err(|status| anyhow!("CRI {}: {}", socket.display(), status.message()))?
            .into_inner();
        tracing::info!(
            socket = %socket.display(),
            runtime = %version.runtime_name,
            version = %version.runtime_version,
            "CRI runtime connected"
        );
        Ok(Cri {
            socket: socket.to_path_buf(),
            client,
        })
    }

    /// What the runtime knows of container `id`; `None` when it does not know it.
    pub async fn lookup(&self, id: &str) -> Result<Option<Container>> {
        let mut client = self.client.clone();
        let listed = client
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    id: id.to_owned(),
                    ..ContainerFilter::default()
                }),
            })
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        let Some(listed) = listed.containers.into_iter().next() else {
            return Ok(None);
        };
        let status = client
            .container_status(ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(|s| self.error(s))?
            .into_inner()
            .status;
        let sandbox = client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: listed.pod_sandbox_id.clone(),
                verbose: false,
            })
            .await
            .map_err(|s| self.error(s))?
            .into_inner()
            .status;
        let name = listed.metadata.map(|m| m.name).filter(|n| !n.is_empty());
        let image = status
            .as_ref()
            .and_then(|s| s.image.as_ref())
            .map(|i| i.image.clone())
            .or_else(|| listed.image.map(|i| i.image))
            .filter(|i| !i.is_empty());
        let image_id = status
            .map(|s| s.image_ref)
            .or(Some(listed.image_ref))
            .filter(|i| !i.is_empty());
        let pod = sandbox.map(|sandbox| {
            let meta = sandbox.metadata.unwrap_or_default();
            Pod {
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                labels: sandbox.labels.into_iter().collect(),
            }
        });
        Ok(Some(Container {
            name,
            image,
            image_id,
            pod,
            ..Container::new(id, crate::events::ContainerRuntime::Kubernetes)
        }))
    }

    fn error(&self, status: tonic::Status) -> anyhow::Error {
        anyhow!(
            "CRI {}: {} ({:?})",
            self.socket.display(),
            status.message(),
            status.code()
        )
    }
}
