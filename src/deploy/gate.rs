//! A run-wide decision the targets wait for once connected, before anything is touched: the
//! policy gate's downgrade check ([`crate::lifecycle::downgrade_gate`]) runs while the targets
//! connect instead of before them (on a slow link it costs no round trip of its own), and
//! what it probed is each target's "served before", so inspect need not probe again.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::probe::Served;

/// What the gate decided.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The run is refused: no target goes past its connection.
    pub refused: bool,
    /// What each target (by name) served when the gate probed it, by certificate; only for
    /// targets whose every TLS endpoint answered.
    pub served: HashMap<String, Vec<Option<Served>>>,
}

/// The targets' side: waits for the verdict.
#[derive(Debug, Clone)]
pub struct Gate(watch::Receiver<Option<Arc<Verdict>>>);

/// The deciding side: [`Decide::send`] once. Dropped unsent, the gate opens with no probes
/// (a verdict no one sent must not hold targets forever).
#[derive(Debug)]
pub struct Decide(watch::Sender<Option<Arc<Verdict>>>);

/// A gate, closed until its [`Decide`] sends the verdict.
pub fn gate() -> (Decide, Gate) {
    let (tx, rx) = watch::channel(None);
    (Decide(tx), Gate(rx))
}

impl Decide {
    pub fn send(self, verdict: Verdict) {
        let _ = self.0.send(Some(Arc::new(verdict)));
    }
}

impl Gate {
    /// The verdict, once decided.
    pub async fn wait(&self) -> Arc<Verdict> {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().expect("waited for Some"),
            Err(_) => Arc::new(Verdict::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_wait_for_the_verdict_and_a_dropped_decider_opens_the_gate() {
        let (decide, gate) = gate();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait().await.refused }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        decide.send(Verdict {
            refused: true,
            served: HashMap::new(),
        });
        assert!(waiting.await.unwrap());
        assert!(gate.wait().await.refused, "a late waiter sees it too");

        let (decide, gate) = super::gate();
        drop(decide);
        assert!(!gate.wait().await.refused);
    }
}
