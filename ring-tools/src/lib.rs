//! `ring-tools`: the operator's tool for Quorra, what `riak-admin` and
//! `nodetool` are to their stores.
//!
//! - Offline, on a cluster described on the command line (or a live
//!   cluster's layout): [`ownership`] (`plan`: balance, zone spread, the N+1
//!   check), [`simulate`] (what joins and removals move), [`locate`],
//!   [`draw`]. They compute on core's `Layout` and `Ring`, the very code a
//!   node routes by ([`describe`] turns a description into a layout).
//! - Online, through the client library's admin calls: [`cluster`]
//!   (`status`, staged layout changes with their plan, commit and progress),
//!   [`repair`], [`explain`], and the failover [`drill`].
//! - [`cli`] is the command line; [`output`] writes text or `--json`.

pub mod cli;
pub mod cluster;
pub mod describe;
pub mod draw;
pub mod drill;
pub mod explain;
pub mod locate;
pub mod output;
pub mod ownership;
pub mod repair;
pub mod simulate;

/// Runs `ring-tools` with the process's arguments; the exit code says
/// whether it worked.
pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ring-tools: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring-tools: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
