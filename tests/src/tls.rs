//! A real HTTPS receiver for the webhook tests: hyper serving HTTP/1.1 over tokio-rustls,
//! with certificates from throwaway CAs that rcgen makes per test (nothing shared with the
//! system's trust store).

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A CA able to sign server and client certificates.
struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Ca {
            der: certificate.der().clone(),
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses): its chain and key.
    fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: certificate.der().clone(),
            pem: certificate.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }
}

struct Leaf {
    der: CertificateDer<'static>,
    pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

/// The test's PKI: the receivers' CA, a CA nobody uses (the "wrong CA"), and a client
/// certificate from the receivers' CA; the files an agent's config names are in `dir`.
pub struct Pki {
    ca: Ca,
    server: Leaf,
    dir: PathBuf,
}

impl Pki {
    /// Writes `ca.pem`, `other-ca.pem`, `client.pem` and `client.key` into `dir`.
    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::new("rulehost test CA");
        let server = ca.leaf(&["127.0.0.1", "localhost"]);
        let client = ca.leaf(&["rulehost-agent"]);
        let other = Ca::new("a CA the receivers do not use");
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in [
            ("ca.pem", &ca.pem),
            ("other-ca.pem", &other.pem),
            ("client.pem", &client.pem),
            ("client.key", &client.key_pem),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Pki {
            ca,
            server,
            dir: dir.to_owned(),
        }
    }

    /// One of the files `new` wrote.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn server_config(&self, client_auth: ClientAuth) -> rustls::ServerConfig {
        rulehost::install_tls_provider();
        let builder = rustls::ServerConfig::builder();
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(self.ca.der.clone()).unwrap();
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.key_der.clone()));
        builder
            .with_single_cert(vec![self.server.der.clone()], key)
            .unwrap()
    }
}

/// Whether a receiver asks for the client's certificate.
#[derive(Clone, Copy)]
pub enum ClientAuth {
    None,
    /// Mutual TLS: a client without a certificate from the test CA is refused.
    Required,
}

/// An HTTPS server on 127.0.0.1 that answers 200 to every request and keeps its JSON
/// body; runs until the test process exits.
pub struct TlsReceiver {
    pub addr: SocketAddr,
    posted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<AtomicU64>,
}

impl TlsReceiver {
    pub fn start(pki: &Pki, client_auth: ClientAuth) -> TlsReceiver {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(client_auth)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let posted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let (keep, count) = (posted.clone(), refused.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(listener, acceptor, keep, count));
        });
        TlsReceiver {
            addr,
            posted,
            refused,
        }
    }

    /// The bodies received so far.
    pub fn posted(&self) -> Vec<Value> {
        self.posted.lock().unwrap().clone()
    }

    /// Connections whose TLS handshake failed (a client certificate missing or unknown).
    pub fn refused_handshakes(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    posted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<AtomicU64>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    while let Ok((stream, _)) = listener.accept().await {
        let (acceptor, posted, refused) = (acceptor.clone(), posted.clone(), refused.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let service = hyper::service::service_fn(move |request| keep(request, posted.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn keep(
    request: hyper::Request<Incoming>,
    posted: Arc<Mutex<Vec<Value>>>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    if let Ok(value) = serde_json::from_slice(&body) {
        posted.lock().unwrap().push(value);
    }
    Ok(hyper::Response::new(Full::new(Bytes::new())))
}
