//! The data the podswitch fast path reads, and how control publishes it.
//!
//! Every table here is either part of an immutable [`snapshot`] (built by the
//! control thread, read lock-free by workers, swapped whole) or the one shared
//! mutable tables, [`conntrack`] and [`fragments`]. The cluster's objects
//! ([`model`]) are compiled into a snapshot by [`cluster`] (whole state) and
//! the agent's reconciler (incrementally); [`host_ports`] turns pods'
//! `hostPort`s into node frontends.
//!
//! It is the one crate every other one depends on, and it depends on no
//! other podswitch crate, no I/O and no runtime: plain data, hashing and
//! lock-free structures.

pub mod affinity;
pub mod cluster;
pub mod conntrack;
pub mod flow;
pub mod fragments;
pub mod host_ports;
pub mod lpm;
pub mod mac;
pub mod maglev;
pub mod model;
pub mod policy;
pub mod proto;
pub mod route;
pub mod service;
pub mod snapshot;
