//! Test harness: real PostgreSQL (a fresh database per test, loaded from our Mastodon
//! schema fixtures) and a real S3 server on loopback (moto behind the fault-injecting,
//! SigV4-checking proxy of `tests/support/s3server.py`), plus helpers to seed rows and
//! objects and to run the `mastomedia` binary.
//!
//! A missing service makes the test FAIL with a message saying how to start it; nothing
//! is skipped.

#![allow(dead_code)]

pub mod backend;
pub mod certlab;
pub mod invariants;
pub mod pgcluster;
pub mod seed;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

/// Credentials the proxy accepts.
pub const ACCESS_KEY: &str = "mastomedia-test";
/// Secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "mastomedia-test-secret";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn admin_url() -> String {
    std::env::var("MASTOMEDIA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Which schema fixture to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mastodon {
    /// `tests/fixtures/mastodon-4.2.sql`.
    V4_2,
    /// `tests/fixtures/mastodon-4.6.sql`.
    V4_6,
}

/// A scratch database with Mastodon's schema.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// Pool connected to it (as the superuser).
    pub pool: PgPool,
    /// Connection URL for an env file.
    pub url: String,
    /// Superuser URL of the server's `postgres` database (where it was created from).
    pub admin_url: String,
}

impl TestDb {
    /// Creates a fresh database from the fixture, with its `TimeZone` set to `time_zone`
    /// (tests use a non-UTC zone: the cutoff must not shift with it).
    pub async fn new(version: Mastodon, time_zone: &str) -> Self {
        Self::new_at(&admin_url(), version, time_zone).await
    }

    /// Like [`TestDb::new`], on the PostgreSQL server of `admin_url` (a superuser URL to
    /// its `postgres` database): the Postgres-restart scenario's own cluster.
    pub async fn new_at(admin_url: &str, version: Mastodon, time_zone: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required at {admin_url} ({e}). Start it with `bash scripts/services.sh` \
                     or set MASTOMEDIA_TEST_DATABASE_URL"
                )
            });
        let name = unique("mmtest").replace('-', "_");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        admin
            .execute(format!("ALTER DATABASE {name} SET timezone TO '{time_zone}'").as_str())
            .await
            .expect("set time zone");
        admin.close().await;
        let opts: PgConnectOptions = admin_url.parse().expect("admin url");
        let opts = opts.database(&name);
        let url = opts.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .expect("connect to test database");
        let fixture = match version {
            Mastodon::V4_2 => "mastodon-4.2.sql",
            Mastodon::V4_6 => "mastodon-4.6.sql",
        };
        let sql = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(fixture),
        )
        .expect("read fixture");
        sqlx::raw_sql(&sql)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("load {fixture}: {e}"));
        Self {
            name,
            pool,
            url,
            admin_url,
        }
    }

    /// Drops the database (call at the end of a passing test).
    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(admin) = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await
        {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }

    /// A canonical text dump of every row of `table`, ordered by id, for "nothing
    /// changed" assertions.
    pub async fn dump(&self, table: &str) -> Vec<String> {
        sqlx::query_scalar::<_, String>(&format!(
            "SELECT row_to_json(t)::text FROM {table} t ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .expect("dump table")
    }
}

/// The shared S3 server of this test process.
pub struct S3Server {
    /// Proxy endpoint (SigV4 checked, faults injectable): what the tool talks to.
    pub proxy: String,
    /// moto itself (no checks): for seeding and inspecting.
    pub moto: String,
    _child: Mutex<Child>,
}

/// Starts (once per process) `tests/support/s3server.py` with the venv's python. The
/// server exits when this process ends (it watches its stdin).
pub fn s3() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let python = std::env::var("MASTOMEDIA_TEST_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/.cache/mastomedia/venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3server.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the S3 test server needs {python} with moto ({e}). Run `bash scripts/services.sh` \
                     or set MASTOMEDIA_TEST_PYTHON"
                )
            });
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read server banner");
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            panic!("the S3 test server did not start (banner {line:?}: {e}); is moto installed in {python}?")
        });
        S3Server {
            proxy: v["proxy"].as_str().expect("proxy url").to_owned(),
            moto: v["moto"].as_str().expect("moto url").to_owned(),
            _child: Mutex::new(child),
        }
    })
}

