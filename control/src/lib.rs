//! The podswitch node agent: control of the tables, the built-in example
//! cluster and self-check, and the CLI behind the `podswitch` binary.

pub mod agent;
pub mod api;
pub mod cluster;
pub mod dns;
pub mod example;
pub mod host_ports;
pub mod lab;
pub mod packets;
pub mod reconcile;
pub mod selftest;
pub mod source;
