//! The certificate lab, started once per test process (like the S3 server): a test CA
//! (rcgen), Debian's `pebble` (ACME CA) and `pebble-challtestsrv` (mock DNS with CNAME and
//! CAA answers), a plain-HTTP front that serves bucket objects by `Host` on the port
//! Pebble's validator dials, a TLS front that presents whatever certificate the Linode
//! double holds for the SNI name (else the provider's wildcard, like Linode), and the
//! Linode API double. All on loopback, on free ports.
//!
//! Pebble and challtestsrv run under `sh -c '… & cat; kill'` with a piped stdin, so they
//! die with the test process. A missing `pebble` makes the test FAIL (never skip).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The bearer token the Linode double accepts.
pub const LINODE_TOKEN: &str = "linode-test-token-7f3a";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `((year, month, day), (year, month, day))`: not before, not after.
pub type Validity = ((i32, u8, u8), (i32, u8, u8));

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "mastomedia test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let pem = params.self_signed(&key).expect("ca cert").pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid from
    /// `validity.0` to `validity.1` (rcgen's defaults when `None`), and its key (PKCS#8 PEM).
    pub fn leaf(&self, names: &[&str], validity: Option<Validity>) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if let Some(((y1, m1, d1), (y2, m2, d2))) = validity {
            params.not_before = rcgen::date_time_ymd(y1, m1, d1);
            params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// One bucket as the Linode double knows it.
#[derive(Debug, Default, Clone)]
pub struct DoubleBucket {
    /// The installed chain and key.
    pub cert: Option<(String, String)>,
    /// Every chain ever accepted for this bucket.
    pub accepted: Vec<String>,
    /// Refuse (HTTP 500) any certificate not accepted before.
    pub fail_new: bool,
    /// Refuse (HTTP 500) every upload, even of a certificate accepted before.
    pub fail_all: bool,
    /// `METHOD path` of every call about this bucket.
    pub calls: Vec<String>,
}

/// The Linode API double's state.
#[derive(Debug, Default)]
pub struct LinodeDouble {
    buckets: Mutex<BTreeMap<String, DoubleBucket>>,
}

impl LinodeDouble {
    /// Registers a bucket (region `us-east`, cluster `us-east-1`).
    pub fn add_bucket(&self, label: &str) {
        self.buckets
            .lock()
            .unwrap()
            .insert(label.to_owned(), DoubleBucket::default());
    }

    /// A copy of a bucket's state.
    pub fn bucket(&self, label: &str) -> DoubleBucket {
        self.buckets
            .lock()
            .unwrap()
            .get(label)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes a bucket's state.
    pub fn with_bucket<T>(&self, label: &str, f: impl FnOnce(&mut DoubleBucket) -> T) -> T {
        let mut b = self.buckets.lock().unwrap();
        f(b.entry(label.to_owned()).or_default())
    }

    fn certified(&self, label: &str) -> Option<Arc<CertifiedKey>> {
        let (chain, key) = self.bucket(label).cert?;
        certified_key(&chain, &key).ok().map(Arc::new)
    }
}

/// The bucket's host name as the double reports it.
pub fn bucket_hostname(label: &str) -> String {
    format!("{label}.us-east-1.linodeobjects.com")
}

fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key: {e}"))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| format!("{e}"))
}

/// The lab.
pub struct Lab {
    /// The lab's folder.
    pub dir: PathBuf,
    /// The test CA (signs Pebble's TLS certificate and the fronts' fallback).
    pub ca: TestCa,
    /// PEM with the test CA and Pebble's root: pass as `--ca-file`.
    pub trust: PathBuf,
    /// Pebble's ACME directory URL.
    pub directory: String,
    /// challtestsrv's DNS server.
    pub dns: SocketAddr,
    dns_management: String,
    /// The plain-HTTP front (Pebble's validator port).
    pub http_port: u16,
    /// The TLS front.
    pub https_port: u16,
    /// The Linode double.
    pub linode: Arc<LinodeDouble>,
    /// `LINODE_API_URL` for the double.
    pub linode_url: String,
    _children: Mutex<Vec<Child>>,
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_udp_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_tcp(addr: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} did not listen on {addr} within 30 s; its log {}:\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Spawns `program args` under a shell that kills it when our stdin pipe closes.
fn spawn_watched(
    dir: &Path,
    name: &str,
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("\"$@\" & c=$!; cat >/dev/null; kill $c 2>/dev/null; wait $c")
        .arg("sh")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// The lab of this test process (started on first use).
pub fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(start)
}

fn start() -> Lab {
    for bin in ["pebble", "pebble-challtestsrv"] {
        if Command::new(bin)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            panic!(
                "{bin} is required for the certificate tests: `apt-get install -y pebble` (scripts/services.sh does it)"
            );
        }
    }
    let dir = super::temp_dir("certlab");
    let ca = TestCa::new();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let (leaf, key) = ca.leaf(&["localhost", "127.0.0.1"], None);
    std::fs::write(dir.join("leaf.pem"), &leaf).unwrap();
    std::fs::write(dir.join("leaf.key"), &key).unwrap();
    let proxy = super::s3().proxy.trim_start_matches("http://").to_owned();

    let linode = Arc::new(LinodeDouble::default());
    for f in ["filler-a", "filler-b", "filler-c"] {
        linode.add_bucket(f);
    }
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let linode_url = format!("http://{}/v4", api.local_addr().unwrap());
    {
        let linode = linode.clone();
        std::thread::spawn(move || {
            for s in api.incoming().flatten() {
                let linode = linode.clone();
                std::thread::spawn(move || serve_linode(s, &linode));
            }
        });
    }

    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = front.local_addr().unwrap().port();
    {
        let proxy = proxy.clone();
        std::thread::spawn(move || {
            for mut s in front.incoming().flatten() {
                let proxy = proxy.clone();
                std::thread::spawn(move || serve_bucket(&mut s, &proxy, None));
            }
        });
    }

    let (wild, wild_key) = ca.leaf(&["*.us-east-1.linodeobjects.com"], None);
    let fallback = Arc::new(certified_key(&wild, &wild_key).expect("fallback cert"));
    let tls_front = TcpListener::bind("127.0.0.1:0").unwrap();
    let https_port = tls_front.local_addr().unwrap().port();
    {
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(BySni {
                    linode: linode.clone(),
                    fallback,
                })),
        );
        let proxy = proxy.clone();
        std::thread::spawn(move || {
            for s in tls_front.incoming().flatten() {
                let config = config.clone();
                let proxy = proxy.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).expect("server conn");
                    let mut tls = rustls::StreamOwned::new(conn, s);
                    // The handshake runs on the first read; a client that rejects our
                    // certificate ends it there.
                    let mut first = [0u8; 1];
                    let Ok(1) = tls.read(&mut first) else { return };
                    let sni = tls.conn.server_name().map(str::to_owned);
                    let mut stream = Prefixed {
                        first: Some(first[0]),
                        inner: tls,
                    };
                    serve_bucket(&mut stream, &proxy, sni.as_deref());
                });
            }
        });
    }

    let dns_port = free_tcp_udp_port();
    let mgmt_port = free_tcp_port();
    let mut children = Vec::new();
    children.push(spawn_watched(
        &dir,
        "challtestsrv",
        "pebble-challtestsrv",
        &[
            "-dns01".into(),
            format!("127.0.0.1:{dns_port}"),
            "-http01".into(),
            String::new(),
            "-https01".into(),
            String::new(),
            "-tlsalpn01".into(),
            String::new(),
            "-management".into(),
            format!("127.0.0.1:{mgmt_port}"),
            "-defaultIPv6".into(),
            String::new(),
        ],
        &[],
    ));
    wait_tcp(
        &format!("127.0.0.1:{mgmt_port}"),
        "pebble-challtestsrv",
        &dir.join("challtestsrv.log"),
    );
    let acme_port = free_tcp_port();
    let acme_mgmt = free_tcp_port();
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{acme_mgmt}"),
            "certificate": dir.join("leaf.pem"),
            "privateKey": dir.join("leaf.key"),
            "httpPort": http_port,
            "tlsPort": free_tcp_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": 3600
        }
    });
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    children.push(spawn_watched(
        &dir,
        "pebble",
        "pebble",
        &[
            "-config".into(),
            dir.join("pebble.json").display().to_string(),
            "-dnsserver".into(),
            format!("127.0.0.1:{dns_port}"),
        ],
        // PEBBLE_WFE_NONCEREJECT stays at its default (5 %), so badNonce retries run.
        &[("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_AUTHZREUSE", "0")],
    ));
    wait_tcp(
        &format!("127.0.0.1:{acme_port}"),
        "pebble",
        &dir.join("pebble.log"),
    );
    wait_tcp(
        &format!("127.0.0.1:{acme_mgmt}"),
        "pebble management",
        &dir.join("pebble.log"),
    );
    let root = https_get(&ca.pem, &format!("127.0.0.1:{acme_mgmt}"), "/roots/0");
    assert!(root.contains("BEGIN CERTIFICATE"), "pebble root: {root}");
    let trust = dir.join("trust.pem");
    std::fs::write(&trust, format!("{}{}", ca.pem, root)).unwrap();
    Lab {
        dir,
        ca,
        trust,
        directory: format!("https://127.0.0.1:{acme_port}/dir"),
        dns: format!("127.0.0.1:{dns_port}").parse().unwrap(),
        dns_management: format!("http://127.0.0.1:{mgmt_port}"),
        http_port,
        https_port,
        linode,
        linode_url,
        _children: Mutex::new(children),
    }
}

