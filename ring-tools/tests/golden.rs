//! The offline commands' text, pinned: `plan`, `plan --fail`, `simulate`
//! and `locate` on fixed descriptions, compared byte for byte with the
//! files under `tests/golden/` (`QUORRA_BLESS=1` rewrites them after an
//! intended change). Their invariants are unit tests beside the code.

use std::path::PathBuf;
use std::process::Command;

fn ring_tools(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ring-tools"))
        .args(args)
        .output()
        .expect("run ring-tools");
    assert!(
        out.status.success(),
        "ring-tools {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn golden(name: &str, args: &[&str]) {
    let text = ring_tools(args);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("QUORRA_BLESS").is_some() {
        std::fs::write(&path, &text).expect("bless");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (QUORRA_BLESS=1 writes it)", path.display()));
    assert_eq!(text, want, "ring-tools {args:?} changed its output");
}

#[test]
fn plan_with_zones_and_weights() {
    golden(
        "plan",
        &[
            "plan",
            "--nodes",
            "a@z1,b@z2,c@z3:2,d@z1,e@z2",
            "--partitions",
            "128",
        ],
    );
}

#[test]
fn plan_losing_a_node_and_a_zone() {
    golden(
        "plan-fail-node",
        &[
            "plan",
            "--nodes",
            "3",
            "--partitions",
            "64",
            "--fail",
            "n3",
            "--load",
            "80",
        ],
    );
    golden(
        "plan-fail-zone",
        &[
            "plan",
            "--nodes",
            "6",
            "--zones",
            "z1,z2,z3",
            "--partitions",
            "64",
            "--fail",
            "z2",
            "--load",
            "50",
        ],
    );
}

#[test]
fn simulate_joins_and_removals() {
    golden(
        "simulate",
        &[
            "simulate",
            "--nodes",
            "5",
            "--partitions",
            "256",
            "--keys",
            "20000",
            "--add",
            "1",
            "--step",
            "-n2",
            "--step",
            "+2",
        ],
    );
}

#[test]
fn locate_a_key() {
    golden(
        "locate",
        &[
            "locate",
            "--nodes",
            "5",
            "--partitions",
            "64",
            "users",
            "alice",
        ],
    );
}

#[test]
fn json_is_json() {
    let v: serde_json::Value = serde_json::from_str(&ring_tools(&[
        "--json",
        "plan",
        "--nodes",
        "4",
        "--partitions",
        "32",
    ]))
    .expect("JSON");
    assert_eq!(v["ownership"]["slots"], 96);
}

#[test]
fn bad_descriptions_fail_with_the_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_ring-tools"))
        .args(["plan", "--nodes", "a,a"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node a is named twice"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ring-tools"))
        .args(["plan", "--nodes", "3", "--partitions", "100"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
}
