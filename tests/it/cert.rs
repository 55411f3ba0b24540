//! `cert renew` / `cert status` end to end against Pebble, the mock DNS, the bucket fronts
//! and the Linode API double (`support::certlab`).

use crate::support::certlab::{LINODE_TOKEN, Site, lab};

fn assert_code(run: &crate::support::Run, code: i32) {
    assert_eq!(
        run.code, code,
        "exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        !run.stdout.contains(LINODE_TOKEN) && !run.stderr.contains(LINODE_TOKEN),
        "the Linode token leaked into the output"
    );
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn renew_issues_installs_and_a_second_run_is_not_due() {
    let site = Site::new(None, None, &[]).await;

    let dry = site.renew(&["--dry-run", "--key-type", "ecdsa-p256"]);
    assert_code(&dry, 0);
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    assert!(site.linode().cert.is_none());
    assert!(
        !site.state_dir.join("accounts").exists(),
        "dry run created an account"
    );

    let first = site.renew(&["--key-type", "ecdsa-p256", "--email", "admin@example.test"]);
    assert_code(&first, 0);
    assert!(first.stdout.contains("renewed"), "{}", first.stdout);
    assert!(
        first.stdout.contains("serves the new certificate"),
        "{}",
        first.stdout
    );
    let installed = site
        .linode()
        .cert
        .expect("the double holds the new certificate");
    let dir = site.state_dir.join(&site.domain);
    let kept = std::fs::read_to_string(dir.join("current/cert.pem")).unwrap();
    assert_eq!(installed.0, kept, "state and bucket hold the same chain");
    assert!(kept.matches("BEGIN CERTIFICATE").count() >= 2, "full chain");
    for f in ["current/cert.pem", "current/key.pem", "renewal.json"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let account = std::fs::read_dir(site.state_dir.join("accounts"))
        .unwrap()
        .next()
        .expect("account file")
        .unwrap()
        .path();
    assert_eq!(mode(&account), 0o600);
    assert!(
        site.keys().await.is_empty(),
        "challenge objects were removed: {:?}",
        site.keys().await
    );

    let calls_before = site.linode().calls.len();
    let second = site.renew(&["--key-type", "ecdsa-p256"]);
    assert_code(&second, 0);
    assert!(second.stdout.contains("not due"), "{}", second.stdout);
    let after = site.linode();
    assert_eq!(after.cert.as_ref().map(|c| &c.0), Some(&kept));
    let new_calls: Vec<&String> = after.calls[calls_before..].iter().collect();
    assert!(
        new_calls.iter().all(|c| c.starts_with("GET")),
        "a not-due run only reads: {new_calls:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("current/cert.pem")).unwrap(),
        kept
    );
    assert!(site.keys().await.is_empty());

    let status = site.status(&[]);
    assert_code(&status, 0);
    assert!(status.stdout.contains("valid"), "{}", status.stdout);
    assert!(status.stdout.contains("next renewal"), "{}", status.stdout);
    let json = site.status(&["--json"]).json();
    assert_eq!(json["domain"], site.domain.as_str());
    assert!(json["live"]["fault"].is_null(), "{json}");
    assert_eq!(json["live"]["leaf"]["names"][0], site.domain.as_str());
}

#[tokio::test]
async fn failed_upload_restores_the_previous_certificate() {
    let site = Site::new(None, None, &[]).await;
    // Default key type: RSA-2048, uploaded as PKCS#1.
    let first = site.renew(&[]);
    assert_code(&first, 0);
    let old = site.linode().cert.expect("installed");
    assert!(
        old.1.contains("BEGIN RSA PRIVATE KEY"),
        "PKCS#1 key uploaded"
    );

    lab().linode.with_bucket(&site.domain, |b| {
        b.fail_new = true;
        b.calls.clear();
    });
    let forced = site.renew(&["--force"]);
    assert_code(&forced, 1);
    assert!(
        forced.stderr.contains("previous certificate was restored"),
        "{}",
        forced.stderr
    );
    let after = site.linode();
    assert_eq!(
        after.cert.as_ref(),
        Some(&old),
        "the old certificate is installed again"
    );
    let posts = after.calls.iter().filter(|c| *c == "POST ssl").count();
    assert_eq!(
        posts, 4,
        "3 attempts of the new one, then the restore: {:?}",
        after.calls
    );
    let dir = site.state_dir.join(&site.domain);
    assert_eq!(
        std::fs::read_to_string(dir.join("current/cert.pem")).unwrap(),
        old.0
    );
    let pending = std::fs::read_to_string(dir.join("pending/cert.pem")).unwrap();
    assert_ne!(pending, old.0, "the new chain is kept for the next run");
    let status = site.status(&[]);
    assert_code(&status, 0);

    // The next run backs off (1 minute after one failure) instead of hammering the CA.
    lab()
        .linode
        .with_bucket(&site.domain, |b| b.fail_new = false);
    let backoff = site.renew(&[]);
    assert_code(&backoff, 0);
    assert!(backoff.stdout.contains("backing off"), "{}", backoff.stdout);
}

#[tokio::test]
async fn caa_refusal_names_the_record_to_add() {
    let parent = format!("{}.test", crate::support::unique("caa"));
    let site = Site::new(Some(&parent), None, &[]).await;
    lab().mock_dns(
        "/add-caa",
        serde_json::json!({"host": format!("{parent}."), "policies": [{"tag": "issue", "value": "sectigo.com"}]}),
    );
    let run = site.renew(&[]);
    assert_code(&run, 2);
    let record = format!("{parent}. IN CAA 0 issue \"letsencrypt.org\"");
    assert!(run.stderr.contains(&record), "{}", run.stderr);
    assert!(run.stderr.contains("sectigo.com"), "{}", run.stderr);
    assert!(site.linode().cert.is_none());
    assert!(site.linode().calls.iter().all(|c| c.starts_with("GET")));
    assert!(site.keys().await.is_empty());
}

#[tokio::test]
async fn wrong_cname_is_refused_before_anything_changes() {
    let site = Site::new(None, None, &[]).await;
    lab().mock_dns(
        "/set-cname",
        serde_json::json!({"host": format!("{}.", site.domain), "target": "other.eu-central-1.linodeobjects.com."}),
    );
    let run = site.renew(&[]);
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("other.eu-central-1.linodeobjects.com")
            && run
                .stderr
                .contains(&format!("{}.us-east-1.linodeobjects.com", site.domain)),
        "{}",
        run.stderr
    );
    assert!(site.linode().cert.is_none());
}

/// Records every request that reaches it (the raw head), answering 401 so a client that
/// should not have come does not hang.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    fn bind(ip: &str) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the recorder");
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .ok();
                let mut buf = vec![0u8; 16 * 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 41\r\nconnection: close\r\n\r\n{\"errors\": [{\"reason\": \"Invalid Token\"}]}",
                );
            }
        });
        Self { addr, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Issue 8 case 6: `http://127.0.0.10:…` passed the "loopback only" prefix check and
/// received the Bearer token. Now the host is compared exactly: nothing is sent, exit 2.
#[tokio::test]
async fn case6_linode_token_never_sent_over_plain_http_to_a_non_loopback_host() {
    let site = Site::new(None, None, &[]).await;
    let recorder = Recorder::bind("127.0.0.10");
    let url = format!("http://{}/v4", recorder.addr);
    let text = std::fs::read_to_string(&site.env_file).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("LINODE_API_URL=") {
                format!("LINODE_API_URL={url}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&site.env_file, text).unwrap();

    for run in [site.renew(&["--dry-run"]), site.renew(&[])] {
        assert_code(&run, 2);
        assert!(
            run.stderr.contains("LINODE_API_URL=") && run.stderr.contains("https://"),
            "the message names the variable and the fix: {}",
            run.stderr
        );
    }
    let doctor = site.doctor(&[]);
    assert!(
        doctor.stdout.contains("LINODE_API_URL="),
        "doctor reports the URL: {}",
        doctor.stdout
    );
    assert!(!doctor.stdout.contains(LINODE_TOKEN) && !doctor.stderr.contains(LINODE_TOKEN));
    // Any request would have reached the recorder before the runs exited.
    let seen = recorder.requests();
    assert!(
        seen.is_empty(),
        "{} request(s) reached http://{}; the first: {}",
        seen.len(),
        recorder.addr,
        seen.first().map(String::as_str).unwrap_or("")
    );
    assert!(site.linode().calls.is_empty(), "{:?}", site.linode().calls);
}
