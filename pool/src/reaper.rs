//! The background task that ages out idle connections and keeps `min_idle` warm.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::Connector;
use crate::pool::Inner;
use crate::state::Effects;

/// Floor for `reap_interval`, so a zero setting cannot spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Runs a reaper pass every `reap_interval` (re-read each time, so reloads apply). Holds only a
/// weak reference between passes; ends when the pool is gone or closed. [`crate::Pool`] also
/// aborts it when its last clone is dropped.
pub(crate) async fn run<C: Connector, O: Send + 'static>(pool: Weak<Inner<C, O>>) {
    loop {
        let interval = match pool.upgrade() {
            Some(inner) => inner.state.lock().settings.reap_interval.max(MIN_INTERVAL),
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = pool.upgrade() else { return };
        let mut fx = Effects::new();
        {
            let mut state = inner.state.lock();
            if state.closed {
                return;
            }
            state.reap(Instant::now(), &mut fx);
        }
        inner.run(fx);
    }
}
