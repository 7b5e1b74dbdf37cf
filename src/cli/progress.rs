//! Progress bars of the commands that take a while (backup, restore, roll forward, reload):
//! drawn on stderr only when both stdout and stderr are terminals, so a command run by cron,
//! a script or a pipe writes no bar and no escape code into its output.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress bars are drawn (both stdout and stderr are terminals).
pub fn drawn() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// Where bars draw: stderr, or nowhere when `drawn()` is false.
pub fn target() -> ProgressDrawTarget {
    if drawn() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar over `total` bytes, saying `what` it does.
pub fn bytes(total: u64, what: &str) -> ProgressBar {
    bar(
        total,
        what,
        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
}

/// A bar over `total` log records, saying `what` it does.
pub fn records(total: u64, what: &str) -> ProgressBar {
    bar(
        total,
        what,
        "{msg:>12} [{bar:30}] {human_pos}/{human_len} records eta {eta}",
    )
}

fn bar(total: u64, what: &str, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("#>.");
    ProgressBar::with_draw_target(Some(total), target())
        .with_style(style)
        .with_message(what.to_string())
}
