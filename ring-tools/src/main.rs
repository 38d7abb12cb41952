//! `ring-tools`: see the library, [`quorra_ring_tools`].

fn main() -> std::process::ExitCode {
    quorra_ring_tools::main()
}
