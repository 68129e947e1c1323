//! CHECK: is the container's networking still what ADD set up?
//!
//! Verified against `prevResult`: the pod interface exists in `CNI_NETNS`
//! with the IP/32, the link route to 169.254.1.1 and the default route via
//! it, the MTU (the config's, else the agent's); the host veth exists with
//! the same MTU; the agent serves the port with the same IP; and the IPAM
//! plugin's own CHECK passes. All differences are reported together.

use std::net::Ipv4Addr;

use netlink::links::{self, RouteEntry, SCOPE_LINK};

use crate::add::{netns_path, open_netns, target};
use crate::agent;
use crate::env::Command;
use crate::error::CniError;
use crate::ipam::Ipam;
use crate::naming::host_ifname;
use crate::record::Store;
use crate::result::{self, GATEWAY};
use crate::wiring;
use crate::Request;

fn has_link_route(routes: &[RouteEntry], index: u32) -> bool {
    routes.iter().any(|r| {
        r.dst == GATEWAY && r.len == 32 && r.ifindex == Some(index) && r.scope == SCOPE_LINK
    })
}

fn has_default_route(routes: &[RouteEntry], index: u32) -> bool {
    routes
        .iter()
        .any(|r| r.len == 0 && r.gateway == Some(GATEWAY) && r.ifindex == Some(index))
}

/// Runs CHECK.
pub fn check(request: &Request) -> Result<(), CniError> {
    let (env, conf) = (&request.env, &request.conf);
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::config(
            "prevResult",
            "is required for CHECK (the result ADD printed)",
        )
    })?;
    let prev = result::parse(prev, "prevResult")?;
    let (ip, _) = prev.ipv4_of(&env.ifname).ok_or_else(|| {
        CniError::config(
            "prevResult",
            format!("has no IPv4 address for {}", env.ifname),
        )
    })?;
    let store = Store::new(&conf.state_dir, &conf.name);
    let Some(record) = store.read(&env.container_id, &env.ifname)? else {
        return Err(CniError::UnknownContainer(format!(
            "container {} has no interface {} on network {} (no record at {})",
            env.container_id,
            env.ifname,
            conf.name,
            store.path(&env.container_id, &env.ifname).display()
        )));
    };
    let netns_path = netns_path(request)?;
    let pod_ns = open_netns(&netns_path)?;
    let netns_text = netns_path.display().to_string();
    let mtu = match conf.mtu {
        Some(mtu) => mtu,
        None => agent::ready_status(&conf.agent_socket)?.pod_mtu,
    };

    let mut problems = Vec::new();
    match wiring::inspect(&pod_ns, &netns_text, &env.ifname)? {
        None => problems.push(format!(
            "there is no interface {} in {netns_text}",
            env.ifname
        )),
        Some(state) => {
            if !state.addresses.contains(&(ip, 32)) {
                let have: Vec<String> = state
                    .addresses
                    .iter()
                    .map(|(a, l)| format!("{a}/{l}"))
                    .collect();
                problems.push(format!(
                    "{} has [{}], not {ip}/32 (prevResult's address)",
                    env.ifname,
                    have.join(", ")
                ));
            }
            if !has_link_route(&state.routes, state.index) {
                problems.push(format!("no link route to {GATEWAY}/32 via {}", env.ifname));
            }
            if !has_default_route(&state.routes, state.index) {
                problems.push(format!("no default route via {GATEWAY} on {}", env.ifname));
            }
            if mtu != 0 && state.mtu != mtu {
                problems.push(format!(
                    "{} has MTU {}, expected {mtu}",
                    env.ifname, state.mtu
                ));
            }
        }
    }
    let tap = record.kind == api::ports::PodPortKind::Tap;
    let host = host_ifname(&env.container_id, &env.ifname);
    match links::index_of(&host) {
        // A TAP port has no host end: the device is the pod's interface.
        _ if tap => {}
        None => problems.push(format!("the host veth {host} is missing")),
        Some(index) => match links::mtu_of(index) {
            Ok(m) if mtu != 0 && m != mtu => {
                problems.push(format!("the host veth {host} has MTU {m}, expected {mtu}"))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("cannot read the MTU of {host}: {e}")),
        },
    }
    check_agent(request, ip, &mut problems)?;
    if !problems.is_empty() {
        return Err(CniError::CheckFailed(problems.join("; ")));
    }
    let ipam = Ipam::locate(&conf.ipam_type, &env.path)?;
    ipam.call(Command::Check, &target(request), &conf.raw, conf.version)?;
    Ok(())
}

fn check_agent(
    request: &Request,
    ip: Ipv4Addr,
    problems: &mut Vec<String>,
) -> Result<(), CniError> {
    let (env, conf) = (&request.env, &request.conf);
    let view = agent::attachments(&conf.agent_socket)?;
    match view
        .ports
        .iter()
        .find(|p| p.attachment.same_key(&env.container_id, &env.ifname))
    {
        None => problems.push(format!(
            "the agent serves no port for {}/{}",
            env.container_id, env.ifname
        )),
        Some(p) if p.attachment.ip != ip => problems.push(format!(
            "the agent serves {}/{} with IP {}, not {ip}",
            env.container_id, env.ifname, p.attachment.ip
        )),
        Some(_) => {}
    }
    Ok(())
}
