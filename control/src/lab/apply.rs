//! `podswitch lab apply -f FILE` and `podswitch lab delete -f FILE`:
//! objects added to, changed in or removed from a running lab through its
//! manifest folder, returning once every agent has the result in force.
//!
//! What a lab can change live today: Namespaces, Services, EndpointSlices
//! and NetworkPolicies. Pods and Deployments are refused (they need
//! namespaces and CNI attachment; give them to `lab up`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{LabError, State, SERVICE_CIDR};
use crate::source::manifest::load_dir;
use crate::source::{Kind, Object};

/// The name an applied file has in the lab's manifest folder.
fn applied_name(file: &Path) -> Result<String, LabError> {
    let base = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| LabError::Io(format!("{} names no file", file.display())))?;
    let lower = base.to_ascii_lowercase();
    let base = if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        base
    } else {
        format!("{base}.yaml")
    };
    Ok(format!("zz-applied-{base}"))
}

/// Object counts per kind, and the objects.
type Checked = (BTreeMap<String, usize>, Vec<Object>);

/// What the folder `dir` holds, or every problem in it.
fn check(dir: &Path) -> Result<Checked, Vec<String>> {
    let cidr: tables::model::Cidr = SERVICE_CIDR.parse().map_err(|e: String| vec![e])?;
    let loaded = load_dir(dir, cidr);
    if !loaded.warnings.is_empty() {
        return Err(loaded.warnings);
    }
    let mut counts = BTreeMap::new();
    for o in &loaded.objects {
        *counts.entry(o.kind().name().to_owned()).or_insert(0) += 1;
    }
    Ok((counts, loaded.objects))
}

/// Applies `file` (or, with `delete`, removes what an earlier apply of a
/// file of that name added) and waits until the agents have it in force.
pub fn apply(state: &State, file: &Path, delete: bool) -> Result<(), LabError> {
    let manifests = state.dir.join("manifests");
    let name = applied_name(file)?;
    let target = manifests.join(&name);
    // Check the folder as it would become, in a copy, before touching it.
    let trial = state.dir.join(".trial");
    let _ = std::fs::remove_dir_all(&trial);
    copy_dir(&manifests, &trial)?;
    if delete {
        if !trial.join(&name).exists() {
            let _ = std::fs::remove_dir_all(&trial);
            return Err(LabError::Io(format!(
                "{} was not applied to lab {} (nothing to delete)",
                file.display(),
                state.lab.name
            )));
        }
        let _ = std::fs::remove_file(trial.join(&name));
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| LabError::Io(format!("{}: cannot read: {e}", file.display())))?;
        std::fs::write(trial.join(&name), text)
            .map_err(|e| LabError::Io(format!("staging {}: {e}", file.display())))?;
    }
    let before = check(&manifests)
        .map(|(_, objects)| objects)
        .unwrap_or_default();
    let checked = check(&trial);
    let _ = std::fs::remove_dir_all(&trial);
    let (counts, after) = checked.map_err(|problems| {
        LabError::Refused(
            problems
                .into_iter()
                .map(|p| {
                    p.replace(
                        &trial.join(&name).display().to_string(),
                        &file.display().to_string(),
                    )
                })
                .collect(),
        )
    })?;
    let pods = |objects: &[Object]| -> Vec<String> {
        objects
            .iter()
            .filter(|o| o.kind() == Kind::Pod)
            .map(|o| o.key().to_string())
            .collect()
    };
    if pods(&before) != pods(&after) {
        return Err(LabError::Refused(vec![format!(
            "{}: adding or removing Pods (or Deployments) in a running lab is not supported yet; give them to `lab up`",
            file.display()
        )]));
    }
    if before == after {
        return Ok(());
    }
    let generations: Vec<u64> = state
        .lab
        .nodes
        .iter()
        .map(|n| {
            crate::api::status(&n.socket)
                .map(|s| s.generation)
                .unwrap_or(0)
        })
        .collect();
    if delete {
        std::fs::remove_file(&target)
    } else {
        std::fs::copy(file, &target).map(|_| ())
    }
    .map_err(|e| LabError::Io(format!("{}: {e}", target.display())))?;
    wait_in_force(state, &generations, &counts)
}

/// Waits until every agent has published tables newer than `generations`
/// from a synced source holding `counts` objects.
fn wait_in_force(
    state: &State,
    generations: &[u64],
    counts: &BTreeMap<String, usize>,
) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (node, &before) in state.lab.nodes.iter().zip(generations) {
        loop {
            if let Ok(s) = crate::api::status(&node.socket) {
                let held: BTreeMap<String, usize> = s
                    .objects
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| (k.clone(), *n))
                    .collect();
                let want: BTreeMap<String, usize> = counts
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| (k.clone(), *n))
                    .collect();
                if s.synced && s.generation > before && held == want {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(LabError::step(
                    format!("the agent of {}", node.name),
                    "did not put the change in force within 10 s (see `podswitch status`)",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &PathBuf) -> Result<(), LabError> {
    let io = |e: std::io::Error| LabError::Io(format!("copying {}: {e}", from.display()));
    std::fs::create_dir_all(to).map_err(io)?;
    for entry in std::fs::read_dir(from).map_err(io)?.flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(io)?;
        }
    }
    Ok(())
}
