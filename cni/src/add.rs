//! ADD, atomically: either the pod ends up wired, addressed and attached,
//! or everything done so far is undone in reverse and the error printed.
//!
//! 1. Validate; the agent must be reachable and ready (else code 11 with
//!    nothing changed). The pod MTU is the config's `mtu` or the agent's.
//! 2. Write the record (before anything exists that would need it).
//! 3. IPAM ADD (delegated); the first IPv4 address is the pod's.
//! 4. The veth: host end here, pod end created inside the pod's namespace,
//!    both configured ([`crate::wiring`]).
//! 5. Register with the agent; it answers once the pod is reachable.
//! 6. Print the result in the config's version.
//!
//! When the agent gives pods TAP ports (its status says `pod_port: tap`),
//! step 4 is left to the agent: registering (5) makes it create the TAP
//! device here, under the host interface name, and answer with its MAC;
//! the plugin then moves the device into the pod's namespace as
//! `CNI_IFNAME` and configures it as it would the veth's pod end.

use std::fs::File;
use std::path::PathBuf;

use api::ports::{Attachment, PodPortKind};
use tables::mac::MacAddr;

use crate::agent;
use crate::env::Command;
use crate::error::CniError;
use crate::ipam::{Ipam, Target};
use crate::naming::host_ifname;
use crate::netns;
use crate::record::{Record, Store};
use crate::result::{self, Wired};
use crate::wiring;
use crate::Request;

/// What has been done so far, for the rollback.
#[derive(Default)]
struct Done {
    ipam: bool,
    veth: bool,
    attach: bool,
}

/// `CNI_NETNS`, which ADD and CHECK require.
pub(crate) fn netns_path(request: &Request) -> Result<PathBuf, CniError> {
    request.env.netns.clone().ok_or(CniError::InvalidEnv {
        var: "CNI_NETNS",
        reason: format!("is required for {}", request.env.command.name()),
    })
}

/// Opens the pod's namespace (an unusable `CNI_NETNS` is code 4).
pub(crate) fn open_netns(path: &std::path::Path) -> Result<File, CniError> {
    netns::open(path).map_err(|e| CniError::InvalidEnv {
        var: "CNI_NETNS",
        reason: format!("cannot open the network namespace {}: {e}", path.display()),
    })
}

/// The IPAM target for this request.
pub(crate) fn target(request: &Request) -> Target {
    Target {
        container_id: request.env.container_id.clone(),
        ifname: request.env.ifname.clone(),
        netns: request.env.netns.clone(),
        args: Some(request.env.args_text.clone()),
    }
}

/// Runs ADD and returns the result to print.
pub fn add(request: &Request) -> Result<String, CniError> {
    let (env, conf) = (&request.env, &request.conf);
    let netns_path = netns_path(request)?;
    let pod_ns = open_netns(&netns_path)?;
    let ipam = Ipam::locate(&conf.ipam_type, &env.path)?;
    ipam.negotiate(conf.version)?;
    let status = agent::ready_status(&conf.agent_socket)?;
    let mtu = match (conf.mtu, status.pod_mtu) {
        (Some(mtu), _) => mtu,
        (None, 0) => {
            return Err(CniError::TryAgain(format!(
                "the agent at {} reports no pod MTU (it runs no dataplane yet) and the config sets no mtu",
                conf.agent_socket.display()
            )))
        }
        (None, mtu) => mtu,
    };
    let store = Store::new(&conf.state_dir, &conf.name);
    let mut record = Record {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: Some(netns_path.display().to_string()),
        host_ifname: host_ifname(&env.container_id, &env.ifname),
        kind: status.pod_port,
        config: conf.raw.clone(),
        ip: None,
        mac: None,
    };
    store.write(&record)?;
    let mut done = Done::default();
    let mut attempt = Attempt {
        request,
        ipam: &ipam,
        store: &store,
        pod_ns: &pod_ns,
        mtu,
        queues: u32::try_from(status.workers).unwrap_or(1).max(1),
    };
    match attempt.wire(&mut record, &mut done) {
        Ok(result) => Ok(result),
        Err(error) => Err(attempt.roll_back(&record, &done, error)),
    }
}

struct Attempt<'a> {
    request: &'a Request,
    ipam: &'a Ipam,
    store: &'a Store,
    pod_ns: &'a File,
    mtu: u32,
    /// The agent's workers: one queue each on the veth.
    queues: u32,
}

