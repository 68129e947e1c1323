//! The podswitch node agent as a library: `podswitch agent` is [`run`].
//!
//! [`config`] validates its settings; [`run`] owns its lifetime (host port,
//! XDP programs, AF_XDP sockets, workers, local API) and carries out what
//! [`control`], the control loop's core without I/O, decides; [`feed`] keeps its
//! tables current from a static file ([`static_source`]), a folder of
//! manifests or the Kubernetes API (the `sources` crate), through the
//! incremental [`reconcile`]r; [`pods`] attaches the pod interfaces the CNI
//! plugin hands over; [`host_port`] builds the node's host port; [`dns`] is
//! the cluster DNS server; [`health`] answers load balancers' health checks;
//! [`log`] writes its events and the warnings `status` shows;
//! [`server`] serves the local API (whose contract is the `api` crate).
//!
//! It owns the daemon and nothing a client needs: the CLI, the CNI plugin
//! and the lab reach it through the `api` crate only, and it must never
//! depend on the lab or on test fixtures outside its tests.

pub mod config;
pub mod control;
pub mod dns;
pub mod feed;
pub mod health;
pub mod host_port;
pub mod log;
pub mod pods;
pub mod reconcile;
pub mod run;
pub mod server;
pub mod static_source;
#[cfg(test)]
mod test_objects;
