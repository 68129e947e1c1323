//! `podswitch agent`: the node daemon (being assembled: the static table
//! source is here; AF_XDP ports and XDP attachment join it next).

pub mod config;
pub mod host_port;
pub mod links;
pub mod netlink;
pub mod run;
pub mod static_source;