impl Lab {
    /// POSTs `body` to challtestsrv's management `path` (`/set-cname`, `/add-caa`, ...).
    pub fn mock_dns(&self, path: &str, body: serde_json::Value) {
        let (status, text) =
            super::http(&self.dns_management, "POST", path, Some(&body.to_string()));
        assert_eq!(status, 200, "challtestsrv {path}: {text}");
    }
}

/// GET over TLS trusting `ca_pem`, blocking; returns the body.
fn https_get(ca_pem: &str, addr: &str, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or(text)
}

#[derive(Debug)]
struct BySni {
    linode: Arc<LinodeDouble>,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_owned);
        name.and_then(|n| self.linode.certified(&n))
            .or_else(|| Some(self.fallback.clone()))
    }
}

/// A stream with one byte already read.
struct Prefixed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S: Read> Read for Prefixed<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(b) = self.first.take() {
            buf[0] = b;
            return Ok(1);
        }
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Prefixed<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(s: &mut impl Read) -> Option<Request> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn respond(s: &mut impl Write, status: u16, content_type: Option<&str>, body: &[u8], head: bool) {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        out.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes());
    if !head {
        let _ = s.write_all(body);
    }
    let _ = s.flush();
}

/// Hosts whose front answers every request with a 302 to `<base><path>` (a CDN or an
/// alias host that redirects to another host), set by [`redirect_host`].
fn redirects() -> &'static Mutex<BTreeMap<String, String>> {
    static REDIRECTS: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    REDIRECTS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Makes the fronts answer requests for `host` with `302 Found`, `Location: <base><path>`.
