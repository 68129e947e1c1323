//! DEL, idempotent: a missing netns, veth, record or agent is not an error;
//! whatever exists is cleaned. The steps (also GC's, per stale record):
//! detach from the agent (an agent that is down is skipped), delete the
//! host veth by its derived name (the pod end goes with it), IPAM DEL (with
//! the config ADD recorded, else the one on stdin), drop the record.
//!
//! Every step runs even when an earlier one failed; then the first failure
//! is returned (IPAM DEL's first: it is what holds the pod's address) and
//! the record stays, so a retried DEL or GC can finish the job.

use std::path::{Path, PathBuf};

use api::ports::PodPortKind;
use serde_json::Value;

use crate::agent;
use crate::config::NetConf;
use crate::env::Command;
use crate::error::CniError;
use crate::ipam::{Ipam, Target};
use crate::naming::host_ifname;
use crate::record::Store;
use crate::wiring;
use crate::Request;

/// One attachment to clean up.
pub struct Cleanup<'a> {
    pub agent_socket: &'a Path,
    pub cni_path: &'a [PathBuf],
    pub store: &'a Store,
    pub target: Target,
    /// The network config to hand IPAM DEL (ADD's, when recorded).
    pub config: &'a Value,
    /// For a TAP port: the pod's namespace, where its device persists if
    /// the agent could not delete it.
    pub tap_netns: Option<&'a str>,
}

impl Cleanup<'_> {
    /// Runs every step; the first failure, after all of them ran.
    pub fn run(&self, fallback: &NetConf) -> Result<(), CniError> {
        let (cid, ifname) = (&self.target.container_id, &self.target.ifname);
        let detached = agent::detach(self.agent_socket, cid, ifname);
        let veth = match self.tap_netns {
            Some(netns) => wiring::remove_pod_tap(netns, ifname).map(|_| ()),
            None => wiring::remove_host_end(&host_ifname(cid, ifname)).map(|_| ()),
        };
        let ipam = self.ipam_del(fallback);
        let result = ipam.and(detached).and(veth);
        if result.is_ok() {
            self.store.remove(cid, ifname)?;
        }
        result
    }

    fn ipam_del(&self, fallback: &NetConf) -> Result<(), CniError> {
        // The recorded config was valid when ADD took it; if it no longer
        // parses (a newer plugin's record?), the current one decides.
        let recorded = NetConf::parse(self.config.to_string().as_bytes());
        let conf = recorded.as_ref().unwrap_or(fallback);
        let ipam = Ipam::locate(&conf.ipam_type, self.cni_path)?;
        ipam.call(Command::Del, &self.target, &conf.raw, conf.version)?;
        Ok(())
    }
}

/// Runs DEL.
pub fn del(request: &Request) -> Result<(), CniError> {
    let (env, conf) = (&request.env, &request.conf);
    let store = Store::new(&conf.state_dir, &conf.name);
    let record = match store.read(&env.container_id, &env.ifname) {
        Ok(record) => record,
        // An unreadable record is replaced by what stdin says; it is
        // removed with the rest.
        Err(e) if e.code() == crate::error::code::DECODE => None,
        Err(e) => return Err(e),
    };
    let config = record.as_ref().map_or(&conf.raw, |r| &r.config);
    Cleanup {
        agent_socket: &conf.agent_socket,
        cni_path: &env.path,
        store: &store,
        target: crate::add::target(request),
        config,
        tap_netns: record
            .as_ref()
            .filter(|r| r.kind == PodPortKind::Tap)
            .and_then(|r| r.netns.as_deref()),
    }
    .run(conf)
}
