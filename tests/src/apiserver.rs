//! A stand-in Kubernetes API server for the EndpointSlices watch: no cluster runs on
//! this machine, so this serves the real wire format (discovery.k8s.io/v1
//! `EndpointSliceList` for a list, a chunked stream of `{"type": ..., "object": ...}`
//! watch events for `?watch=true`) over plain HTTP/1.1 from a local port. It answers
//! every request for the `default/kubernetes` slices; anything else is a 404.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The one slice served, and the watch streams open now.
#[derive(Default)]
struct Shared {
    slice: Value,
    version: u64,
    watchers: Vec<TcpStream>,
}

/// A running stand-in; its threads end with the test process.
pub struct FakeApiServer {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
}

impl FakeApiServer {
    /// Serves the `kubernetes` slice naming `endpoints` (`ip`, `port`).
    pub fn start(endpoints: &[(&str, u16)]) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared {
            slice: slice(endpoints, 1),
            version: 1,
            watchers: Vec::new(),
        }));
        let serving = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = serving.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeApiServer { port, shared }
    }

    /// A kubeconfig (no credentials) pointing at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\n",
            self.port
        )
    }

    /// How many watch streams are open.
    pub fn watchers(&self) -> usize {
        self.shared.lock().unwrap().watchers.len()
    }

    /// Replaces the slice's endpoints and sends a MODIFIED event to every watcher.
    pub fn set_endpoints(&self, endpoints: &[(&str, u16)]) {
        let mut shared = self.shared.lock().unwrap();
        shared.version += 1;
        shared.slice = slice(endpoints, shared.version);
        let event = json!({"type": "MODIFIED", "object": shared.slice});
        let chunk = chunk(&format!("{event}\n"));
        shared
            .watchers
            .retain_mut(|stream| stream.write_all(&chunk).is_ok());
    }
}

/// The `kubernetes` EndpointSlice as the control plane writes it.
fn slice(endpoints: &[(&str, u16)], version: u64) -> Value {
    // One slice holds one port set: the first endpoint's port names it.
    let port = endpoints.first().map_or(6443, |e| e.1);
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "resourceVersion": version.to_string(),
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|(ip, _)| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

fn chunk(text: &str) -> Vec<u8> {
    format!("{:x}\r\n{text}\r\n", text.len()).into_bytes()
}

/// Answers requests on one connection until it closes or turns into a watch stream.
fn serve(stream: TcpStream, shared: &Mutex<Shared>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        // Headers, up to the blank line (GET requests carry no body).
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        let target = request.split_whitespace().nth(1).unwrap_or("");
        if !target.starts_with("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices") {
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            continue;
        }
        let mut shared = shared.lock().unwrap();
        if target.contains("watch=true") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_ok() {
                shared.watchers.push(stream);
            }
            return;
        }
        let body = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": shared.version.to_string()},
            "items": [shared.slice],
        })
        .to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}