/// An S3 client for seeding and inspecting, straight to moto (or via the proxy).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A fresh bucket on the shared server.
pub struct TestBucket {
    /// Bucket name.
    pub name: String,
    /// Client straight to moto.
    pub client: aws_sdk_s3::Client,
}

impl TestBucket {
    /// Turns S3 versioning on for the bucket (deletes then keep noncurrent versions and
    /// leave delete markers).
    pub async fn enable_versioning(&self) {
        self.client
            .put_bucket_versioning()
            .bucket(&self.name)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("enable versioning");
    }

    /// Creates a uniquely named bucket.
    pub async fn new() -> Self {
        let server = s3();
        let name = unique("mm").to_lowercase();
        let client = s3_client(&server.moto);
        client
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        Self { name, client }
    }

    /// Puts `body` at `key`.
    pub async fn put(&self, key: &str, body: &[u8]) {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    /// Puts every `(key, body)` at once straight into moto's backend through the proxy's
    /// control API (`POST /__objects/<bucket>` of `tests/support/s3server.py`: no HTTP
    /// request per object, none counted in the stats): seeds 10k+ objects in seconds.
    /// Bodies must be UTF-8 text.
    pub fn put_many(&self, objects: &[(String, Vec<u8>)]) {
        for part in objects.chunks(5000) {
            let list: Vec<(&str, &str)> = part
                .iter()
                .map(|(k, b)| (k.as_str(), std::str::from_utf8(b).expect("text body")))
                .collect();
            let body = serde_json::json!({ "objects": list }).to_string();
            let (status, answer) = http(
                &s3().proxy,
                "POST",
                &format!("/__objects/{}", self.name),
                Some(&body),
            );
            assert_eq!(status, 200, "bulk put: {answer}");
        }
    }

    /// Deletes `keys` straight on moto (`DeleteObjects`, 1000 at a time), behind the
    /// proxy's back: what an admin or another tool removed before a run.
    pub async fn delete_behind_the_back(&self, keys: &[String]) {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for part in keys.chunks(1000) {
            let objects = part
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .expect("object id")
                })
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("delete");
            let out = self
                .client
                .delete_objects()
                .bucket(&self.name)
                .delete(delete)
                .send()
                .await
                .expect("delete objects on moto");
            assert!(out.errors().is_empty(), "{:?}", out.errors());
        }
    }

    /// Every key in the bucket.
    pub async fn keys(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .set_continuation_token(token)
                .send()
                .await
                .expect("list");
            for o in page.contents() {
                out.insert(o.key().unwrap_or_default().to_owned());
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return out,
            }
        }
    }

    /// Sets the proxy's fault configuration for this bucket.
    pub fn faults(&self, config: serde_json::Value) {
        let (status, body) = http(
            &s3().proxy,
            "PUT",
            &format!("/__faults/{}", self.name),
            Some(&config.to_string()),
        );
        assert_eq!(status, 200, "set faults: {body}");
    }

    /// The proxy's request statistics for this bucket.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http(&s3().proxy, "GET", &format!("/__stats/{}", self.name), None);
        assert_eq!(status, 200, "stats: {body}");
        serde_json::from_str(&body).expect("stats json")
    }

    /// Resets the proxy's request statistics for this bucket.
    pub fn reset_stats(&self) {
        let (status, _) = http(
            &s3().proxy,
            "DELETE",
            &format!("/__stats/{}", self.name),
            None,
        );
        assert_eq!(status, 200);
    }
}

/// A minimal HTTP/1.1 request to the proxy's control API.
pub fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).expect("connect to control API");
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

/// The state folder (`XDG_STATE_HOME`) every run of [`mastomedia_env`] and
/// `invariants::command` gets unless the test gives its own: one temporary folder per test
/// process, so default journals and run records never land in the developer's home.
pub fn state_home() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| temp_dir("state-home"))
}

/// A scratch folder under the system temp dir.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// Writes an env file for an S3-backed instance and returns its path.
pub fn s3_env_file(db: &TestDb, bucket: &str, extra: &[(&str, &str)]) -> PathBuf {
    let dir = temp_dir("env");
    let mut text = format!(
        "# written by the test harness\nLOCAL_DOMAIN=example.social\nDATABASE_URL={}\nS3_ENABLED=true\nS3_BUCKET={bucket}\n\
         S3_REGION=us-east-1\nS3_ENDPOINT={}\nS3_PROTOCOL=http\nAWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n",
        db.url,
        s3().proxy
    );
    for (k, v) in extra {
        text.push_str(&format!("{k}={v}\n"));
    }
    let path = dir.join(".env.production");
    std::fs::write(&path, text).expect("write env file");
    path
}

