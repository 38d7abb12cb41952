//! Hinted handoff: delivering the writes this node took for an unreachable
//! primary once that primary is reachable again.
//!
//! Each round goes owner by owner; a reachable owner gets its hints at no
//! more than `handoff.rate_per_second`, so a returning node is not flattened.
//! A hint is deleted only after the owner acknowledged it durably, and only if
//! it did not change meanwhile. A hint the owner refuses is retried with
//! exponential backoff while the owner's other hints keep flowing, so one bad
//! hint never wedges an owner; a hint older than `handoff.max_hint_age_ms`
//! is dropped (`quorra_hints_expired_total`) and left to repair. The backlog
//! is exported as `quorra_hints_pending` / `quorra_hint_bytes` and shown by
//! `GET /v1/cluster/status`; it never makes the node refuse writes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use quorra_core::proto::{PeerRequest, PeerResponse};

use crate::kv::{now_ms, CallError, Kv};
use crate::store::Hint;

/// First wait before a refused hint is tried again; doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between tries of a refused hint.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When a hint that failed may be tried again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    failures: u32,
}

/// Hints that failed, by storage key, with when to try them again.
#[derive(Debug, Default)]
struct Backoff(HashMap<Vec<u8>, Retry>);

impl Backoff {
    fn ready(&self, hint: &Hint, now: Instant) -> bool {
        self.0.get(hint.storage_key()).is_none_or(|r| r.at <= now)
    }

    fn failed(&mut self, hint: &Hint, now: Instant) -> Duration {
        let r = self.0.entry(hint.storage_key().to_vec()).or_insert(Retry {
            at: now,
            failures: 0,
        });
        r.failures = r.failures.saturating_add(1);
        let wait = FIRST_BACKOFF
            .saturating_mul(1u32 << r.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        r.at = now + wait;
        wait
    }

    fn done(&mut self, hint: &Hint) {
        self.0.remove(hint.storage_key());
    }
}

/// Runs delivery rounds forever.
pub async fn run(kv: Kv) {
    let config = kv.config().handoff;
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Hints one round may deliver, from the rate.
    let budget = ((config.rate_per_second as u64 * config.interval_ms) / 1000).max(1) as usize;
    let mut backoff = Backoff::default();
    loop {
        tick.tick().await;
        let delivered = round(&kv, budget, &mut backoff).await;
        metrics::gauge!("quorra_hints_pending").set(kv.store().hints_held() as f64);
        metrics::gauge!("quorra_hint_bytes").set(kv.store().hint_bytes() as f64);
        if delivered > 0 {
            tracing::info!(
                delivered,
                pending = kv.store().hints_held(),
                "hinted handoff"
            );
        }
    }
}

/// One round: returns the number of hints delivered.
async fn round(kv: &Kv, mut budget: usize, backoff: &mut Backoff) -> usize {
    if kv.store().hints_held() == 0 {
        return 0;
    }
    let cluster = kv.cluster().clone();
    let max_age = kv.config().handoff.max_hint_age_ms;
    let mut delivered = 0;
    for owner in cluster.members().into_iter().map(|m| m.id) {
        if budget == 0 || owner == cluster.me() {
            continue;
        }
        let reachable = cluster.is_reachable(&owner);
        // An unreachable owner's hints are read only to expire them.
        if !reachable && max_age == 0 {
            continue;
        }
        let store = kv.store().clone();
        let o = owner.clone();
        // Hints waiting out a backoff are skipped, not counted against the
        // round: read past them.
        let limit = budget.saturating_add(backoff.0.len());
        let hints = match tokio::task::spawn_blocking(move || store.hints_for(&o, limit)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::warn!(owner, "cannot read hints: {e}");
                continue;
            }
            Err(e) => {
                tracing::warn!(owner, "hint reader failed: {e}");
                continue;
            }
        };
        for hint in hints {
            if max_age > 0 && now_ms().saturating_sub(hint.created_ms) > max_age {
                if delete(kv, &hint).await {
                    metrics::counter!("quorra_hints_expired_total").increment(1);
                    tracing::warn!(owner, "hint older than handoff.max_hint_age_ms dropped");
                }
                backoff.done(&hint);
                continue;
            }
            if !reachable || budget == 0 || !backoff.ready(&hint, Instant::now()) {
                continue;
            }
            budget -= 1;
            let mode = kv.config().bucket_props(&hint.bucket).conflict_mode;
            let req = PeerRequest::ReplicaPut {
                bucket: hint.bucket.clone(),
                key: hint.key.clone(),
                object: hint.object.clone(),
                mode,
                durable: true,
                hint_for: None,
            };
            match kv.call_replica(&owner, &req).await {
                Ok(PeerResponse::Stored { .. }) => {
                    backoff.done(&hint);
                    if delete(kv, &hint).await {
                        delivered += 1;
                        metrics::counter!("quorra_hints_delivered_total").increment(1);
                    }
                }
                Err(CallError::Refused { code, message }) => {
                    // The owner is there but will not take this one: try it
                    // again later, and carry on with the others.
                    let wait = backoff.failed(&hint, Instant::now());
                    metrics::counter!("quorra_hints_refused_total").increment(1);
                    tracing::warn!(owner, %code, ?wait, "hint refused: {message}");
                }
                other => {
                    // No answer: the owner is likely gone again. This hint
                    // waits its turn; the others wait for the next round.
                    backoff.failed(&hint, Instant::now());
                    tracing::debug!(owner, "hint delivery failed: {other:?}");
                    break;
                }
            }
        }
    }
    delivered
}

/// Deletes a hint that was delivered or expired; whether it was deleted.
async fn delete(kv: &Kv, hint: &Hint) -> bool {
    let store = kv.store().clone();
    let hint = hint.clone();
    matches!(
        tokio::task::spawn_blocking(move || store.delete_hint(&hint)).await,
        Ok(Ok(true))
    )
}
