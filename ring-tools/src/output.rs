//! Writing answers: text for people, `--json` for scripts, and a reader
//! that went away (`| head`) is not an error.

use std::io::Write;

use serde_json::Value;

/// Writes `json` (pretty) when `as_json`, else `text`.
pub fn emit(as_json: bool, json: &Value, text: &str) -> std::io::Result<()> {
    if as_json {
        let mut s = serde_json::to_string_pretty(json).map_err(std::io::Error::other)?;
        s.push('\n');
        write_out(&s)
    } else {
        write_out(text)
    }
}

/// Writes `text` to stdout.
pub fn write_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A JSON list of node ids as `a,b,c`.
pub fn ids(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A progress bar on stderr (hidden when stderr is not a terminal), with
/// `what` before the bar and the counts after it.
pub fn progress_bar(what: &str, unit: &str, total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let template = format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
