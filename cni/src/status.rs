//! STATUS: whether the plugin can attach pods now, i.e. whether the agent
//! is ready. Ready: exit 0 and no output. Otherwise code 50 with why.

use api::{self, ApiError};

use crate::error::CniError;
use crate::Request;

/// Runs STATUS.
pub fn status(request: &Request) -> Result<(), CniError> {
    let socket = &request.conf.agent_socket;
    let not_available =
        |why: String| CniError::NotAvailable(format!("podswitch-cni cannot attach pods: {why}"));
    match api::ready(socket) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let why = api::status(socket)
                .ok()
                .and_then(|s| s.not_ready_reason().map(str::to_string))
                .unwrap_or_else(|| "it says it is not ready".into());
            Err(not_available(format!(
                "the agent at {} is not ready ({why})",
                socket.display()
            )))
        }
        Err(e @ ApiError::NotRunning { .. }) => Err(not_available(e.to_string())),
        Err(e) => Err(not_available(format!("cannot ask the agent: {e}"))),
    }
}
