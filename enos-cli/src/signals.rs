//! Ctrl-C and SIGTERM for the commands that have work to finish (`listen`, `replay`,
//! `integration post`): the first signal asks them to stop cleanly; a second one ends the
//! process at once (exit code 130). Other commands keep the default: the signal ends them.

use crate::error::CliError;

/// Calls `stop` at the first SIGINT or SIGTERM, on a thread of its own.
///
/// # Errors
///
/// [`CliError::Io`] when the handler cannot be installed.
#[cfg(unix)]
pub fn on_interrupt(stop: impl Fn() + Send + 'static) -> Result<(), CliError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| CliError::io("installing the Ctrl-C handler", e))?;
    std::thread::Builder::new()
        .name("enos-signals".into())
        .spawn(move || {
            let mut seen = 0u32;
            for _ in signals.forever() {
                seen += 1;
                if seen == 1 {
                    stop();
                } else {
                    std::process::exit(i32::from(crate::error::exit::INTERRUPTED));
                }
            }
        })
        .map_err(|e| CliError::io("starting the Ctrl-C thread", e))?;
    Ok(())
}

/// Without Unix signals, Ctrl-C ends the process as it always does; a replay's checkpoint
/// is still whole (it is renamed into place), so `--resume` still works.
///
/// # Errors
///
/// None.
#[cfg(not(unix))]
pub fn on_interrupt(_stop: impl Fn() + Send + 'static) -> Result<(), CliError> {
    Ok(())
}
