//! Signals for the agent: SIGHUP rescans the rules; the first SIGINT/SIGTERM asks for a
//! clean stop; a second one exits at once, even while the event loop is blocked writing
//! to a stuck output.

use anyhow::{Context, Result};
use tokio::sync::mpsc::UnboundedReceiver;

/// What a signal asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGHUP: rescan the rules.
    Reload,
    /// The first SIGINT/SIGTERM: drain, flush, exit.
    Stop,
}

/// Takes SIGINT, SIGTERM and SIGHUP away from every thread and hands them to one that
/// `sigwait`s. Call it before any other thread exists, so all inherit the blocked mask.
pub(crate) fn watch() -> Result<UnboundedReceiver<Signal>> {
    // SAFETY: signal-set manipulation on local values; pthread_sigmask on this thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            anyhow::bail!("cannot block signals for the signal thread");
        }
        set
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("rulehost-signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                let mut signal = 0;
                // SAFETY: waits for one of the blocked signals in `set`.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                let request = match signal {
                    libc::SIGHUP => Signal::Reload,
                    _ if stopping => {
                        tracing::warn!(signal, "second signal: exiting now");
                        // SAFETY: immediate exit, as a second Ctrl-C is meant to be.
                        unsafe { libc::_exit(128 + signal) }
                    }
                    _ => {
                        stopping = true;
                        Signal::Stop
                    }
                };
                if tx.send(request).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(rx)
}
