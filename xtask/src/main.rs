//! Project automation: `cargo xtask setup | vm | test | demo | bench`.
mod bench;
mod cpio;
mod demo;
mod host;
mod images;
mod kernels;
mod setup;
mod shell;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "vzhost project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything the build and the tests need (idempotent).
    Setup,
    /// Run commands in a VM with BPF LSM active.
    Vm {
        #[command(subcommand)]
        command: vm::VmCommand,
    },
    /// Run every check and test: fmt, clippy, unit, native integration, VM.
    Test(test::TestArgs),
    /// Show vzhost at work.
    Demo,
    /// Benchmarks against LXC and unshare; writes bench/REPORT.md.
    Bench(bench::BenchArgs),
    /// Build the cached Debian test image if it is missing or stale
    /// (`cargo xtask test` does this itself).
    Images,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Vm { command } => vm::run(command),
        Command::Test(args) => test::run(&args),
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(&args),
        Command::Images => images::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
