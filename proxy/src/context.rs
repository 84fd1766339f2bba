//! What a protocol builds its pool's service from. Below the protocols and the server, which
//! both use it; why building a service fails is [`crate::error::StartError`].

use std::sync::{Arc, Weak};

use crate::console::Hub;
use crate::telemetry::Telemetry;

/// What building a pool's service needs besides its config.
#[derive(Debug, Clone)]
pub struct Context {
    /// The metrics registry.
    pub telemetry: Arc<Telemetry>,
    /// The console hub (weak: the hub lists the services).
    pub hub: Weak<Hub>,
}
