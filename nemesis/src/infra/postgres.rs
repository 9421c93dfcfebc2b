//! A private PostgreSQL cluster (trust auth, free port) and its synchronous standby.

use std::{
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
};

use super::{free_port, run};

/// Sessions each private server takes (`max_connections`).
pub const MAX_CONNECTIONS: u32 = 200;

/// A PostgreSQL cluster of the suite's own, trust auth, on a free port.
#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    pub fn create(dir: &Path) -> Self {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .expect("a PostgreSQL server install (/etc/postgresql/<version>)");
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let dir = dir.join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        run(StdCommand::new("chown").args(["-R", "postgres"]).arg(&dir), "chown the cluster directory");
        run(
            StdCommand::new("runuser")
                .current_dir(&dir)
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
                .stdout(Stdio::null()),
            "initdb",
        );
        let pg = Self { port: free_port(), bin, dir };
        pg.start();
        pg
    }

    /// Turns TLS on (`ssl = on`, the certificate and key given as PEM) and refuses every TCP connection that
    /// is not TLS (`hostnossl … reject` in `pg_hba.conf`), then restarts the server.
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        let data = self.dir.join("data");
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        run(
            StdCommand::new("chown").arg("postgres").arg(data.join("server.crt")).arg(data.join("server.key")),
            "chown the server's certificate",
        );
        run(StdCommand::new("chmod").arg("600").arg(data.join("server.key")), "chmod the server's key");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n",
        )
        .unwrap();
        self.stop();
        self.start();
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> StdCommand {
        let mut cmd = StdCommand::new("runuser");
        // From the suite's own directory: the caller's may be gone by teardown.
        cmd.current_dir(&self.dir)
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"));
        cmd.args(args).stdout(Stdio::null());
        cmd
    }

    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("starting the private PostgreSQL: {e}");
        }
    }

    /// Starts the server again, or says why it did not start.
    pub fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={MAX_CONNECTIONS}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.try_pg_ctl(&["-o", &options, "-l", &log, "-w", "start"])
    }

    /// A fast shutdown, or says why it failed.
    pub fn try_stop(&self) -> Result<(), String> {
        self.try_pg_ctl(&["-m", "fast", "-w", "stop"])
    }

    fn try_pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let out = self.pg_ctl(args).output().map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    /// A fast shutdown: sessions are cut, as in a database restart.
    pub fn stop(&self) {
        run(&mut self.pg_ctl(&["-m", "fast", "-w", "stop"]), "stopping the private PostgreSQL");
    }
}

impl Postgres {
    /// A streaming standby of `primary` (`pg_basebackup -R`) in `dir/<name>`, started on a free port, and the
    /// primary then made to wait for it on every commit (`synchronous_standby_names = '*'`, set with ALTER
    /// SYSTEM; [`Postgres::promote`] resets it). Set only once the standby streams: set before, every commit
    /// would wait for the whole base backup.
    pub fn synchronous_standby(primary: &Self, dir: &Path, name: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        run(StdCommand::new("chown").args(["-R", "postgres"]).arg(&dir), "chown the standby's directory");
        run(
            StdCommand::new("runuser")
                .current_dir(&dir)
                .args(["-u", "postgres", "--"])
                .arg(primary.bin.join("pg_basebackup"))
                // `-c fast`: a spread checkpoint would hold the copy for minutes under load.
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary.port.to_string(),
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                ])
                .arg("-D")
                .arg(dir.join("data"))
                .stdout(Stdio::null()),
            "pg_basebackup of the standby",
        );
        let standby = Self { port: free_port(), bin: primary.bin.clone(), dir };
        standby.start();
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        primary.sql("SELECT pg_reload_conf()");
        standby
    }

    /// Runs one statement as postgres through psql (for settings and promotion).
    pub fn sql(&self, statement: &str) -> String {
        self.try_sql(statement).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Postgres::sql`], for a server that may be down or slow: its output, or what went wrong.
    pub fn try_sql(&self, statement: &str) -> Result<String, String> {
        let out = StdCommand::new("runuser")
            .current_dir(&self.dir)
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                statement,
            ])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("{statement}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// SIGKILL of the whole server, postmaster and backends at once, as its machine's death would be. Killing
    /// the postmaster alone is a different fault: its backends outlive it until they next wait, an orphaned
    /// backend still answers the query already in its socket, and a commit waiting for the standby ends its
    /// wait on the postmaster's death and shows its rows there, never replicated. So every process is frozen
    /// first (the postmaster, then its children, so it forks no more) and only then killed.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("the postmaster's pid file");
        let pid = pid.lines().next().unwrap_or_default().trim().to_owned();
        run(StdCommand::new("kill").args(["-STOP", &pid]), "freezing the primary's postmaster");
        let mut all = children_of(&pid);
        for child in &all {
            let _ = StdCommand::new("kill").args(["-STOP", child]).status();
        }
        all.push(pid);
        for process in &all {
            let _ = StdCommand::new("kill").args(["-KILL", process]).status();
        }
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The server's data directory's parent (its log is there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Promotes this standby, then drops its own synchronous requirement (it has no standby now), as a
    /// failover manager does: otherwise every commit on it would wait for ever.
    pub fn promote(&self) {
        run(&mut self.pg_ctl(&["-w", "promote"]), "promoting the standby");
        self.sql("ALTER SYSTEM RESET synchronous_standby_names");
        self.sql("SELECT pg_reload_conf()");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).stderr(Stdio::null()).status();
    }
}

/// The pids of `parent`'s children, from `/proc` (a `stat` line is `pid (comm) state ppid …`, and a command
/// name may hold spaces and parentheses, so the fields are read after the last `)`).
fn children_of(parent: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}
