//! `podswitch`: the command users type. A thin layer over the crates: the
//! agent (`podswitch agent`, the `agent` crate), the views of a running
//! agent (`status`, `stats`, `services`, ... through the `api` crate), the
//! lab (`podswitch lab`, the `lab` crate) and the self-test (`fixtures`).
//! Parsing arguments and printing answers is all it does.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use api::{self, views::ConntrackQuery, ApiError};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

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
    Agent(Box<agent::config::AgentArgs>),
    /// Print a running agent's counters: per port RX/TX and ring
    /// conditions, and every drop reason.
    Stats(ClientArgs),
    /// Print a running agent's state: node, source, whether it is synced
    /// and ready, table generation, objects per kind, recent warnings.
    Status(ClientArgs),
    /// Print every service frontend of the agent's tables with its
    /// backends (`*` marks a backend on this node).
    Services(ClientArgs),
    /// Print every local pod's NetworkPolicy isolation: the selecting
    /// policies and which peers may reach it (and it may reach) on which
    /// ports.
    Policies(ClientArgs),
    /// Print where destinations live: local pods, this node, remote pod
    /// CIDRs and their VTEPs, on-link neighbours.
    Routes(ClientArgs),
    /// Print the pod interfaces the CNI plugin attached: port id, host
    /// interface, pod, IP, MAC, container.
    Ports(ClientArgs),
    /// A multi-node cluster network on this machine, in network namespaces:
    /// `lab up`, `status`, `probe`, `matrix`, `exec`, `down`.
    Lab {
        #[command(subcommand)]
        verb: lab::cli::LabCommand,
    },
    /// Print tracked connections (both tuples, NAT, state, expiry).
    Conntrack {
        #[command(flatten)]
        client: ClientArgs,
        /// Only connections from this client address (before or after
        /// source NAT).
        #[arg(long)]
        src: Option<Ipv4Addr>,
        /// Only connections to this address: the service IP, or the
        /// backend it was translated to.
        #[arg(long)]
        dst: Option<Ipv4Addr>,
        /// Only this protocol: tcp, udp, icmp, sctp or a number.
        #[arg(long, value_parser = api::views::parse_proto)]
        proto: Option<u8>,
        /// Only connections to this destination port (before or after
        /// NAT).
        #[arg(long)]
        port: Option<u16>,
        /// At most this many connections.
        #[arg(long, default_value_t = api::views::DEFAULT_CONNTRACK_LIMIT)]
        limit: usize,
    },
}

/// How the inspection verbs reach the agent and print.
#[derive(Args)]
struct ClientArgs {
    /// The agent's local API socket.
    #[arg(long, default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned columns, one row per item.
    Table,
    /// The API's JSON, indented.
    Json,
}

/// Prints what was fetched from the agent as `output` asks, or one line
/// naming the socket and what went wrong.
fn show<T: Serialize>(
    verb: &str,
    output: Output,
    fetched: Result<T, ApiError>,
    render: impl Fn(&T) -> String,
) -> ExitCode {
    match fetched {
        Ok(value) if output == Output::Json => match serde_json::to_string_pretty(&value) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podswitch {verb}: cannot encode the answer: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(value) => {
            print!("{}", render(&value));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podswitch {verb}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent(args) => {
            if let Err(e) = agent::log::init(args.log_format, args.log_level.as_deref()) {
                eprintln!("podswitch agent: {e}");
                return ExitCode::from(2);
            }
            // From here on, through the log (in its format).
            let config = match args.resolve() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            agent::run::install_signal_handlers();
            let stop = std::sync::atomic::AtomicBool::new(false);
            match agent::run::run(&config, &stop) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Stats(c) => show("stats", c.output, api::stats(&c.socket), |s| {
            s.render(agent::server::drop_help)
        }),
        Command::Status(c) => show("status", c.output, api::status(&c.socket), |s| {
            s.render(api::unix_ms())
        }),
        Command::Services(c) => show("services", c.output, api::services(&c.socket), |v| {
            v.render()
        }),
        Command::Policies(c) => show("policies", c.output, api::policies(&c.socket), |v| {
            v.render()
        }),
        Command::Routes(c) => show("routes", c.output, api::routes(&c.socket), |v| v.render()),
        Command::Lab { verb } => lab::cli::run(verb),
        Command::Ports(c) => show("ports", c.output, api::ports::attachments(&c.socket), |v| {
            v.render()
        }),
        Command::Conntrack {
            client,
            src,
            dst,
            proto,
            port,
            limit,
        } => {
            let query = ConntrackQuery {
                src,
                dst,
                proto,
                port,
                limit,
            };
            show(
                "conntrack",
                client.output,
                api::conntrack(&client.socket, &query),
                |v| {
                    if let Some(note) = v.truncation_note() {
                        eprintln!("podswitch conntrack: {note}");
                    }
                    v.render()
                },
            )
        }
        Command::Selftest {
            packets,
            cores,
            flows,
        } => {
            let opts = fixtures::selftest::Options {
                packets_per_core: packets,
                cores,
                flows,
            };
            let report = fixtures::selftest::run(&opts);
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