pub fn redirect_host(host: &str, base: &str) {
    redirects()
        .lock()
        .unwrap()
        .insert(host.to_ascii_lowercase(), base.to_owned());
}

/// Serves `GET/HEAD /<key>` from the bucket named by the Host header (port stripped) or
/// the TLS SNI name, through the S3 proxy, unsigned (the tests set `allow_anonymous`).
fn serve_bucket(s: &mut (impl Read + Write), proxy: &str, sni: Option<&str>) {
    let Some(req) = read_request(s) else { return };
    let host = sni
        .map(str::to_owned)
        .or_else(|| {
            req.header("host")
                .map(|h| h.split(':').next().unwrap_or(h).to_owned())
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let target = redirects().lock().unwrap().get(&host).cloned();
    if let Some(base) = target {
        let out = format!(
            "HTTP/1.1 302 Found\r\nConnection: close\r\nLocation: {base}{}\r\nContent-Length: 0\r\n\r\n",
            req.target
        );
        let _ = s.write_all(out.as_bytes());
        let _ = s.flush();
        return;
    }
    let head = req.method == "HEAD";
    let (status, ct, body) = fetch_object(proxy, &req.method, &host, &req.target);
    respond(s, status, ct.as_deref(), &body, head);
}

fn fetch_object(
    proxy: &str,
    method: &str,
    bucket: &str,
    path: &str,
) -> (u16, Option<String>, Vec<u8>) {
    let Ok(mut up) = TcpStream::connect(proxy) else {
        return (502, None, b"proxy down".to_vec());
    };
    let _ = write!(
        up,
        "{method} /{bucket}{path} HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::new();
    let _ = up.read_to_end(&mut buf);
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (502, None, Vec::new());
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let ct = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_owned())
    });
    (status, ct, body)
}

fn json(s: &mut TcpStream, status: u16, v: serde_json::Value) {
    respond(
        s,
        status,
        Some("application/json"),
        v.to_string().as_bytes(),
        false,
    );
}

