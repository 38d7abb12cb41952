//! The drill's steady workload: writers and readers through the client
//! library (token-aware, retrying on another replica as an application
//! would), paced to a fixed rate, bounded in time and count. Every
//! acknowledged write is remembered, to be read back after recovery.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use quorra_client::{Client, Options, QuorumOverrides};
use tokio::sync::watch;

/// One request's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it started, from the drill's start (ms).
    pub at_ms: f64,
    /// How long it took (ms).
    pub latency_ms: f64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Whether it was a write.
    pub write: bool,
}

/// What the workers recorded.
#[derive(Debug, Default)]
pub struct Record {
    /// Every request, in completion order.
    pub samples: Vec<Sample>,
    /// Keys whose write was acknowledged, with the value written.
    pub acked: Vec<(String, Vec<u8>)>,
    /// Writes whose outcome is unknown (an error: they may have landed).
    pub unknown: usize,
}

/// The workload's settings.
#[derive(Debug, Clone)]
pub struct Load {
    /// The bucket written.
    pub bucket: String,
    /// A prefix that makes this run's keys its own.
    pub run: String,
    /// Requests per second, all workers together.
    pub rate: u32,
    /// Concurrent workers.
    pub workers: u32,
    /// Quorums of every request.
    pub quorum: QuorumOverrides,
    /// The most requests in all (a bound beside the time).
    pub max_requests: u64,
}

/// Starts the workers; they run until `stop` says so or the bound is
/// reached, and return what they recorded.
pub fn start(
    client: Client,
    load: Load,
    epoch: Instant,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Record> {
    let record = Arc::new(Mutex::new(Record::default()));
    let workers = load.workers.max(1);
    let per_worker = Duration::from_secs_f64(f64::from(workers) / f64::from(load.rate.max(1)));
    let budget = load.max_requests / u64::from(workers);
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let client = client.clone();
            let load = load.clone();
            let record = record.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let opts = Options {
                    quorum: load.quorum,
                    timeout: None,
                };
                let mut tick = tokio::time::interval(per_worker);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut written: Vec<(String, Vec<u8>)> = Vec::new();
                for i in 0..budget {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                    // Two writes, then a read of an acknowledged key.
                    let write = i % 3 != 2 || written.is_empty();
                    let started = Instant::now();
                    let at_ms = started.duration_since(epoch).as_secs_f64() * 1e3;
                    let ok = if write {
                        let key = format!("{}-{w}-{i}", load.run);
                        let value = format!("{key}@{at_ms:.0}").into_bytes();
                        let r = client
                            .put_with(&load.bucket, &key, value.clone(), "text/plain", None, &opts)
                            .await;
                        let mut rec = record.lock().unwrap_or_else(PoisonError::into_inner);
                        if r.is_ok() {
                            rec.acked.push((key.clone(), value.clone()));
                            written.push((key, value));
                        } else {
                            rec.unknown += 1;
                        }
                        r.is_ok()
                    } else {
                        let (key, _) = &written[(i as usize * 7919) % written.len()];
                        client
                            .get_with(&load.bucket, key, &opts)
                            .await
                            .is_ok_and(|f| !f.values.is_empty())
                    };
                    let sample = Sample {
                        at_ms,
                        latency_ms: started.elapsed().as_secs_f64() * 1e3,
                        ok,
                        write,
                    };
                    record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .samples
                        .push(sample);
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for h in handles {
            let _ = h.await;
        }
        std::mem::take(&mut *record.lock().unwrap_or_else(PoisonError::into_inner))
    })
}
