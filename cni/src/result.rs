//! Results: what ADD prints (in the version the runtime asked for), what an
//! IPAM plugin returns, and the `prevResult` CHECK verifies.
//!
//! One set of serde structs serves all three; the version differences are
//! small: 0.4.0 puts `"version": "4"` in each IP entry, 1.1.0 adds the pod
//! interface's `mtu`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::Version;

/// The pod's gateway: the switch answers ARP for it on every host veth.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A CNI result (ADD's output, an IPAM plugin's output, `prevResult`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`; only in results before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `ADDRESS/PREFIX`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

impl IpConfig {
    /// The address and prefix length, if it is an IPv4 `A.B.C.D/N`.
    pub fn ipv4(&self) -> Option<(Ipv4Addr, u8)> {
        let (addr, len) = self.address.split_once('/')?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some((addr.parse().ok()?, len))
    }
}

/// What ADD set up, independent of the result version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wired {
    /// The host end's name and MAC (a veth's; a TAP port has none).
    pub host: Option<(String, String)>,
    pub pod_ifname: String,
    pub pod_mac: String,
    /// `CNI_NETNS`.
    pub netns: String,
    pub ip: Ipv4Addr,
    pub mtu: u32,
    /// The IPAM plugin's `dns`, when it gave a non-empty one.
    pub dns: Option<Value>,
}

/// ADD's result for `wired`, in `version`.
pub fn render(version: Version, wired: &Wired) -> CniResult {
    let gateway = GATEWAY.to_string();
    let mut interfaces: Vec<Interface> = wired
        .host
        .iter()
        .map(|(name, mac)| Interface {
            name: name.clone(),
            mac: mac.clone(),
            mtu: None,
            sandbox: None,
        })
        .collect();
    let pod = interfaces.len();
    interfaces.push(Interface {
        name: wired.pod_ifname.clone(),
        mac: wired.pod_mac.clone(),
        mtu: (version >= Version::V1_1_0).then_some(wired.mtu),
        sandbox: Some(wired.netns.clone()),
    });
    CniResult {
        cni_version: version.to_string(),
        interfaces,
        ips: vec![IpConfig {
            version: (version < Version::V1_0_0).then(|| "4".to_string()),
            address: format!("{}/32", wired.ip),
            gateway: Some(gateway.clone()),
            interface: Some(pod),
        }],
        routes: vec![RouteConfig {
            dst: "0.0.0.0/0".into(),
            gw: Some(gateway),
        }],
        dns: wired.dns.clone(),
    }
}

/// Decodes a result (an IPAM plugin's stdout, or `prevResult`); `what`
/// names it in errors.
pub fn parse(value: &Value, what: &str) -> Result<CniResult, CniError> {
    CniResult::deserialize(value)
        .map_err(|e| CniError::Decode(format!("{what} is not a CNI result: {e}")))
}

/// The `dns` worth passing on: absent when missing, null or empty.
pub fn useful_dns(dns: Option<&Value>) -> Option<Value> {
    dns.filter(|d| match d {
        Value::Object(o) => !o.is_empty(),
        Value::Null => false,
        _ => true,
    })
    .cloned()
}

impl CniResult {
    /// The first IPv4 address.
    pub fn first_ipv4(&self) -> Option<(Ipv4Addr, u8)> {
        self.ips.iter().find_map(IpConfig::ipv4)
    }

    /// The IPv4 address of the sandbox interface `ifname` (an entry whose
    /// `interface` points at it), else the first IPv4 address.
    pub fn ipv4_of(&self, ifname: &str) -> Option<(Ipv4Addr, u8)> {
        let index = self
            .interfaces
            .iter()
            .position(|i| i.name == ifname && i.sandbox.is_some());
        index
            .and_then(|index| {
                self.ips
                    .iter()
                    .filter(|ip| ip.interface == Some(index))
                    .find_map(IpConfig::ipv4)
            })
            .or_else(|| self.first_ipv4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wired() -> Wired {
        Wired {
            host: Some(("psw0123456789ab".into(), "02:00:00:00:00:01".into())),
            pod_ifname: "eth0".into(),
            pod_mac: "02:00:00:00:00:02".into(),
            netns: "/var/run/netns/p".into(),
            ip: Ipv4Addr::new(10, 244, 1, 5),
            mtu: 1450,
            dns: None,
        }
    }

    #[test]
    fn renders_1_0_0() {
        let got = serde_json::to_value(render(Version::V1_0_0, &wired())).unwrap();
        assert_eq!(
            got,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "psw0123456789ab", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/p"},
                ],
                "ips": [{"address": "10.244.1.5/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            })
        );
    }

    #[test]
    fn renders_1_1_0_with_the_mtu_and_dns() {
        let mut w = wired();
        w.dns = Some(json!({"nameservers": ["10.96.0.10"]}));
        let got = serde_json::to_value(render(Version::V1_1_0, &w)).unwrap();
        assert_eq!(got["cniVersion"], "1.1.0");
        assert_eq!(got["interfaces"][1]["mtu"], 1450);
        assert!(got["interfaces"][0].get("mtu").is_none());
        assert!(got["ips"][0].get("version").is_none());
        assert_eq!(got["dns"], json!({"nameservers": ["10.96.0.10"]}));
    }

    #[test]
    fn renders_0_4_0_with_ip_versions() {
        let got = serde_json::to_value(render(Version::V0_4_0, &wired())).unwrap();
        assert_eq!(got["cniVersion"], "0.4.0");
        assert_eq!(got["ips"][0]["version"], "4");
        assert!(got["interfaces"][1].get("mtu").is_none());
        assert!(got.get("dns").is_none());
    }

    #[test]
    fn parses_ipam_results_of_both_generations() {
        let v1 = json!({"cniVersion": "1.0.0", "ips": [{"address": "fd00::5/64"}, {"address": "10.244.9.2/24", "gateway": "10.244.9.1"}], "dns": {}});
        let r = parse(&v1, "IPAM result").unwrap();
        assert_eq!(r.first_ipv4(), Some((Ipv4Addr::new(10, 244, 9, 2), 24)));
        assert_eq!(useful_dns(r.dns.as_ref()), None);
        let v04 = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.244.9.3/24"}], "dns": {"nameservers": ["1.1.1.1"]}});
        let r = parse(&v04, "IPAM result").unwrap();
        assert_eq!(r.first_ipv4(), Some((Ipv4Addr::new(10, 244, 9, 3), 24)));
        assert!(useful_dns(r.dns.as_ref()).is_some());
        assert!(parse(&json!({"ips": "x"}), "IPAM result").is_err());
        assert_eq!(
            parse(&json!({"ips": [{"address": "junk"}]}), "r")
                .unwrap()
                .first_ipv4(),
            None
        );
    }

    #[test]
    fn finds_the_pod_interfaces_address_in_a_prev_result() {
        let prev = serde_json::to_value(render(Version::V1_0_0, &wired())).unwrap();
        let r = parse(&prev, "prevResult").unwrap();
        assert_eq!(r.ipv4_of("eth0"), Some((Ipv4Addr::new(10, 244, 1, 5), 32)));
        // A round trip keeps the result as it was.
        assert_eq!(serde_json::to_value(&r).unwrap(), prev);
    }
}
