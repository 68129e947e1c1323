//! GC: removes what the runtime no longer knows about.
//!
//! `cni.dev/valid-attachments` lists the attachments that must stay. Every
//! record of this network not in the list gets DEL's cleanup (with the
//! record's config); every agent port whose attachment is not in the list
//! and whose host veth is one of ours is detached; and an IPAM plugin that
//! speaks 1.1.0 gets GC too. All steps run; the failures are reported
//! together at the end.

use std::collections::HashSet;

use crate::agent;
use crate::del::Cleanup;
use crate::env::Command;
use crate::error::CniError;
use crate::ipam::{Ipam, Target};
use crate::naming::is_ours;
use crate::record::{remove_file, Store};
use crate::version::Version;
use crate::Request;

/// Runs GC.
pub fn gc(request: &Request) -> Result<(), CniError> {
    let (env, conf) = (&request.env, &request.conf);
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::config(
            "cni.dev/valid-attachments",
            "is missing: GC needs the list of attachments to keep (an empty list removes every one)",
        )
    })?;
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut failures = Vec::new();

    let store = Store::new(&conf.state_dir, &conf.name);
    for (path, record) in store.list()? {
        match record {
            Ok(r) if keep.contains(&(r.container_id.as_str(), r.ifname.as_str())) => {}
            Ok(r) => {
                let cleanup = Cleanup {
                    agent_socket: &conf.agent_socket,
                    cni_path: &env.path,
                    store: &store,
                    target: Target {
                        container_id: r.container_id.clone(),
                        ifname: r.ifname.clone(),
                        netns: r.netns.as_ref().map(Into::into),
                        args: None,
                    },
                    config: &r.config,
                    tap_netns: (r.kind == api::ports::PodPortKind::Tap)
                        .then_some(r.netns.as_deref())
                        .flatten(),
                };
                if let Err(e) = cleanup.run(conf) {
                    failures.push(CniError::Other(format!(
                        "{}/{}: {e}",
                        r.container_id, r.ifname
                    )));
                }
            }
            // Records are written atomically, so an unreadable one was not
            // written by this plugin: it names nothing that can be undone.
            Err(_) => {
                if let Err(e) = remove_file(&path) {
                    failures.push(e);
                }
            }
        }
    }

    match agent::attachments(&conf.agent_socket) {
        Ok(view) => {
            for port in view.ports {
                let a = &port.attachment;
                if keep.contains(&(a.container_id.as_str(), a.ifname.as_str()))
                    || !is_ours(&a.host_ifname)
                {
                    continue;
                }
                if let Err(e) = agent::detach(&conf.agent_socket, &a.container_id, &a.ifname) {
                    failures.push(e);
                }
            }
        }
        Err(CniError::TryAgain(_)) => {} // the agent is down: it serves nothing
        Err(e) => failures.push(e),
    }

    match Ipam::locate(&conf.ipam_type, &env.path) {
        Ok(ipam) => match ipam.speaks(Version::V1_1_0) {
            Ok(true) => {
                if let Err(e) =
                    ipam.call_as(Command::Gc, &Target::default(), &conf.raw, Version::V1_1_0)
                {
                    failures.push(e);
                }
            }
            Ok(false) => {}
            Err(e) => failures.push(e),
        },
        Err(e) => failures.push(e),
    }
    combine(failures)
}

/// No failure, one (as it is), or several (code 999, every message).
fn combine(mut failures: Vec<CniError>) -> Result<(), CniError> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => Err(CniError::Other(format!(
            "{n} GC steps failed: {}",
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}
