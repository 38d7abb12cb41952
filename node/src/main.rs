//! The `quorra` binary: see [`quorra_node::cli`].

fn main() -> std::process::ExitCode {
    quorra_node::cli::main()
}
