//! Records: one JSON file per attachment, `STATE_DIR/NETWORK/CID-IFNAME.json`,
//! written before ADD creates anything and removed last by DEL, so DEL and GC
//! can always find what to undo and hand IPAM DEL the config ADD used.
//!
//! Writes are atomic (a temporary file in the same directory, synced, then
//! renamed over the record), so a reader sees the old or the new record,
//! never half of one. Temporary files start with `.` and are never listed.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use api::ports::PodPortKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;

/// What ADD set up (or was about to) for one attachment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    #[serde(default)]
    pub netns: Option<String>,
    pub host_ifname: String,
    /// The kind of port the agent gave the pod.
    #[serde(default)]
    pub kind: PodPortKind,
    /// The whole network config ADD received on stdin.
    pub config: Value,
    /// The pod's address, once IPAM gave one.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The pod side's MAC, once known.
    #[serde(default)]
    pub mac: Option<String>,
}

/// A record file and what it holds (or why it cannot be read).
pub type Listed = (PathBuf, Result<Record, CniError>);

/// The records of one network.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The records of network `network` under `state_dir`.
    pub fn new(state_dir: &Path, network: &str) -> Store {
        Store {
            dir: state_dir.join(network),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the record of `container_id`'s `ifname` lives.
    pub fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    /// Writes `record` atomically, creating the directory (mode 0700).
    pub fn write(&self, record: &Record) -> Result<(), CniError> {
        let path = self.path(&record.container_id, &record.ifname);
        let shown = path.display().to_string();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(CniError::io(format!(
                "cannot create the state directory {}",
                self.dir.display()
            )))?;
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| CniError::Other(format!("cannot encode record {shown}: {e}")))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self
            .dir
            .join(format!(".{file_name}.tmp.{}", std::process::id()));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(CniError::io(format!("cannot write record {shown}"))(e));
        }
        Ok(())
    }

    /// Reads the record of `container_id`'s `ifname`: `None` if there is
    /// none, an error if it cannot be read or decoded.
    pub fn read(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, CniError> {
        read_file(&self.path(container_id, ifname))
    }

    /// Removes the record of `container_id`'s `ifname` (none is fine).
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        remove_file(&self.path(container_id, ifname))
    }

    /// Every record file of this network with what it holds (or why it
    /// cannot be read), sorted by path. No directory means no records.
    pub fn list(&self) -> Result<Vec<Listed>, CniError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(CniError::io(format!(
                    "cannot list the state directory {}",
                    self.dir.display()
                ))(e))
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(CniError::io(format!(
                "cannot list the state directory {}",
                self.dir.display()
            )))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            let record = read_file(&path).and_then(|r| {
                r.ok_or_else(|| CniError::Other(format!("{} vanished", path.display())))
            });
            out.push((path, record));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn read_file(path: &Path) -> Result<Option<Record>, CniError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CniError::io(format!(
                "cannot read record {}",
                path.display()
            ))(e))
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CniError::Decode(format!("record {} is not a record: {e}", path.display())))
}

/// Removes `path`; a missing file is fine.
pub fn remove_file(path: &Path) -> Result<(), CniError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io(format!(
            "cannot remove record {}",
            path.display()
        ))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(cid: &str) -> Record {
        Record {
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: Some("/var/run/netns/x".into()),
            host_ifname: crate::naming::host_ifname(cid, "eth0"),
            kind: api::ports::PodPortKind::Veth,
            config: json!({"cniVersion": "1.0.0", "name": "net", "ipam": {"type": "host-local"}}),
            ip: None,
            mac: None,
        }
    }

    #[test]
    fn writes_reads_updates_lists_and_removes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "net");
        assert!(store.list().unwrap().is_empty(), "no directory yet");
        assert_eq!(store.read("c1", "eth0").unwrap(), None);

        let mut r = record("c1");
        store.write(&r).unwrap();
        assert_eq!(
            store.path("c1", "eth0"),
            tmp.path().join("net/c1-eth0.json")
        );
        assert_eq!(store.read("c1", "eth0").unwrap(), Some(r.clone()));
        r.ip = Some(Ipv4Addr::new(10, 244, 1, 2));
        r.mac = Some("02:00:00:00:00:01".into());
        store.write(&r).unwrap();
        assert_eq!(store.read("c1", "eth0").unwrap(), Some(r.clone()));

        store.write(&record("c2")).unwrap();
        fs::write(store.dir().join("broken-eth0.json"), b"{").unwrap();
        fs::write(store.dir().join(".c3-eth0.json.tmp.1"), b"{}").unwrap();
        let listed = store.list().unwrap();
        let names: Vec<String> = listed
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["broken-eth0.json", "c1-eth0.json", "c2-eth0.json"]);
        assert_eq!(listed[0].1.as_ref().unwrap_err().code(), 6);
        assert_eq!(listed[1].1.as_ref().unwrap(), &r);
        assert_eq!(store.read("broken", "eth0").unwrap_err().code(), 6);

        store.remove("c1", "eth0").unwrap();
        store.remove("c1", "eth0").unwrap();
        assert_eq!(store.read("c1", "eth0").unwrap(), None);
        let leftovers: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name().to_string_lossy().contains(".tmp.")
                    && !e.file_name().to_string_lossy().starts_with(".c3")
            })
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left behind");
    }
}
