//! `podswitch-cni`: the CNI plugin binary. Everything is in the library
//! (the `cni` library); this reads the process's environment and stdin and prints
//! the answer.

use std::io::{Read, Write};

fn main() -> std::process::ExitCode {
    let outcome = cni::run(
        |var| std::env::var(var).ok(),
        || {
            let mut stdin = Vec::new();
            std::io::stdin().read_to_end(&mut stdin)?;
            Ok(stdin)
        },
    );
    if let Some(text) = outcome.stdout {
        let mut out = std::io::stdout().lock();
        // Nothing useful is left to do if stdout is gone.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
    if outcome.success {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
