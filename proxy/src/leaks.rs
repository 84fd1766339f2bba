//! Leak detection (docs/design.md §5): a checkout is a suspected leak when its server connection
//! has been held for at least `threshold` while neither the client nor the server has done
//! anything for at least that long (idle in transaction, or an idle pinned/session connection).
//! Its settings are [`crate::settings::LeakSettings`].
//!
//! One watcher task per pool reads the pool's checkout table (the owner of each checkout is the
//! client's [`ClientInfo`]), warns once per leak naming the culprit, keeps the counter and gauge,
//! and with `action = "terminate"` ends the client's session after `terminate_after` (the relay
//! sends the database's own error, rolls back and returns the connection).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use crate::backend::Holder;
use crate::service::Service;
use crate::session::ClientInfo;

/// How often the watcher looks: a quarter of the threshold, between 100 ms and 1 s.
pub fn tick(threshold: Duration) -> Duration {
    (threshold / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// One suspected leak.
#[derive(Debug, Clone)]
pub struct Suspect {
    /// The checkout's id in the pool.
    pub checkout: u64,
    /// How long the server connection has been held.
    pub held: Duration,
    /// How long client and server have been silent.
    pub idle: Duration,
    /// Who holds it.
    pub client: Arc<ClientInfo>,
}

/// The suspected leaks among `checkouts` at `now`.
pub fn suspects(holders: &[Holder], now: Instant, threshold: Duration) -> Vec<Suspect> {
    holders
        .iter()
        .filter(|c| !c.client.hold_expected())
        .filter_map(|c| {
            let held = now.saturating_duration_since(c.checked_out_at);
            let idle = c.client.idle_for(now);
            (held >= threshold && idle >= threshold).then(|| Suspect {
                checkout: c.id,
                held,
                idle,
                client: c.client.clone(),
            })
        })
        .collect()
}

/// Watches one pool until `stop` turns true.
/// Settings are read from the pool's `leaks` channel at every tick, so a reload applies at the
/// next one.
pub async fn watch(service: Arc<dyn Service>, mut stop: watch::Receiver<bool>) {
    let svc = service.core();
    let (mut reported, mut terminated) = (HashSet::new(), HashSet::new());
    loop {
        let settings = *svc.leaks.borrow();
        tokio::select! {
            () = tokio::time::sleep(tick(settings.threshold)) => {}
            _ = stop.changed() => return,
        }
        // Checkout ids are per backend: (backend index, id) names one across the pool.
        let now = Instant::now();
        let found: Vec<((usize, u64), String, Suspect)> = svc
            .backends()
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                suspects(&b.backend.holders(), now, settings.threshold)
                    .into_iter()
                    .map(move |s| ((i, s.checkout), b.addr.to_owned(), s))
            })
            .collect();
        svc.leaked_now.store(found.len() as u64, Ordering::Relaxed);
        svc.metrics.set_leaked(found.len() as u64);
        let live: HashSet<(usize, u64)> = found.iter().map(|(k, _, _)| *k).collect();
        reported.retain(|id| live.contains(id));
        terminated.retain(|id| live.contains(id));
        for (key, backend, s) in &found {
            if reported.insert(*key) {
                svc.leaks_total.fetch_add(1, Ordering::Relaxed);
                svc.metrics.leak_detected();
                let c = &s.client;
                warn!(
                    pool = %svc.name,
                    backend = %backend,
                    client.addr = %c.addr,
                    user = %c.user,
                    database = %c.database,
                    application_name = %c.application_name,
                    held_for = ?s.held,
                    idle_for = ?s.idle,
                    last_statement = %c.last_statement(),
                    "suspected connection leak: a client holds a server connection and does nothing"
                );
            }
            match settings.terminate_after {
                Some(after) if s.idle >= after && terminated.insert(*key) => {
                    s.client.kill(format!(
                        "sidepool: terminating connection due to idle-in-transaction timeout: \
                         held a server connection of pool \"{}\" for {:?} while idle for {:?} \
                         (leaks.terminate_after = {after:?})",
                        svc.name, s.held, s.idle
                    ));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout(id: u64, client: Arc<ClientInfo>, at: Instant) -> Holder {
        Holder {
            id,
            client,
            checked_out_at: at,
            conn_created_at: at,
        }
    }

    fn client() -> Arc<ClientInfo> {
        Arc::new(ClientInfo::new(
            "p".into(),
            "127.0.0.1:1".parse().unwrap(),
            "app".into(),
            "app".into(),
            "leaky-app".into(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn held_and_silent_past_the_threshold_is_a_suspect() {
        let t = Duration::from_secs(30);
        let c = client();
        c.touch(false);
        let list = vec![checkout(1, c.clone(), Instant::now())];
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(suspects(&list, Instant::now(), t).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        let found = suspects(&list, Instant::now(), t);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].client.application_name, "leaky-app");
        assert_eq!(found[0].held, t);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_server_or_a_recent_message_is_not_a_leak() {
        let t = Duration::from_secs(30);
        let (busy, chatty) = (client(), client());
        busy.touch(true); // a long query running on the server
        let list = vec![
            checkout(1, busy.clone(), Instant::now()),
            checkout(2, chatty.clone(), Instant::now()),
        ];
        tokio::time::advance(Duration::from_secs(40)).await;
        chatty.touch(false); // just sent something
        assert!(suspects(&list, Instant::now(), t).is_empty());
        busy.touch(false);
        tokio::time::advance(t).await;
        assert_eq!(suspects(&list, Instant::now(), t).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_marked_expected_is_not_a_leak() {
        let t = Duration::from_secs(30);
        let c = client();
        c.touch(false);
        c.set_hold_expected(true); // a Dameng session outside a transaction
        let list = vec![checkout(1, c.clone(), Instant::now())];
        tokio::time::advance(t * 2).await;
        assert!(suspects(&list, Instant::now(), t).is_empty());
        c.set_hold_expected(false); // it opened a transaction and went quiet
        assert_eq!(suspects(&list, Instant::now(), t).len(), 1);
    }
}
