//! Standard output that a closed pipe cannot crash.
//!
//! `std::println!` panics when stdout is a pipe whose reader went away
//! (`lanyard token view T | head -1`). Rust ignores SIGPIPE, so the write fails
//! with `EPIPE` instead of ending the process; this crate's `println!` (defined
//! in `main.rs`, shadowing std's everywhere in the crate) ends it quietly, as
//! a Unix tool would, and reports any other write error on one line.

use std::io::Write as _;

/// Writes one formatted line to stdout, or exits: 0 when the reader is gone
/// (nothing it wanted is lost), 2 when stdout cannot be written.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        gone(&e);
    }
}

fn gone(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("lanyard: error: cannot write to standard output: {e}");
    std::process::exit(2);
}
