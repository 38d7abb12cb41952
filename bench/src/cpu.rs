//! CPU time spent by a store's processes, read from `/proc`.
//!
//! On a shared 2-core machine throughput moves with whatever else runs;
//! the CPU seconds a store burns per operation move far less, so every
//! run reports them: the server's (the processes named by `--server-pid`
//! and all their descendants, so a dev cluster's parent brings its nodes)
//! and the load generator's own. Both are sampled at the start and the end
//! of the measured window: a process that starts inside the window counts
//! from its start, and one that ends inside it is left out (a restarted
//! node's first life is not counted).

use std::collections::{BTreeMap, BTreeSet};

/// `/proc` counts CPU time in clock ticks of `USER_HZ`, which the kernel
/// fixes at 100 per second on x86-64 and arm64, the machines Quorra runs
/// on (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// One process's line of `/proc/PID/stat`, the fields used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Its parent.
    pub ppid: u32,
    /// User plus system time, in ticks.
    pub ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses
/// and may hold spaces or parentheses itself, so fields are counted from
/// the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ..., utime (14), stime (15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        ticks: utime + stime,
    })
}

/// The processes in `table` that are `roots` or descend from them, with
/// their CPU ticks.
pub fn tree_ticks(table: &BTreeMap<u32, Stat>, roots: &[u32]) -> BTreeMap<u32, u64> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (pid, stat) in table {
        children.entry(stat.ppid).or_default().push(*pid);
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(pid) = todo.pop() {
        if table.contains_key(&pid) && seen.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten());
        }
    }
    seen.into_iter()
        .map(|pid| (pid, table[&pid].ticks))
        .collect()
}

/// Every process's stat line (a process that ends while being read is
/// left out).
fn processes() -> BTreeMap<u32, Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, parse_stat(&line)?))
    })
    .collect()
}

/// A snapshot of the CPU ticks of the server's processes and of this one.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    server: BTreeMap<u32, u64>,
    client: u64,
}

/// Takes a sample: `server` names the store's root processes (none: only
/// the client is sampled).
pub fn sample(server: &[u32]) -> Sample {
    let table = processes();
    let client = table
        .get(&std::process::id())
        .map(|s| s.ticks)
        .unwrap_or_default();
    Sample {
        server: if server.is_empty() {
            BTreeMap::new()
        } else {
            tree_ticks(&table, server)
        },
        client,
    }
}

/// CPU seconds used between two samples: the server's (`None` when no
/// server process was named or none was found) and the client's.
pub fn used(before: &Sample, after: &Sample) -> (Option<f64>, f64) {
    let server = (!after.server.is_empty()).then(|| {
        after
            .server
            .iter()
            .map(|(pid, t)| t.saturating_sub(before.server.get(pid).copied().unwrap_or(0)))
            .sum::<u64>() as f64
            / TICKS_PER_SECOND
    });
    let client = after.client.saturating_sub(before.client) as f64 / TICKS_PER_SECOND;
    (server, client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (quorra (n1) x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                ticks: 325
            })
        );
        assert_eq!(parse_stat("4242 (x) S"), None);
    }

    #[test]
    fn a_tree_holds_the_roots_and_their_descendants_only() {
        let table: BTreeMap<u32, Stat> = [
            (1, Stat { ppid: 0, ticks: 1 }),
            (10, Stat { ppid: 1, ticks: 5 }),
            (11, Stat { ppid: 10, ticks: 7 }),
            (12, Stat { ppid: 11, ticks: 9 }),
            (
                20,
                Stat {
                    ppid: 1,
                    ticks: 100,
                },
            ),
        ]
        .into();
        let tree = tree_ticks(&table, &[10, 99]);
        assert_eq!(tree, [(10, 5), (11, 7), (12, 9)].into());
    }

    #[test]
    fn this_process_burns_measurable_cpu() {
        let before = sample(&[std::process::id()]);
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (server, client) = used(&before, &sample(&[std::process::id()]));
        assert!(client > 0.0, "client CPU {client}");
        assert!(server.is_some_and(|s| s > 0.0), "server CPU {server:?}");
    }
}
