//! The `podswitch lab` verbs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use api::ports::PodPortKind;
use clap::{Args, Subcommand};

use super::objects::Mode;
use super::probe::{self, Protocol};
use super::up::{self, UpOptions};
use super::{dir, Binaries, LabError, LabState, State};

/// `--name`, which every verb takes.
#[derive(Args, Clone)]
pub struct LabName {
    /// Which lab (several can coexist): 1-8 lowercase letters and digits.
    #[arg(long, default_value = "lab")]
    pub name: String,
}

/// What `probe` and `matrix` connect to and how they report.
#[derive(Args, Clone)]
pub struct Probing {
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value = "tcp")]
    pub protocol: Protocol,
    /// How long to wait for the connection and the echo.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// table or json.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
}

impl Probing {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Subcommand)]
pub enum LabCommand {
    /// Build a lab: an underlay, N nodes each running an agent, a namespace
    /// per pod attached by podswitch-cni; returns when every pod is
    /// reachable.
    Up {
        #[command(flatten)]
        lab: LabName,
        /// A manifest file or folder (default: the built-in example).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Nodes (1-9).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// The port pods get: veth (AF_XDP) or tap (64 KB super-packets).
        #[arg(long, default_value_t)]
        pod_port: PodPortKind,
        /// Worker threads per agent (adaptive polling).
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Add or change objects live, as `kubectl apply` does (a pod the lab
    /// has keeps its namespace and address; new pods are attached);
    /// returns when every agent has them in force and new pods serve.
    Apply {
        #[command(flatten)]
        lab: LabName,
        /// A manifest file or folder.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Make the given objects the lab's objects, deleting the others.
        #[arg(long)]
        replace: bool,
    },
    /// Remove the objects of a manifest file or folder (a Namespace takes
    /// its objects with it).
    Delete {
        #[command(flatten)]
        lab: LabName,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Remove everything the lab created (also after a crash of `up`).
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// Nodes, pods with their IPs and nodes, services with their ClusterIPs
    /// and NodePorts.
    Status {
        #[command(flatten)]
        lab: LabName,
        /// table or json.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
    },
    /// Connect from a pod to NS/POD, svc/NS/NAME or an IP; exit 0 when the
    /// echo came back, 1 when not.
    Probe {
        #[command(flatten)]
        lab: LabName,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        how: Probing,
    },
    /// Every pod to every pod on one port, in parallel.
    Matrix {
        #[command(flatten)]
        lab: LabName,
        #[command(flatten)]
        how: Probing,
    },
    /// Run a command inside a pod's namespace: `lab exec NS/POD -- CMD...`.
    Exec {
        #[command(flatten)]
        lab: LabName,
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A scripted tour of the built-in example (brought up first if the
    /// lab is not up): policy, load balancing, NodePort, DNS, iperf3.
    Demo {
        #[command(flatten)]
        lab: LabName,
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
        /// The port pods get when the demo brings the lab up.
        #[arg(long, default_value_t)]
        pod_port: PodPortKind,
    },
    /// The built-in server of a lab pod (started by `up`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
        /// The pod's `NS/POD` (the answer to `whoami`).
        #[arg(long, default_value = "")]
        identity: String,
    },
}

/// Runs one lab verb.
pub fn run(command: LabCommand) -> ExitCode {
    match execute(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podswitch lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(lab: &LabName) -> Result<State, LabError> {
    super::check_name(&lab.name)?;
    let d = dir(&lab.name);
    if !State::file(&d).exists() {
        return Err(LabError::NotUp(lab.name.clone(), State::file(&d)));
    }
    State::load(&d)
}

/// The `podswitch` and `podswitch-cni` binaries: this one and its sibling.
fn binaries() -> Result<Binaries, LabError> {
    let me =
        std::env::current_exe().map_err(|e| LabError::Io(format!("finding my own binary: {e}")))?;
    let cni = me.with_file_name("podswitch-cni");
    if !cni.is_file() {
        return Err(LabError::Io(format!(
            "{} not found: build it (`cargo build --release -p cni`)",
            cni.display()
        )));
    }
    Ok(Binaries { podswitch: me, cni })
}

fn json_or<T: serde::Serialize>(
    output: &str,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<(), LabError> {
    match output {
        "json" => {
            let s = serde_json::to_string_pretty(value).map_err(|e| LabError::Io(e.to_string()))?;
            println!("{s}");
            Ok(())
        }
        "table" => {
            print!("{}", text());
            Ok(())
        }
        other => Err(LabError::Io(format!("-o {other}: expected table or json"))),
    }
}

fn execute(command: LabCommand) -> Result<ExitCode, LabError> {
    match command {
        LabCommand::Up {
            lab,
            file,
            nodes,
            pod_port,
            workers,
        } => {
            let started = std::time::Instant::now();
            let o = UpOptions {
                name: lab.name.clone(),
                nodes,
                manifests: file,
                pod_port,
                workers,
                bins: binaries()?,
            };
            match up::up(&o) {
                Ok(state) => {
                    print!("{}", render_status(&state));
                    println!(
                        "lab {} is up in {:.1} s: {} nodes, {} pods",
                        lab.name,
                        started.elapsed().as_secs_f64(),
                        state.lab.nodes.len(),
                        state.lab.pods.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(
                    e @ (LabError::AlreadyUp(..)
                    | LabError::Refused(_)
                    | LabError::BadName(_)
                    | LabError::BadNodes(_)),
                ) => Err(e),
                Err(e) => {
                    // Half built: take it down again, then report.
                    let _ = super::down(&lab.name);
                    Err(e)
                }
            }
        }
        LabCommand::Apply { lab, file, replace } => {
            let mode = if replace { Mode::Replace } else { Mode::Apply };
            change(&lab, &file, mode, "applied")
        }
        LabCommand::Delete { lab, file } => change(&lab, &file, Mode::Delete, "deleted"),
        LabCommand::Down { lab } => {
            for line in super::down(&lab.name)? {
                println!("{line}");
            }
            println!("lab {} is down", lab.name);
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { lab, output } => {
            let state = load(&lab)?;
            // The objects as given are the state file's; status shows
            // what they came to.
            let shown = LabState {
                objects: Vec::new(),
                ..state.lab.clone()
            };
            json_or(&output, &shown, || render_status(&state))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Probe { lab, from, to, how } => {
            let state = load(&lab)?;
            let ip = probe::resolve(&state, &to)?;
            let port = how.port;
            let ok = probe::probe(&state, &from, ip, port, how.protocol, how.timeout())?;
            let value = serde_json::json!({"from": from, "to": to, "ip": ip, "port": port, "connected": ok});
            json_or(&how.output, &value, || {
                format!(
                    "{from} -> {to} ({ip}:{port}): {}\n",
                    if ok { "connected" } else { "no connection" }
                )
            })?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LabCommand::Matrix { lab, how } => {
            let state = load(&lab)?;
            let m = probe::matrix(&state, how.port, how.protocol, how.timeout())?;
            json_or(&how.output, &m, || probe::render_matrix(&m))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec { lab, pod, command } => {
            let state = load(&lab)?;
            let p = state
                .pod(&pod)
                .ok_or_else(|| LabError::Io(format!("pod {pod:?} is not in lab {}", lab.name)))?;
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &p.netns])
                .args(&command)
                .status()
                .map_err(|e| LabError::Io(format!("running {command:?} in {pod}: {e}")))?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        LabCommand::Demo {
            lab,
            output,
            pod_port,
        } => {
            super::check_name(&lab.name)?;
            let bins = binaries()?;
            if !State::file(&dir(&lab.name)).exists() {
                let o = UpOptions {
                    name: lab.name.clone(),
                    nodes: 2,
                    manifests: None,
                    pod_port,
                    workers: 1,
                    bins: bins.clone(),
                };
                if let Err(e) = up::up(&o) {
                    let _ = super::down(&lab.name);
                    return Err(e);
                }
            }
            let mut state = load(&lab)?;
            let report = super::demo::run(&mut state, &bins)?;
            json_or(&output, &report, || report.render())?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Serve { tcp, udp, identity } => {
            super::serve::serve(&tcp, &udp, &identity)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lab apply` or `lab delete`, and what it did.
fn change(lab: &LabName, file: &Path, mode: Mode, verb: &str) -> Result<ExitCode, LabError> {
    let mut state = load(lab)?;
    let started = std::time::Instant::now();
    let done = super::apply::apply(&mut state, file, mode, &binaries()?)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !done.changed {
        println!("{}: unchanged", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!("{verb} {} in {ms:.0} ms", file.display());
    if !done.created.is_empty() {
        println!("pods created: {}", done.created.join(", "));
    }
    if !done.deleted.is_empty() {
        println!("pods deleted: {}", done.deleted.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab status` as text.
pub fn render_status(state: &State) -> String {
    use api::render::Table;
    let mut out = String::new();
    let mut t = Table::new(&["NODE", "ADDRESS", "POD CIDR", "AGENT PID"]);
    for n in &state.lab.nodes {
        t.row(vec![
            n.name.clone(),
            n.ip.map(|i| i.to_string()).unwrap_or_default(),
            n.pod_cidr.clone(),
            n.agent_pid.map(|p| p.to_string()).unwrap_or_default(),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    let mut t = Table::new(&["POD", "IP", "NODE", "PORTS"]);
    for p in &state.lab.pods {
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|(proto, port)| format!("{port}/{proto}"))
            .collect();
        t.row(vec![
            p.key(),
            p.ip.map(|i| i.to_string()).unwrap_or_default(),
            p.node.clone(),
            ports.join(","),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    let mut t = Table::new(&["SERVICE", "TYPE", "CLUSTER-IP", "PORTS"]);
    for s in &state.lab.services {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| match p.node_port {
                Some(np) => format!("{}:{np}/{}", p.port, p.protocol),
                None => format!("{}/{}", p.port, p.protocol),
            })
            .collect();
        t.row(vec![
            format!("{}/{}", s.namespace, s.name),
            s.kind.clone(),
            s.cluster_ip.map(|i| i.to_string()).unwrap_or_default(),
            ports.join(","),
        ]);
    }
    out.push_str(&t.render());
    out
}
