//! What the agent says about itself: `/healthz`, `/readyz` and `/metrics` on the I/O
//! thread (`listen`), the Prometheus metrics every stage counts into (`metrics`), and the
//! `--ready-file` (`ready`).

pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod ready;