fn bucket_json(label: &str) -> serde_json::Value {
    serde_json::json!({
        "label": label,
        "region": "us-east",
        "cluster": "us-east-1",
        "hostname": bucket_hostname(label),
        "created": "2026-01-01T00:00:00",
        "objects": 0,
        "size": 0
    })
}

/// The Linode API double: bearer token, paginated bucket list (2 per page), one bucket,
/// and GET/POST/DELETE `…/ssl`, with the upload failure modes of [`DoubleBucket::fail_new`]
/// and [`DoubleBucket::fail_all`].
fn serve_linode(mut s: TcpStream, linode: &LinodeDouble) {
    let Some(req) = read_request(&mut s) else {
        return;
    };
    if req.header("authorization") != Some(&format!("Bearer {LINODE_TOKEN}")) {
        return json(
            &mut s,
            401,
            serde_json::json!({"errors": [{"reason": "Invalid Token"}]}),
        );
    }
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["v4", "object-storage", "buckets"]) => {
            let page: usize = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("page="))
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1);
            let labels: Vec<String> = linode.buckets.lock().unwrap().keys().cloned().collect();
            let per = 2;
            let pages = labels.len().div_ceil(per).max(1);
            let data: Vec<serde_json::Value> = labels
                .iter()
                .skip((page - 1) * per)
                .take(per)
                .map(|l| bucket_json(l))
                .collect();
            json(
                &mut s,
                200,
                serde_json::json!({"data": data, "page": page, "pages": pages, "results": labels.len()}),
            );
        }
        ("GET", ["v4", "object-storage", "buckets", _region, label]) => {
            if linode.buckets.lock().unwrap().contains_key(*label) {
                json(&mut s, 200, bucket_json(label));
            } else {
                json(
                    &mut s,
                    404,
                    serde_json::json!({"errors": [{"reason": "Not found"}]}),
                );
            }
        }
        (method, ["v4", "object-storage", "buckets", _region, label, "ssl"]) => {
            let label = label.to_string();
            if !linode.buckets.lock().unwrap().contains_key(&label) {
                return json(
                    &mut s,
                    404,
                    serde_json::json!({"errors": [{"reason": "Not found"}]}),
                );
            }
            linode.with_bucket(&label, |b| b.calls.push(format!("{method} ssl")));
            match method {
                "GET" => {
                    let has = linode.bucket(&label).cert.is_some();
                    json(&mut s, 200, serde_json::json!({"ssl": has}));
                }
                "DELETE" => {
                    linode.with_bucket(&label, |b| b.cert = None);
                    json(&mut s, 200, serde_json::json!({}));
                }
                "POST" => {
                    let body: serde_json::Value =
                        serde_json::from_slice(&req.body).unwrap_or_default();
                    let (Some(cert), Some(key)) =
                        (body["certificate"].as_str(), body["private_key"].as_str())
                    else {
                        return json(
                            &mut s,
                            400,
                            serde_json::json!({"errors": [{"field": "certificate", "reason": "certificate and private_key are required"}]}),
                        );
                    };
                    if let Err(e) = certified_key(cert, key) {
                        return json(
                            &mut s,
                            400,
                            serde_json::json!({"errors": [{"field": "certificate", "reason": format!("invalid certificate or key: {e}")}]}),
                        );
                    }
                    let result = linode.with_bucket(&label, |b| {
                        if b.cert.is_some() {
                            return Err("a certificate is already installed; delete it first");
                        }
                        if b.fail_all || (b.fail_new && !b.accepted.iter().any(|c| c == cert)) {
                            return Err("injected upload failure");
                        }
                        b.cert = Some((cert.to_owned(), key.to_owned()));
                        b.accepted.push(cert.to_owned());
                        Ok(())
                    });
                    match result {
                        Ok(()) => json(&mut s, 200, serde_json::json!({"ssl": true})),
                        Err(reason) if reason.starts_with("injected") => json(
                            &mut s,
                            500,
                            serde_json::json!({"errors": [{"reason": reason}]}),
                        ),
                        Err(reason) => json(
                            &mut s,
                            400,
                            serde_json::json!({"errors": [{"reason": reason}]}),
                        ),
                    }
                }
                _ => json(
                    &mut s,
                    405,
                    serde_json::json!({"errors": [{"reason": "method"}]}),
                ),
            }
        }
        _ => json(
            &mut s,
            404,
            serde_json::json!({"errors": [{"reason": "Not found"}]}),
        ),
    }
}

