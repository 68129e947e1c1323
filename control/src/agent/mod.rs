//! `podswitch agent`: the node daemon. `config` validates its settings,
//! `run` owns its lifetime (host port, XDP programs, AF_XDP sockets,
//! workers, local API), `feed` keeps its tables current from a static file,
//! a folder of manifests or the Kubernetes API; `pods` attaches the pod
//! interfaces the CNI plugin hands over; `netlink`, `links` and
//! `host_port` talk to the kernel.

pub mod config;
pub mod feed;
pub mod health;
pub mod host_port;
pub mod links;
pub mod netlink;
pub mod pods;
pub mod run;
pub mod static_source;
