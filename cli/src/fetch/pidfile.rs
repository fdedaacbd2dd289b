//! `--signal SIG --pid-file F`: telling a server that reloads on a signal that
//! its files changed, without letting the pid file's writer aim the signal.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// The signals a sidecar may send to tell a server to reload. `KILL` and `STOP`
/// are not among them: they reload nothing.
const SIGNALS: &[(&str, rustix::process::Signal)] = &[
    ("HUP", rustix::process::Signal::HUP),
    ("TERM", rustix::process::Signal::TERM),
    ("INT", rustix::process::Signal::INT),
    ("QUIT", rustix::process::Signal::QUIT),
    ("USR1", rustix::process::Signal::USR1),
    ("USR2", rustix::process::Signal::USR2),
    ("WINCH", rustix::process::Signal::WINCH),
    ("CONT", rustix::process::Signal::CONT),
];

pub fn parse_signal(text: &str) -> Result<rustix::process::Signal, String> {
    let name = text.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            format!("unknown signal {text:?}; use one of {}", names.join(", "))
        })
}

/// The process id in a pid file: one positive decimal number greater than 1.
///
/// The file is often writable by the workload, and the sidecar often runs as
/// root, so its content is untrusted: `-1` would signal every process the
/// sidecar may signal (`kill(-1, SIG)`), `0` its own process group, a negative
/// number a process group, and `1` the init process.
pub fn read_pid_file(path: &Path) -> Result<rustix::process::Pid> {
    let (text, _) = read_owned(path)
        .with_context(|| format!("--pid-file {}: cannot read it", path.display()))?;
    parse_pid(path, &text)
}

fn parse_pid(path: &Path, text: &str) -> Result<rustix::process::Pid> {
    let trimmed = text.trim();
    let pid: i32 = trimmed
        .parse()
        .ok()
        .filter(|_| trimmed.bytes().all(|b| b.is_ascii_digit()))
        .with_context(|| {
            format!(
                "--pid-file {}: {trimmed:?} is not a process id",
                path.display()
            )
        })?;
    if pid <= 1 {
        bail!(
            "--pid-file {}: pid {pid} is not allowed (it must be greater than 1)",
            path.display()
        );
    }
    rustix::process::Pid::from_raw(pid)
        .with_context(|| format!("--pid-file {}: {pid} is not a process id", path.display()))
}

/// Signals the process the pid file names, if whoever owns the pid file may
/// name it.
///
/// A pid file owned by another user than root is that user's word, so it may
/// only name that user's processes: a workload that can write its server's pid
/// file cannot make a root sidecar kill the kubelet. The signal goes through a
/// pidfd taken before the check, so a pid reused in between gets nothing.
pub fn signal_pid_file(pid_file: &Path, sig: rustix::process::Signal) -> Result<()> {
    let shown = pid_file.display();
    let (text, owner) =
        read_owned(pid_file).with_context(|| format!("--pid-file {shown}: cannot read it"))?;
    let pid = parse_pid(pid_file, &text)?;
    let raw = pid.as_raw_nonzero();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .with_context(|| format!("--pid-file {shown}: no process {raw}"))?;
    let (real, effective) = lanyard_agent::peer::real_and_effective_uid(raw.get())
        .with_context(|| format!("--pid-file {shown}: no process {raw}"))?;
    if owner != 0 && real != owner && effective != owner {
        bail!(
            "--pid-file {shown}: the file belongs to uid {owner}, but process {raw} runs as uid {effective}; not signalling it"
        );
    }
    rustix::process::pidfd_send_signal(&pidfd, sig)
        .with_context(|| format!("could not signal pid {raw} with {sig:?}"))
}

/// The text of a regular file, read without following a symlink, and whose
/// word it is: its owner, or, for a root-owned file in a directory another
/// user owns (who could have put it there), that user.
fn read_owned(path: &Path) -> std::io::Result<(String, u32)> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // O_NOFOLLOW: a symlink is refused by the open itself, so nothing can be
    // swapped in between a check and the open. O_NONBLOCK: a FIFO put in the
    // file's place cannot hang the sidecar in open(); it is then refused as
    // not a regular file by the fstat below.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(super::files::libc_flags())
        .open(path)
        .map_err(|e| {
            // O_NOFOLLOW's refusal (ELOOP) reads "too many levels of symbolic
            // links"; say what it means here.
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                std::io::Error::other("a symlink, which is not accepted")
            } else {
                e
            }
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a symlink is not accepted)",
        ));
    }
    let mut text = String::new();
    f.by_ref().take(64).read_to_string(&mut text)?;
    let dir_owner = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .and_then(|d| std::fs::metadata(d).ok())
        .map_or(0, |m| m.uid());
    let owner = if meta.uid() == 0 {
        dir_owner
    } else {
        meta.uid()
    };
    Ok((text, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_name_one_process_greater_than_1() {
        let dir = std::env::temp_dir().join(format!("lanyard-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pid");
        for (text, ok) in [
            ("4242\n", true),
            (" 77 ", true),
            ("-1", false),
            ("-999999", false),
            ("0", false),
            ("1", false),
            ("+5", false),
            ("12 13", false),
            ("abc", false),
            ("", false),
            ("99999999999", false),
        ] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_pid_file(&f).is_ok(), ok, "{text:?}");
        }
        let err = read_pid_file(&dir.join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pid_file_is_read_only_as_a_regular_file_and_owned_by_its_directory() {
        let dir = std::env::temp_dir().join(format!("lanyard-pidown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pid");
        std::fs::write(&f, "4242").unwrap();
        let (text, owner) = read_owned(&f).unwrap();
        assert_eq!(text, "4242");
        assert_eq!(owner, rustix::process::geteuid().as_raw());
        // A symlink to a file someone else wrote is not read.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let err = read_owned(&link).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(read_pid_file(&link).is_err());
        // A FIFO in its place neither hangs the open nor is read.
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = read_owned(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(parse_signal("HUP"), Ok(rustix::process::Signal::HUP));
        assert_eq!(parse_signal("sighup"), Ok(rustix::process::Signal::HUP));
        assert_eq!(parse_signal("USR1"), Ok(rustix::process::Signal::USR1));
        let err = parse_signal("BOGUS").unwrap_err();
        assert!(
            err.contains("unknown signal") && err.contains("HUP"),
            "{err}"
        );
        assert!(parse_signal("KILL").is_err());
        assert!(parse_signal("-1").is_err());
    }
}