/// A media domain served by a bucket of the same name, with its CNAME, a Linode bucket,
/// a state directory and an env file.
pub struct Site {
    /// The domain (= bucket name).
    pub domain: String,
    /// S3 client straight to moto.
    pub client: aws_sdk_s3::Client,
    /// `--state-dir`.
    pub state_dir: PathBuf,
    /// The env file.
    pub env_file: PathBuf,
}

impl Site {
    /// A new site `<unique>.example.test`, or `media.<parent>` when `parent` is given.
    /// `database_url` goes into the env file (doctor tests); `extra` adds variables.
    pub async fn new(
        parent: Option<&str>,
        database_url: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Self {
        let lab = lab();
        let domain = match parent {
            Some(p) => format!("media.{p}"),
            None => format!("{}.example.test", super::unique("m")),
        };
        let client = super::s3_client(&super::s3().moto);
        client
            .create_bucket()
            .bucket(&domain)
            .send()
            .await
            .expect("create bucket");
        let (status, body) = super::http(
            &super::s3().proxy,
            "PUT",
            &format!("/__faults/{domain}"),
            Some(r#"{"allow_anonymous": true}"#),
        );
        assert_eq!(status, 200, "{body}");
        lab.linode.add_bucket(&domain);
        lab.mock_dns(
            "/set-cname",
            serde_json::json!({"host": format!("{domain}."), "target": format!("{}.", bucket_hostname(&domain))}),
        );
        let dir = super::temp_dir("site");
        let state_dir = dir.join("state");
        let mut text = format!(
            "LOCAL_DOMAIN=example.test\nS3_ENABLED=true\nS3_BUCKET={domain}\nS3_REGION=us-east-1\nS3_ENDPOINT={}\n\
             S3_PROTOCOL=https\nS3_ALIAS_HOST={domain}\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n\
             LINODE_TOKEN={LINODE_TOKEN}\nLINODE_API_URL={}\n",
            super::s3().proxy,
            super::ACCESS_KEY,
            super::SECRET_KEY,
            lab.linode_url
        );
        if let Some(u) = database_url {
            text.push_str(&format!("DATABASE_URL={u}\n"));
        }
        for (k, v) in extra {
            text.push_str(&format!("{k}={v}\n"));
        }
        let env_file = dir.join(".env.production");
        std::fs::write(&env_file, text).unwrap();
        Self {
            domain,
            client,
            state_dir,
            env_file,
        }
    }

    fn run(&self, args: &[&str]) -> super::Run {
        let mut all = vec!["--env-file", self.env_file.to_str().unwrap()];
        all.extend_from_slice(args);
        super::mastomedia(&all)
    }

    /// `cert renew` against Pebble with the lab's seams, plus `extra`.
    pub fn renew(&self, extra: &[&str]) -> super::Run {
        let lab = lab();
        let (dns, http, https) = (
            lab.dns.to_string(),
            lab.http_port.to_string(),
            lab.https_port.to_string(),
        );
        let mut args = vec![
            "cert",
            "renew",
            "--directory",
            &lab.directory,
            "--ca-file",
            lab.trust.to_str().unwrap(),
            "--resolver",
            &dns,
            "--http-port",
            &http,
            "--https-port",
            &https,
            "--state-dir",
            self.state_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `cert status` with the lab's seams.
    pub fn status(&self, extra: &[&str]) -> super::Run {
        let lab = lab();
        let (dns, https) = (lab.dns.to_string(), lab.https_port.to_string());
        let mut args = vec![
            "cert",
            "status",
            "--ca-file",
            lab.trust.to_str().unwrap(),
            "--resolver",
            &dns,
            "--https-port",
            &https,
            "--state-dir",
            self.state_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `doctor` with the lab's seams.
    pub fn doctor(&self, extra: &[&str]) -> super::Run {
        let lab = lab();
        let (dns, https) = (lab.dns.to_string(), lab.https_port.to_string());
        let mut args = vec![
            "doctor",
            "--ca-file",
            lab.trust.to_str().unwrap(),
            "--resolver",
            &dns,
            "--https-port",
            &https,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Every key in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.domain)
            .send()
            .await
            .expect("list");
        page.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The Linode double's state of this site's bucket.
    pub fn linode(&self) -> DoubleBucket {
        lab().linode.bucket(&self.domain)
    }
}
