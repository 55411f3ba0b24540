//! A PostgreSQL cluster of the test's own, for scenarios that restart the server (the
//! shared Postgres of the other tests is never restarted). Debian's binaries under
//! `/usr/lib/postgresql/<version>/bin` (`initdb`, `pg_ctl`); the cluster lives in a temp
//! folder with its own loopback port and socket folder. PostgreSQL refuses to run as
//! root, so as root every server command goes through `runuser -u postgres`.
//!
//! A missing binary FAILS the test with the install command (`scripts/services.sh`
//! installs `postgresql`); nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::temp_dir;

/// A running cluster; stopped (`pg_ctl stop -m immediate`) when dropped.
pub struct PgCluster {
    /// `/usr/lib/postgresql/<version>/bin`.
    pub bin: PathBuf,
    /// The data folder.
    pub data: PathBuf,
    /// The loopback TCP port it listens on.
    pub port: u16,
    /// Folder of the server log (`postgres.log`) and the socket folder (`sock/`).
    pub dir: PathBuf,
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb` and `pg_ctl`
/// (`MASTOMEDIA_TEST_PG_BIN` overrides).
fn pg_bin() -> PathBuf {
    if let Ok(b) = std::env::var("MASTOMEDIA_TEST_PG_BIN") {
        return PathBuf::from(b);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|f| f.1).unwrap_or_else(|| {
        panic!(
            "the Postgres-restart scenario needs Debian's initdb and pg_ctl under \
             /usr/lib/postgresql/<version>/bin: `apt-get install -y postgresql` \
             (scripts/services.sh does it) or set MASTOMEDIA_TEST_PG_BIN"
        )
    })
}

impl PgCluster {
    /// `initdb` (trust auth, superuser `postgres`, no fsync) and start on a free port.
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = temp_dir("pgcluster");
        let data = dir.join("data");
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown the cluster folder");
            assert!(status.success(), "chown {} to postgres", dir.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free loopback port")
            .port();
        let c = Self {
            bin,
            data,
            port,
            dir,
        };
        c.run(
            "initdb",
            &[
                "-D",
                c.data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        c.pg_ctl(&["start"]);
        c
    }

    /// Runs `bin/<tool> args` as the postgres user (as root) or as ourselves; panics with
    /// its output and the server log when it fails.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\n{}\nlog:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `pg_ctl <action> -w` with this cluster's port, socket folder and log (`action` is
    /// `start`, or `restart -m fast|immediate`).
    pub fn pg_ctl(&self, action: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self.dir.join("sock").display()
        );
        let log = self.dir.join("postgres.log");
        let mut args = vec![
            "-D",
            self.data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "-t",
            "60",
        ];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }

    /// Superuser URL of its `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The data folder (for messages).
    pub fn data(&self) -> &Path {
        &self.data
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args([
                "-D",
                self.data.to_str().unwrap(),
                "stop",
                "-m",
                "immediate",
                "-w",
            ])
            .current_dir(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
