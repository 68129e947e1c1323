//! `deploy/cni/install.sh` installs what a runtime needs, the way it looks
//! for it: the plugin and `host-local` in the CNI bin directory, and
//! `10-podswitch.conflist` with the node's pod CIDR and agent socket in the
//! config directory. The installed conflist is then given to the installed
//! plugin as a runtime would (the plugin's entry with the list's
//! `cniVersion` and `name`, `CNI_PATH` = the bin directory): it decodes,
//! validates, finds its IPAM plugin and stops only at the missing agent
//! (code 11). Needs root (namespaces).

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testkit::cni::{Cni, Pod};
use testkit::netns::{require_root, Netns};

#[test]
fn the_installer_writes_a_conflist_the_installed_plugin_accepts() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    let socket = dir.path().join("agent.sock");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cni/install.sh");
    let run = |cidr: &str| {
        Command::new("bash")
            .arg(&script)
            .arg(cidr)
            .arg(&socket)
            .env("CNI_BIN_DIR", &bin)
            .env("CNI_CONF_DIR", &conf)
            .env("PODSWITCH_CNI", env!("CARGO_BIN_EXE_podswitch-cni"))
            .output()
            .unwrap()
    };
    let bad = run("10.244.3.0");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not an IPv4 CIDR"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Twice: it is idempotent.
    for _ in 0..2 {
        let out = run("10.244.3.0/24");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(bin.join("podswitch-cni").is_file());
    assert!(bin.join("host-local").exists());
    let list: Value =
        serde_json::from_slice(&std::fs::read(conf.join("10-podswitch.conflist")).unwrap())
            .unwrap();
    // 1.0.0 for runtimes on libcni 1.0/1.1 (containerd 1.6/1.7), which
    // fail on 1.1.0; newer ones pick 1.1.0 from cniVersions.
    assert_eq!(list["cniVersion"], "1.0.0");
    assert_eq!(list["cniVersions"], serde_json::json!(["1.0.0", "1.1.0"]));
    assert_eq!(list["plugins"][0]["capabilities"]["portMappings"], true);
    let mut plugin = list["plugins"][0].clone();
    assert_eq!(plugin["type"], "podswitch-cni");
    assert_eq!(plugin["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    assert_eq!(plugin["agentSocket"], socket.display().to_string());

    // As a runtime derives the plugin's config from the list.
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin["name"] = list["name"].clone();
    plugin["stateDir"] = dir.path().join("state").display().to_string().into();
    plugin["ipam"]["dataDir"] = dir.path().join("ipam").display().to_string().into();
    let (node, pod) = (Netns::new("cnii"), Netns::new("cniip"));
    let mut cni = Cni::new(&bin.join("podswitch-cni"), &node);
    cni.cni_path = bin.display().to_string();
    let error = cni.add(&Pod::new("installed", &pod), &plugin).unwrap_err();
    assert_eq!(error.code, 11, "{error:?}");
    assert!(error.msg.contains("agent"), "{error:?}");
}
