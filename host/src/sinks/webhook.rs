//! Findings POSTed to HTTP receivers (a SIEM's collector, falcosidekick). Each sink has
//! its own bounded queue and task on the I/O thread: the event loop only enqueues (never
//! waits), a receiver that is down is retried with backoff until it is back, and what a
//! full queue refuses is counted and logged, so a slow or dead sink costs nothing but
//! its own drops. reqwest is the maintained HTTP client for tokio; TLS through rustls
//! (`sinks::tls`).

use super::falco;

use super::Finding;
use crate::server::metrics::Metrics;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Findings a sink holds while its receiver is slow or down, unless configured.
pub(crate) const DEFAULT_QUEUE: usize = 10_000;
/// Longest one POST may take, unless configured.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait between retries of a failed POST.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long shutdown waits for the queues to empty before counting the rest as dropped.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(5);

/// The JSON a sink posts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// rulehost's own finding, as written on stdout.
    #[default]
    Rulehost,
    /// Falco's `http_output` event, as falcosidekick accepts it.
    Falco,
}

/// One webhook sink, from `--webhook URL` or the config file's `webhooks` list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://host:port/path` or `https://…`.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Findings held while the receiver is slow or down (default 10000).
    #[serde(default)]
    pub queue: Option<usize>,
    /// Longest one POST may take, in milliseconds (default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The sink's name in logs and metrics (default: the URL without its query).
    #[serde(default)]
    pub name: Option<String>,
    /// `https://` only: trust these CAs (PEM) instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `https://` only: the client certificate chain (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// `https://` only: the client certificate's private key (PEM), with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl WebhookSpec {
    /// A sink for `url` with every default.
    pub fn new(url: String, format: WebhookFormat) -> WebhookSpec {
        WebhookSpec {
            url,
            format,
            queue: None,
            timeout_ms: None,
            name: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    /// The URL, checked: http or https, TLS files only with https.
    fn parsed(&self) -> Result<reqwest::Url> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| anyhow::anyhow!("webhook {:?}: {e}", self.url))?;
        match url.scheme() {
            "https" => {}
            "http" if self.tls_files().is_none() => {}
            "http" => bail!(
                "webhook {:?}: ca_file, cert_file and key_file need an https:// URL",
                self.url
            ),
            other => bail!(
                "webhook {:?}: scheme {other:?} is not supported (http:// or https://)",
                self.url
            ),
        }
        if self.queue == Some(0) {
            bail!("webhook {:?}: queue must be at least 1", self.url);
        }
        Ok(url)
    }

    /// The first TLS file set, if any (for the http:// check).
    fn tls_files(&self) -> Option<&PathBuf> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .find_map(Option::as_ref)
    }

    /// What logs and metrics call the sink: its name, or the URL without query or
    /// credentials (they may carry tokens).
    fn label(&self, url: &reqwest::Url) -> String {
        self.name.clone().unwrap_or_else(|| {
            let mut shown = url.clone();
            shown.set_query(None);
            let _ = shown.set_password(None);
            let _ = shown.set_username("");
            format!("webhook:{shown}")
        })
    }
}

/// A running sink, as the event loop sees it.
struct Sink {
    label: Arc<str>,
    format: WebhookFormat,
    queue: mpsc::Sender<Bytes>,
    /// Findings taken but not yet delivered or given up.
    pending: Arc<AtomicU64>,
    done: std::sync::mpsc::Receiver<()>,
    /// Findings dropped since the queue last had room (logged once per run of drops).
    dropping: u64,
}

/// Every webhook sink.
#[derive(Default)]
pub(crate) struct Webhooks {
    sinks: Vec<Sink>,
    metrics: Option<Arc<Metrics>>,
}

