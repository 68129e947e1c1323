//! Talking to the podswitch agent over its local API, with its errors
//! mapped to CNI codes: an agent that is not running, cannot be reached or
//! cannot attach ports yet (HTTP 503) means "try again later" (11).

use std::path::Path;

use api::ports::{self, AttachedPort, Attachment, PortsView};
use api::{self, AgentStatus, ApiError};

use crate::error::CniError;

/// Whether `e` means the agent is down (not listening, unreachable, or
/// answering 503: shutting down or not serving ports).
pub fn is_down(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::NotRunning { .. }
            | ApiError::Connect { .. }
            | ApiError::Refused { status: 503, .. }
    )
}

/// `e` as a CNI error: 11 when the agent is down, else 999.
pub fn error(e: ApiError) -> CniError {
    if is_down(&e) {
        CniError::TryAgain(e.to_string())
    } else {
        CniError::Other(e.to_string())
    }
}

/// The agent's status if it is ready to attach pods; code 11 otherwise.
pub fn ready_status(socket: &Path) -> Result<AgentStatus, CniError> {
    let status = api::status(socket).map_err(|e| match e {
        // Whatever keeps us from asking, the runtime should retry.
        e @ (ApiError::Permission { .. } | ApiError::BadAnswer { .. }) => {
            CniError::TryAgain(format!("cannot ask the agent whether it is ready: {e}"))
        }
        e => CniError::TryAgain(e.to_string()),
    })?;
    if !status.ready {
        let why = status
            .not_ready_reason()
            .unwrap_or("it says it is not ready");
        return Err(CniError::TryAgain(format!(
            "the podswitch agent at {} is not ready yet ({why}); try again later",
            socket.display()
        )));
    }
    Ok(status)
}

/// Registers `attachment`; returns once the pod is reachable.
pub fn attach(socket: &Path, attachment: &Attachment) -> Result<AttachedPort, CniError> {
    ports::attach(socket, attachment).map_err(error)
}

/// Detaches `container_id`'s `ifname`. An agent that is down cannot be
/// asked, which is not an error: the agent lets go of a port whose
/// interface disappeared (DEL deletes the veth), and GC detaches any port
/// it still serves for an attachment that is gone. An agent that is up and refuses is code 11,
/// so that the runtime retries DEL rather than leave the pod's IP claimed
/// by a stale port.
pub fn detach(socket: &Path, container_id: &str, ifname: &str) -> Result<(), CniError> {
    match ports::detach(socket, container_id, ifname) {
        Ok(_) => Ok(()),
        Err(e) if is_down(&e) => Ok(()),
        Err(e) => Err(CniError::TryAgain(format!(
            "the agent did not detach {container_id}/{ifname}: {e}"
        ))),
    }
}

/// Every attachment the agent serves.
pub fn attachments(socket: &Path) -> Result<PortsView, CniError> {
    ports::attachments(socket).map_err(error)
}
