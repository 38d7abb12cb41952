//! Hinted handoff: delivering the writes this node took for an unreachable
//! primary once that primary is reachable again.
//!
//! Each round goes owner by owner; a reachable owner gets its hints at no
//! more than `handoff.rate_per_second`, so a returning node is not flattened.
//! A hint is deleted only after the owner acknowledged it durably, and only if
//! it did not change meanwhile. The backlog is exported as
//! `quorra_hints_pending` and shown by `GET /v1/cluster/status`; it never
//! makes the node refuse writes.

use std::time::Duration;

use quorra_core::proto::{PeerRequest, PeerResponse};

use crate::kv::Kv;

/// Runs delivery rounds forever.
pub async fn run(kv: Kv) {
    let config = kv.config().handoff;
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Hints one round may deliver, from the rate.
    let budget = ((config.rate_per_second as u64 * config.interval_ms) / 1000).max(1) as usize;
    loop {
        tick.tick().await;
        let delivered = round(&kv, budget).await;
        metrics::gauge!("quorra_hints_pending").set(kv.store().hints_held() as f64);
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
async fn round(kv: &Kv, mut budget: usize) -> usize {
    if kv.store().hints_held() == 0 {
        return 0;
    }
    let cluster = kv.cluster().clone();
    let owners: Vec<String> = cluster
        .members()
        .into_iter()
        .map(|m| m.id)
        .filter(|id| id != cluster.me() && cluster.is_reachable(id))
        .collect();
    let mut delivered = 0;
    for owner in owners {
        if budget == 0 {
            break;
        }
        let store = kv.store().clone();
        let o = owner.clone();
        let limit = budget;
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
            budget = budget.saturating_sub(1);
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
                    let store = kv.store().clone();
                    if let Ok(Ok(true)) =
                        tokio::task::spawn_blocking(move || store.delete_hint(&hint)).await
                    {
                        delivered += 1;
                        metrics::counter!("quorra_hints_delivered_total").increment(1);
                    }
                }
                other => {
                    tracing::debug!(owner, "hint delivery failed: {other:?}");
                    break; // try this owner again next round
                }
            }
        }
    }
    delivered
}
