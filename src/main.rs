use std::process::ExitCode;

use clap::Parser;
use costream::cli::{Cli, CliCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    costream::telemetry::init();
    match cli.command {
        // The mixer runs GStreamer's own threads; it needs no async runtime.
        CliCommand::Mixer => costream_mixer::process::run_stdio(),
        CliCommand::Serve(args) => run_async(costream::serve::run(args)),
        CliCommand::Publish(args) => run_async(costream::publish::run(args)),
    }
}

fn run_async(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
