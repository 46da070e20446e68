//! The running consumers: a handle to join them, and their readiness.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Handle on the running consumers.
pub struct RunningRouter {
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) attached: Vec<(String, Arc<AtomicBool>)>,
}

impl RunningRouter {
    /// Consumers not currently attached to JetStream (readiness).
    pub fn detached(&self) -> Vec<String> {
        self.attached
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A readiness check: every consumer is attached.
    pub fn readiness_check(&self) -> ConsumersAttached {
        ConsumersAttached {
            attached: self.attached.clone(),
        }
    }

    /// Wait for every consumer to finish (after shutdown was cancelled).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Readiness: the bus consumers are attached.
pub struct ConsumersAttached {
    attached: Vec<(String, Arc<AtomicBool>)>,
}

impl platform::health::ReadinessCheck for ConsumersAttached {
    fn name(&self) -> &str {
        "bus_consumers"
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let detached: Vec<&str> = self
                .attached
                .iter()
                .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
                .map(|(name, _)| name.as_str())
                .collect();
            if detached.is_empty() {
                Ok(())
            } else {
                Err(format!("not attached: {}", detached.join(", ")))
            }
        })
    }
}
