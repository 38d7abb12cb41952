//! The simulator tests the node, not a copy of it: its sources may take
//! from `quorra-core` only the state machine (`node`), its protocol
//! (`proto`), the pure storage rules its disk model applies (`write`, the
//! anti-entropy tree), the
//! membership the machine is built with, and plain data types. Reaching for
//! the coordinator's building blocks (`quorum`, `round`, `ring`, ...) would
//! be the start of a second node.

use std::path::Path;

/// Modules the simulator may use, with the items it may take (empty: all).
const ALLOWED_MODULES: &[(&str, &[&str])] = &[
    ("node", &[]),
    ("proto", &[]),
    ("write", &[]),
    // The store's anti-entropy tree and the key hash it files keys under:
    // storage rules the disk model applies, as the store does.
    ("hashtree", &["HashTree", "segment_of"]),
    ("hash", &["key_hash", "partition_of"]),
    (
        "membership",
        &[
            "GossipConfig",
            "MemberInfo",
            "Membership",
            "Status",
            "SavedTable",
        ],
    ),
    // The ring's shape and bucket properties the machine is configured
    // with, and the layout and the changes an operator stages on it (data
    // the machine is given).
    (
        "layout",
        &["Shape", "Bootstrap", "Layout", "Change", "Role"],
    ),
    ("bucket", &["BucketTable"]),
];

/// Plain data types from the crate root.
const ALLOWED_ROOT: &[&str] = &[
    "Actor",
    "BucketName",
    "BucketProps",
    "ConflictMode",
    "Content",
    "ErrorCode",
    "Key",
    "Limits",
    "Object",
    "QuorumOverrides",
    "VersionVector",
];

/// Expands a use tree (`a::{b, c::d}`) into full paths.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], prefix, out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    match tree.split_once("::") {
        Some((head, rest)) => expand(rest, &format!("{prefix}{head}::"), out),
        None => out.push(format!("{prefix}{tree}")),
    }
}

/// Every `quorra_core` path a source file uses.
fn core_paths(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("quorra_core::") {
        let after = &rest[at + "quorra_core::".len()..];
        // The tree runs until a character that cannot be in a path, or
        // the end of its outermost group.
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth <= 1 => {
                    end = i + 1;
                    break;
                }
                '}' => depth -= 1,
                _ if depth > 0 => {}
                c if c.is_alphanumeric() || c == '_' || c == ':' => {}
                _ => {
                    end = i;
                    break;
                }
            }
        }
        let tree: String = after[..end].split_whitespace().collect();
        expand(&tree, "", &mut paths);
        rest = &after[end..];
    }
    paths
}

fn allowed(path: &str) -> bool {
    let parts: Vec<&str> = path.split("::").collect();
    match parts.as_slice() {
        [item] => ALLOWED_ROOT.contains(item) || *item == "self",
        [module, item, ..] => ALLOWED_MODULES
            .iter()
            .any(|(m, items)| m == module && (items.is_empty() || items.contains(item))),
        [] => false,
    }
}

#[test]
fn the_simulator_uses_only_the_machine_its_protocol_and_data_types() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let source = std::fs::read_to_string(&path).expect("source");
        for p in core_paths(&source) {
            checked += 1;
            if !allowed(&p) {
                refused.push(format!("{}: quorra_core::{p}", path.display()));
            }
        }
    }
    assert!(checked > 10, "the scan finds the simulator's imports");
    assert!(
        refused.is_empty(),
        "the simulator reaches past the machine: {refused:#?}"
    );
}

#[test]
fn the_scan_sees_what_it_must_refuse() {
    let source = "use quorra_core::round::{ReadRound, WriteRound};\n\
                  use quorra_core::{quorum::plan, Object};\n\
                  // use quorra_core::ring::Ring;\n\
                  let x = quorra_core::ring::Ring::build(&m, 1, 1);";
    let paths = core_paths(source);
    let refused: Vec<&String> = paths.iter().filter(|p| !allowed(p)).collect();
    assert_eq!(
        refused,
        [
            "round::ReadRound",
            "round::WriteRound",
            "quorum::plan",
            "ring::Ring::build"
        ],
        "{paths:?}"
    );
    assert!(allowed("node::Node") && allowed("Object") && !allowed("membership::Action"));
}
