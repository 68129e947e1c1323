//! `podswitch lab probe` and `podswitch lab matrix`: connections made from
//! inside a pod's namespace (a thread that entered it), to a pod, a
//! service or an address, checked by the echo the target's built-in
//! server sends back.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use super::{sys, LabError, State};

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(format!("protocol {s:?}: expected tcp or udp")),
        }
    }
}

/// Where `target` points: `NS/POD`, `svc/NS/NAME` or an IPv4 address.
pub fn resolve(state: &State, target: &str) -> Result<Ipv4Addr, LabError> {
    if let Ok(ip) = target.parse() {
        return Ok(ip);
    }
    let unknown = |what: &str| {
        LabError::Io(format!(
            "{what} {target:?} is not in lab {} (see `podswitch lab status --name {}`)",
            state.lab.name, state.lab.name
        ))
    };
    if let Some(svc) = target.strip_prefix("svc/") {
        return state
            .lab
            .services
            .iter()
            .find(|s| format!("{}/{}", s.namespace, s.name) == svc)
            .and_then(|s| s.cluster_ip)
            .ok_or_else(|| unknown("service"));
    }
    state
        .pod(target)
        .and_then(|p| p.ip)
        .ok_or_else(|| unknown("pod"))
}

/// Connects from pod `from` (`NS/POD`) to `ip:port`; true when the echo
/// came back within `timeout`.
pub fn probe(
    state: &State,
    from: &str,
    ip: Ipv4Addr,
    port: u16,
    protocol: Protocol,
    timeout: Duration,
) -> Result<bool, LabError> {
    let pod = state.pod(from).ok_or_else(|| {
        LabError::Io(format!(
            "pod {from:?} is not in lab {} (use NS/POD)",
            state.lab.name
        ))
    })?;
    sys::in_netns(&pod.netns, move || {
        connect(SocketAddr::from((ip, port)), protocol, timeout)
    })
}

const PAYLOAD: &[u8] = b"podswitch-lab-probe\n";

fn connect(to: SocketAddr, protocol: Protocol, timeout: Duration) -> bool {
    let mut back = [0u8; 64];
    match protocol {
        Protocol::Tcp => {
            let Ok(mut stream) = TcpStream::connect_timeout(&to, timeout) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(timeout));
            if stream.write_all(PAYLOAD).is_err() {
                return false;
            }
            let mut got = 0;
            while got < PAYLOAD.len() {
                match stream.read(&mut back[got..PAYLOAD.len()]) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => got += n,
                }
            }
            &back[..got] == PAYLOAD
        }
        Protocol::Udp => {
            let Ok(socket) = UdpSocket::bind(("0.0.0.0", 0)) else {
                return false;
            };
            let _ = socket.set_read_timeout(Some(timeout));
            if socket.send_to(PAYLOAD, to).is_err() {
                return false;
            }
            matches!(socket.recv_from(&mut back), Ok((n, from)) if from == to && &back[..n] == PAYLOAD)
        }
    }
}

/// Every pod to every pod on `port`, in parallel: from -> to -> connected.
pub fn matrix(
    state: &State,
    port: u16,
    protocol: Protocol,
    timeout: Duration,
) -> Result<BTreeMap<String, BTreeMap<String, bool>>, LabError> {
    let pods: Vec<(String, Option<Ipv4Addr>)> =
        state.lab.pods.iter().map(|p| (p.key(), p.ip)).collect();
    let pairs: Vec<(&str, &str, Option<Ipv4Addr>)> = pods
        .iter()
        .flat_map(|(from, _)| {
            pods.iter()
                .map(move |(to, ip)| (from.as_str(), to.as_str(), *ip))
        })
        .collect();
    let mut out: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    // At most 32 probes at once.
    for chunk in pairs.chunks(32) {
        let results: Vec<Result<bool, LabError>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&(from, _, ip)| {
                    s.spawn(move || match ip {
                        Some(ip) => probe(state, from, ip, port, protocol, timeout),
                        None => Ok(false),
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Ok(false)))
                .collect()
        });
        for (&(from, to, _), result) in chunk.iter().zip(results) {
            out.entry(from.to_string())
                .or_default()
                .insert(to.to_string(), result?);
        }
    }
    Ok(out)
}

/// The grid Kubernetes' network-policy tests print: `.` connected, `X` not.
pub fn render_matrix(matrix: &BTreeMap<String, BTreeMap<String, bool>>) -> String {
    let names: Vec<&String> = matrix.keys().collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(1).max(4);
    let mut out = format!("{:<width$}", "-");
    for n in &names {
        out.push_str(&format!(" {n:<width$}"));
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    for from in &names {
        out.push_str(&format!("{from:<width$}"));
        for to in &names {
            let mark = match matrix.get(*from).and_then(|row| row.get(*to)) {
                Some(true) => ".",
                _ => "X",
            };
            out.push_str(&format!(" {mark:<width$}"));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}
