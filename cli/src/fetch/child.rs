//! The `--exec` child: started once every file is written, restarted after each
//! update, and stopped the way a supervisor stops a server: SIGTERM, then
//! SIGKILL once the grace period is over.

use std::time::Duration;

use anyhow::{Context as _, Result};

/// The command to run, and the process running it (if any).
#[derive(Debug)]
pub struct Child {
    argv: Vec<String>,
    grace: Duration,
    running: Option<tokio::process::Child>,
}

impl Child {
    /// A child for `argv` (empty: no child), stopped with `grace`.
    pub fn new(argv: Vec<String>, grace: Duration) -> Self {
        Self {
            argv,
            grace,
            running: None,
        }
    }

    /// Whether `--exec` was given.
    pub fn wanted(&self) -> bool {
        !self.argv.is_empty()
    }

    /// Stops the running child, if any, and starts a new one.
    pub async fn restart(&mut self) -> Result<()> {
        if self.argv.is_empty() {
            return Ok(());
        }
        self.stop().await;
        let (cmd, args) = (&self.argv[0], &self.argv[1..]);
        let child = tokio::process::Command::new(cmd)
            .args(args)
            // If the sidecar is stopped while it waits out a restart's grace
            // period, the future holding the old child is dropped: that must
            // not leave the child running unsupervised.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {cmd}"))?;
        self.running = Some(child);
        Ok(())
    }

    /// Waits until the running child exits; never, while none runs.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        match self.running.as_mut() {
            Some(c) => match c.wait().await {
                Ok(status) => {
                    self.running = None;
                    status
                }
                // wait(2) failing leaves nothing to wait for: count it as gone.
                Err(_) => {
                    self.running = None;
                    std::os::unix::process::ExitStatusExt::from_raw(1 << 8)
                }
            },
            None => std::future::pending().await,
        }
    }

    /// SIGTERM, up to `grace` for the child to exit, then SIGKILL. The child is
    /// not reaped before the signal, so its pid cannot have been reused.
    pub async fn stop(&mut self) {
        let Some(mut c) = self.running.take() else {
            return;
        };
        if let Some(pid) = c
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if tokio::time::timeout(self.grace, c.wait()).await.is_ok() {
                return;
            }
            eprintln!(
                "lanyard fetch: the child did not exit within {:?} of SIGTERM; killing it",
                self.grace
            );
        }
        let _ = c.kill().await;
    }
}
