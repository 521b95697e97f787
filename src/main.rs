use std::process::ExitCode;

use clap::Parser;
use costream::cli::{Cli, CliCommand, RoomCommand, TokenCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    costream::telemetry::init(cli.log_format);
    match cli.command {
        // The mixer runs GStreamer's own threads; it needs no async runtime.
        CliCommand::Mixer => costream_mixer::process::run_stdio(),
        CliCommand::Serve(args) => run_async(costream::serve::run(args)),
        CliCommand::Worker(args) => run_async(costream::fleet::worker::run_cli(args)),
        CliCommand::Publish(args) => run_async(costream::publish::run(args)),
        CliCommand::Token(token) => match token.command {
            TokenCommand::Create(args) => report(costream::access::cli::token_create(args)),
        },
        CliCommand::Room(room) => match room.command {
            RoomCommand::Create(args) => run_async(costream::access::cli::room_create(args)),
        },
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
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
