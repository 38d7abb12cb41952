//! Reading a node's `/metrics` (Prometheus text) in tests.

/// The sum of every series of `name` (a histogram's observations: pass
/// `NAME_count`); series whose labels contain every `label=value` of
/// `labels` only.
pub fn sum_where(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The sum of every series of `name`.
pub fn sum(text: &str, name: &str) -> f64 {
    sum_where(text, name, &[])
}

/// Whether `/metrics` lists `name` at all (its `HELP` or `TYPE` line, or a
/// series).
pub fn lists(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("# TYPE ")
            .or_else(|| l.strip_prefix("# HELP "))
            .unwrap_or(l)
            .split([' ', '{'])
            .next()
            == Some(name)
    })
}