impl Attempt<'_> {
    fn wire(&mut self, record: &mut Record, done: &mut Done) -> Result<String, CniError> {
        let (env, conf) = (&self.request.env, &self.request.conf);
        let netns_text = record.netns.clone().unwrap_or_default();

        done.ipam = true;
        let answer = self
            .ipam
            .call(Command::Add, &target(self.request), &conf.raw, conf.version)?
            .ok_or_else(|| {
                CniError::Other(format!(
                    "IPAM plugin {} printed no result for ADD",
                    self.ipam.name()
                ))
            })?;
        let ipam_result = result::parse(
            &answer,
            &format!("IPAM plugin {}'s answer", self.ipam.name()),
        )?;
        let (ip, _) = ipam_result.first_ipv4().ok_or_else(|| {
            CniError::Other(format!(
                "IPAM plugin {} gave no IPv4 address (podswitch pods need one): {answer}",
                self.ipam.name()
            ))
        })?;
        record.ip = Some(ip);
        self.store.write(record)?;

        let mut attachment = Attachment {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            namespace: env.args.pod_namespace.clone(),
            name: env.args.pod_name.clone(),
            ip,
            mac: String::new(),
            host_ifname: record.host_ifname.clone(),
            kind: record.kind,
            netns: netns_text.clone(),
            port_mappings: conf.port_mappings.clone(),
        };
        let (pod_mac, host) = match record.kind {
            PodPortKind::Veth => {
                done.veth = true;
                let link = wiring::create(
                    &record.host_ifname,
                    &env.ifname,
                    self.pod_ns,
                    &netns_text,
                    ip,
                    self.mtu,
                    self.queues,
                )?;
                attachment.mac = MacAddr(link.pod_mac).to_string();
                record.mac = Some(attachment.mac.clone());
                self.store.write(record)?;
                done.attach = true;
                agent::attach(&conf.agent_socket, &attachment)?;
                let host = (
                    record.host_ifname.clone(),
                    MacAddr(link.host_mac).to_string(),
                );
                (attachment.mac, Some(host))
            }
            PodPortKind::Tap => {
                done.attach = true;
                let attached = agent::attach(&conf.agent_socket, &attachment)?;
                record.mac = Some(attached.attachment.mac.clone());
                self.store.write(record)?;
                wiring::adopt_tap(
                    &record.host_ifname,
                    &env.ifname,
                    self.pod_ns,
                    &netns_text,
                    ip,
                    self.mtu,
                )?;
                // The switch side of a TAP has no interface of its own.
                (attached.attachment.mac, None)
            }
        };

        let wired = Wired {
            host,
            pod_ifname: env.ifname.clone(),
            pod_mac,
            netns: netns_text,
            ip,
            mtu: self.mtu,
            dns: result::useful_dns(ipam_result.dns.as_ref()),
        };
        serde_json::to_string(&result::render(conf.version, &wired))
            .map_err(|e| CniError::Other(format!("cannot encode the result: {e}")))
    }

    /// Undoes `done` in reverse. What cannot be undone is named in the
    /// error's details, and the record then stays so DEL or GC can finish.
    fn roll_back(&self, record: &Record, done: &Done, error: CniError) -> CniError {
        let (env, conf) = (&self.request.env, &self.request.conf);
        let mut leftovers = Vec::new();
        if done.attach {
            if let Err(e) = agent::detach(&conf.agent_socket, &env.container_id, &env.ifname) {
                leftovers.push(format!("agent port: {e}"));
            }
        }
        if done.veth {
            if let Err(e) = wiring::remove_host_end(&record.host_ifname) {
                leftovers.push(format!("host veth {}: {e}", record.host_ifname));
            }
        }
        if done.ipam {
            if let Err(e) =
                self.ipam
                    .call(Command::Del, &target(self.request), &conf.raw, conf.version)
            {
                leftovers.push(format!("IPAM DEL: {e}"));
            }
        }
        if leftovers.is_empty() {
            if let Err(e) = self.store.remove(&env.container_id, &env.ifname) {
                leftovers.push(e.to_string());
            }
        } else {
            leftovers.push(format!(
                "the record {} stays so that DEL or GC can finish",
                self.store.path(&env.container_id, &env.ifname).display()
            ));
        }
        if leftovers.is_empty() {
            error
        } else {
            CniError::RolledBack {
                error: Box::new(error),
                leftovers,
            }
        }
    }
}
