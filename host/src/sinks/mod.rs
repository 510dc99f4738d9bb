//! Where findings go: JSON lines (stdout, a file) and webhooks, in rulehost's shape or
//! Falco's. A new sink is one file here.

mod falco;
mod finding;
mod jsonl;
mod tls;
mod webhook;

pub use finding::*;
pub use jsonl::JsonLines;
pub use webhook::*;
