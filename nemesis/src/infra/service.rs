//! One service as a child process of its own binary.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

use super::run;

/// One service as a child process of its own binary, restartable with the same or changed settings.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    binary: PathBuf,
    pub env: BTreeMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    pub fn new(name: &'static str, binaries: &Path, env: BTreeMap<String, String>, logs: &Path) -> Self {
        let binary = binaries.join(name);
        assert!(binary.exists(), "{} is not built: run the workspace's test command (scripts/test)", binary.display());
        Self { name, binary, env, log: logs.join(format!("{name}.log")), child: None }
    }

    /// The `n`th instance of a service (from 2), logging to a file of its own.
    pub fn instance(name: &'static str, n: usize, binaries: &Path, env: BTreeMap<String, String>, logs: &Path) -> Self {
        Self { log: logs.join(format!("{name}-{n}.log")), ..Self::new(name, binaries, env, logs) }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL: no chance to ack, flush or release anything.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then how long it took to exit and whether it exited cleanly (None: not within `patience`).
    pub async fn terminate(&mut self, patience: Duration) -> Option<(Duration, bool)> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        let started = Instant::now();
        let _ = StdCommand::new("kill").args(["-TERM", &pid.to_string()]).status();
        match tokio::time::timeout(patience, child.wait()).await {
            Ok(Ok(status)) => Some((started.elapsed(), status.success())),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the running process: a stall it does not know about, as a long
    /// garbage-collection pause or a frozen VM gives, while its connections and leases go stale.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            run(StdCommand::new("kill").args([format!("-{signal}"), pid.to_string()]), "signalling a service");
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }
}