impl Webhooks {
    /// Starts one task per sink on `io`; a bad URL or option is a one-line error.
    pub(crate) fn start(
        specs: &[WebhookSpec],
        io: &tokio::runtime::Handle,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Webhooks> {
        crate::install_tls_provider();
        let mut sinks = Vec::new();
        for spec in specs {
            let url = spec.parsed()?;
            let label: Arc<str> = spec.label(&url).into();
            if let Some(metrics) = &metrics {
                metrics.sink_configured(&label);
            }
            let (queue, receiver) = mpsc::channel(spec.queue.unwrap_or(DEFAULT_QUEUE));
            let (done_tx, done) = std::sync::mpsc::channel();
            let pending = Arc::new(AtomicU64::new(0));
            let builder = reqwest::Client::builder()
                .timeout(
                    spec.timeout_ms
                        .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
                )
                .user_agent(concat!("rulehost/", env!("CARGO_PKG_VERSION")));
            let client = super::tls::configure(builder, spec)
                .and_then(|builder| Ok(builder.build()?))
                .with_context(|| format!("webhook {label}"))?;
            let post = Post {
                client,
                url,
                label: label.clone(),
                pending: pending.clone(),
                metrics: metrics.clone(),
            };
            io.spawn(async move {
                post.run(receiver).await;
                let _ = done_tx.send(());
            });
            tracing::info!(sink = %label, format = ?spec.format, tls = super::tls::describe(spec), "webhook sink started");
            sinks.push(Sink {
                label,
                format: spec.format,
                queue,
                pending,
                done,
                dropping: 0,
            });
        }
        Ok(Webhooks { sinks, metrics })
    }

    /// Queues `finding` on every sink; a full queue drops it there (counted, and logged
    /// once per run of drops). Never waits.
    pub(crate) fn send(&mut self, finding: &Finding) {
        let mut bodies: [Option<Bytes>; 2] = [None, None];
        for sink in &mut self.sinks {
            let body = bodies[sink.format as usize]
                .get_or_insert_with(|| body(finding, sink.format))
                .clone();
            sink.pending.fetch_add(1, Ordering::Relaxed);
            if sink.queue.try_send(body).is_ok() {
                if sink.dropping > 0 {
                    tracing::info!(sink = %sink.label, dropped = sink.dropping, "webhook queue has room again");
                    sink.dropping = 0;
                }
                continue;
            }
            sink.pending.fetch_sub(1, Ordering::Relaxed);
            if sink.dropping == 0 {
                tracing::warn!(sink = %sink.label, "webhook queue full (receiver slow or down); dropping findings");
            }
            sink.dropping += 1;
            if let Some(metrics) = &self.metrics {
                metrics.output_dropped(&sink.label, 1);
            }
        }
    }

    /// Closes the queues and waits, at most a few seconds in all, for the sinks to
    /// deliver what they hold; what is left is counted as dropped.
    pub(crate) fn close(self) {
        let deadline = Instant::now() + DRAIN_AT_EXIT;
        for sink in self.sinks {
            drop(sink.queue);
            let left = deadline.saturating_duration_since(Instant::now());
            if sink.done.recv_timeout(left).is_err() {
                let undelivered = sink.pending.load(Ordering::Relaxed);
                if undelivered > 0 {
                    if let Some(metrics) = &self.metrics {
                        metrics.output_dropped(&sink.label, undelivered);
                    }
                    tracing::warn!(sink = %sink.label, undelivered, "webhook receiver did not take every finding before exit");
                }
            }
        }
    }
}

/// A finding's JSON body in `format`.
fn body(finding: &Finding, format: WebhookFormat) -> Bytes {
    let json = match format {
        WebhookFormat::Rulehost => serde_json::to_vec(finding),
        WebhookFormat::Falco => serde_json::to_vec(&falco::event(finding)),
    };
    // Findings are plain data: serialising one cannot fail.
    Bytes::from(json.unwrap_or_default())
}

/// One sink's delivery task.
struct Post {
    client: reqwest::Client,
    url: reqwest::Url,
    label: Arc<str>,
    pending: Arc<AtomicU64>,
    metrics: Option<Arc<Metrics>>,
}

impl Post {
    /// Posts every queued finding in order until the queue closes.
    async fn run(self, mut queue: mpsc::Receiver<Bytes>) {
        while let Some(body) = queue.recv().await {
            self.deliver(body).await;
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Posts one finding, retrying with backoff until the receiver takes it. A 4xx
    /// answer (other than 408 and 429) will not change on retry: logged and dropped.
    async fn deliver(&self, body: Bytes) {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u64;
        loop {
            let response = self
                .client
                .post(self.url.clone())
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let failure = match response {
                Ok(r) if r.status().is_success() => {
                    if failures > 0 {
                        tracing::info!(sink = %self.label, failures, "webhook receiver is back");
                    }
                    if let Some(metrics) = &self.metrics {
                        metrics.output_sent(&self.label);
                    }
                    return;
                }
                Ok(r)
                    if r.status().is_client_error()
                        && ![408, 429].contains(&r.status().as_u16()) =>
                {
                    tracing::warn!(sink = %self.label, status = r.status().as_u16(), "webhook receiver refused a finding; dropped");
                    if let Some(metrics) = &self.metrics {
                        metrics.output_dropped(&self.label, 1);
                    }
                    return;
                }
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                // Without the URL: its query may carry a token.
                Err(error) => crate::logging::error_line(&error.without_url()),
            };
            if let Some(metrics) = &self.metrics {
                metrics.output_failed(&self.label);
            }
            if failures == 0 {
                tracing::warn!(sink = %self.label, error = %failure, "webhook receiver unavailable; retrying with backoff");
            }
            failures += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_are_configured_from_yaml_and_bad_ones_named() {
        let config = crate::config::Config::parse(
            "webhooks:\n  - url: http://sidekick:2801/\n    format: falco\n    queue: 5\n",
        )
        .unwrap();
        let spec = &config.webhooks[0];
        assert_eq!((spec.format, spec.queue), (WebhookFormat::Falco, Some(5)));
        let url = spec.parsed().unwrap();
        assert_eq!(spec.label(&url), "webhook:http://sidekick:2801/");

        let secret = WebhookSpec::new("http://u:p@h/x?token=t".into(), WebhookFormat::Rulehost);
        assert_eq!(
            secret.label(&secret.parsed().unwrap()),
            "webhook:http://h/x"
        );
        for (url, expected) in [
            ("ftp://h/", "scheme \"ftp\" is not supported"),
            ("not a url", "relative URL without a base"),
        ] {
            let error = WebhookSpec::new(url.into(), WebhookFormat::Rulehost)
                .parsed()
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected) && error.contains(url), "{error}");
        }
        let mut plain = WebhookSpec::new("http://h/".into(), WebhookFormat::Rulehost);
        plain.ca_file = Some("/etc/ca.pem".into());
        let error = plain.parsed().unwrap_err().to_string();
        assert!(error.contains("need an https:// URL"), "{error}");
        let error = crate::config::Config::parse("webhooks:\n  - url: http://h/\n    queu: 1\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `queu`"), "{error}");
    }
}
