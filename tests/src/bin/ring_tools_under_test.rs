//! The `ring-tools` entry point, built inside the test package so
//! integration tests get its path from Cargo and never run a stale binary.

fn main() -> std::process::ExitCode {
    quorra_ring_tools::main()
}
