//! Fault injection, for the fault-tolerance tests: a node started with
//! `fault_injection = true` takes `PUT /v1/debug/faults` to drop or delay
//! its outgoing peer traffic (a partition, seen from one side), make its disk
//! slow or failing, or skew its wall clock. Off by default: a node without
//! the setting has no such endpoint and none of these paths do anything.
//!
//! Dropped peer requests wait out their timeout before failing, as they
//! would on a real cut link; the nemesis cuts both sides for a symmetric
//! partition and one side for a one-way one.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FaultState {
    /// Peer addresses whose requests from this node are dropped.
    #[schema(value_type = Vec<String>)]
    pub drop_to: BTreeSet<SocketAddr>,
    /// Delay added to every outgoing peer request (ms).
    pub delay_ms: u64,
    /// Delay added to every storage operation (ms).
    pub disk_delay_ms: u64,
    /// Whether every storage operation fails.
    pub disk_failing: bool,
    /// Shift of the wall clock that stamps writes (ms; lww buckets).
    pub clock_skew_ms: i64,
    /// A planted bug, for proving the durability tests can fail: writes
    /// that should be fsynced (`dw`) are not, and syncs do nothing.
    pub skip_sync: bool,
}

/// What happens to one outgoing peer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// Send it (after `delay`).
    Send {
        /// Added latency.
        delay: Duration,
    },
    /// Drop it: the caller times out.
    Drop,
}

/// The node's fault switches (inert unless enabled).
#[derive(Debug, Default)]
pub struct Faults {
    enabled: bool,
    state: RwLock<FaultState>,
}

impl Faults {
    /// Switches that can be set only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: RwLock::new(FaultState::default()),
        }
    }

    /// Whether fault injection is on for this node.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The faults in force.
    pub fn get(&self) -> FaultState {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the faults in force; `false` when injection is off.
    pub fn set(&self, state: FaultState) -> bool {
        if !self.enabled {
            return false;
        }
        tracing::warn!(?state, "fault injection");
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        true
    }

    /// The fate of a request to `addr`.
    pub fn outgoing(&self, addr: SocketAddr) -> Outgoing {
        if !self.enabled {
            return Outgoing::Send {
                delay: Duration::ZERO,
            };
        }
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if s.drop_to.contains(&addr) {
            Outgoing::Drop
        } else {
            Outgoing::Send {
                delay: Duration::from_millis(s.delay_ms),
            }
        }
    }

    /// The disk's state: added latency, and whether it fails.
    pub fn disk(&self) -> (Duration, bool) {
        if !self.enabled {
            return (Duration::ZERO, false);
        }
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        (Duration::from_millis(s.disk_delay_ms), s.disk_failing)
    }

    /// Whether fsyncs are skipped (the planted bug above).
    pub fn skip_sync(&self) -> bool {
        self.enabled
            && self
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .skip_sync
    }

    /// Wall-clock ms as this node believes it is.
    pub fn now_ms(&self) -> u64 {
        let now = crate::kv::now_ms();
        if !self.enabled {
            return now;
        }
        let skew = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clock_skew_ms;
        now.saturating_add_signed(skew)
    }
}
