//! An agent's `--listen` endpoints read with a real HTTP client: health, readiness and
//! Prometheus scrapes.

use crate::brief;
use crate::live::{LiveAgent, wait_until};
use std::net::SocketAddr;

/// The address the agent's ready file says it listens on.
pub fn listen_address(agent: &LiveAgent) -> SocketAddr {
    agent.ready["listen"]
        .as_str()
        .expect("the ready file names the listen address")
        .parse()
        .unwrap()
}

/// GET `path` from the agent: (status, body).
pub fn get(agent: &LiveAgent, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", listen_address(agent));
    rulehost::install_tls_provider();
    let response = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.text().unwrap())
}

/// The value of one sample (`name{labels}`) in a scrape; 0 when it is absent.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Waits until a scrape of the agent satisfies `done`; returns that scrape.
pub fn scrape_until(agent: &LiveAgent, what: &str, done: impl Fn(&str) -> bool) -> String {
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        || {
            *last.borrow_mut() = get(agent, "/metrics").1;
            done(&last.borrow())
        },
        || {
            let last = last.borrow();
            let lines: Vec<&str> = last.lines().filter(|l| !l.starts_with('#')).collect();
            format!("metrics never showed {what}: {}", brief(&lines))
        },
    );
    last.into_inner()
}
