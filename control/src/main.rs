//! `podswitch`: the node agent and its CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "podswitch",
    version,
    about = "An AF_XDP Kubernetes node dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push a generated traffic mix through the example cluster's switch on
    /// every core and report packets/s and every verdict and drop reason.
    Selftest {
        /// Frames per core.
        #[arg(long, default_value_t = 2_000_000)]
        packets: u64,
        /// Cores to use (0 = all).
        #[arg(long, default_value_t = 0)]
        cores: usize,
        /// Distinct flows per traffic class.
        #[arg(long, default_value_t = 256)]
        flows: u16,
    },
    /// Run the node agent: AF_XDP ports on the uplink, the host port and
    /// every pod's veth, tables from the configured source.
    Agent(control::agent::config::AgentArgs),
    /// Print a running agent's counters: per port RX/TX and ring
    /// conditions, and every drop reason.
    Stats {
        /// The agent's local API socket.
        #[arg(long, default_value = control::api::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
        /// Output format: table or json.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent(args) => {
            let config = match args.resolve() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("podswitch agent: {e}");
                    return ExitCode::from(2);
                }
            };
            control::agent::run::install_signal_handlers();
            let stop = std::sync::atomic::AtomicBool::new(false);
            match control::agent::run::run(&config, &stop) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("podswitch agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Stats { socket, output } => match control::api::stats(&socket) {
            Ok(stats) if output == "json" => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Ok(stats) => {
                print!("{}", stats.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podswitch stats: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Selftest {
            packets,
            cores,
            flows,
        } => {
            let opts = control::selftest::Options {
                packets_per_core: packets,
                cores,
                flows,
            };
            let report = control::selftest::run(&opts);
            print!("{}", report.render());
            let problems = report.problems();
            if problems.is_empty() {
                println!("selftest: ok");
                ExitCode::SUCCESS
            } else {
                for p in problems {
                    eprintln!("selftest: {p}");
                }
                ExitCode::FAILURE
            }
        }
    }
}