/// Writes an env file for a filesystem instance rooted at `root`.
pub fn fs_env_file(db: &TestDb, root: &Path) -> PathBuf {
    let dir = temp_dir("env");
    let text = format!(
        "DATABASE_URL={}\nPAPERCLIP_ROOT_PATH={}\n",
        db.url,
        root.display()
    );
    let path = dir.join(".env.production");
    std::fs::write(&path, text).expect("write env file");
    path
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Parses stdout as JSON (`--json` runs).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `mastomedia` with `args` and a clean environment (only PATH and HOME kept, so the
/// developer's own variables cannot leak in).
pub fn mastomedia(args: &[&str]) -> Run {
    mastomedia_env(args, &[])
}

/// Like [`mastomedia`], with extra environment variables.
pub fn mastomedia_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.args(args).env_clear();
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("MASTOMEDIA_STATUS_INTERVAL", "3600");
    cmd.env("XDG_STATE_HOME", state_home());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run mastomedia");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Debian's PgBouncer (`/usr/sbin/pgbouncer`), started once per test process on a free
/// loopback port in front of the test PostgreSQL, in `pool_mode = transaction` (the set-up
/// Mastodon's docs recommend), `auth_type = trust`. It runs as the `postgres` user
/// (PgBouncer refuses root) under a shell that stops it when this process ends.
pub struct PgBouncer {
    /// The loopback port it listens on.
    pub port: u16,
    /// Its folder (config, log).
    pub dir: PathBuf,
    _child: Mutex<Child>,
}

impl PgBouncer {
    /// A `postgres://` URL reaching `db` through the pooler.
    pub fn url(&self, db: &TestDb) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db.name)
    }

    /// The pooler's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

/// The PgBouncer of this test process (started on first use). A missing binary FAILS the
/// test with the install command (`scripts/services.sh` installs it); nothing is skipped.
pub fn pgbouncer() -> &'static PgBouncer {
    static BOUNCER: OnceLock<PgBouncer> = OnceLock::new();
    BOUNCER.get_or_init(start_pgbouncer)
}

fn start_pgbouncer() -> PgBouncer {
    let bin = std::env::var("MASTOMEDIA_TEST_PGBOUNCER")
        .unwrap_or_else(|_| "/usr/sbin/pgbouncer".to_owned());
    if !Path::new(&bin).is_file() {
        panic!(
            "PgBouncer is required for the pgbouncer tests at {bin}: `apt-get install -y pgbouncer` \
             (scripts/services.sh does it) or set MASTOMEDIA_TEST_PGBOUNCER"
        );
    }
    let admin: PgConnectOptions = admin_url().parse().expect("admin url");
    let pg_host = admin.get_host().to_owned();
    let pg_port = admin.get_port();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port();
    let dir = temp_dir("pgbouncer");
    // PgBouncer drops to the postgres user before opening its log.
    let mut perms = std::fs::metadata(&dir).expect("dir").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(&dir, perms).expect("chmod pgbouncer dir");
    std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
    let config = format!(
        "[databases]\n* = host={pg_host} port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {userlist}\n\
         pool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 200\n\
         ignore_startup_parameters = extra_float_digits,search_path\nlogfile = {log}\n\
         server_login_retry = 1\n",
        userlist = dir.join("userlist.txt").display(),
        log = dir.join("pgbouncer.log").display(),
    );
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, config).expect("write pgbouncer.ini");
    let child = Command::new("sh")
        .arg("-c")
        .arg("\"$@\" & c=$!; cat >/dev/null; kill $c 2>/dev/null; wait $c")
        .arg("sh")
        .arg(&bin)
        .arg("-u")
        .arg("postgres")
        .arg(&ini)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            panic!(
                "PgBouncer did not listen on 127.0.0.1:{port} within 20 s; log:\n{}",
                std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    PgBouncer {
        port,
        dir,
        _child: Mutex::new(child),
    }
}

/// The Paperclip partition of an 18-digit id: six groups of three digits
/// (`mastodon-storage.md` §3.4), written here independently of the code under test.
pub fn partition18(id: i64) -> String {
    let digits = id.to_string();
    assert_eq!(digits.len(), 18, "helper only handles 18-digit ids");
    digits
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("/")
}
