//! Issue 9, case 7: flags that used to be ignored without a word are usage errors (exit 2,
//! the flag named on stderr), and env-file values that used to be misread are refused or
//! read right, end to end through the binary.

use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file};

#[tokio::test]
async fn case9_7_ignored_flags_are_usage_errors() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();
    for (args, names) in [
        (
            vec!["prune", "--dry-run", "--preview-cards-days", "30"],
            "--preview-cards",
        ),
        (vec!["orphans", "--dry-run"], "--delete"),
        (vec!["orphans", "--max-share", "20"], "--delete"),
        (
            vec![
                "migrate",
                "--from",
                "/nonexistent",
                "--multipart-threshold",
                "0",
            ],
            "5242880",
        ),
    ] {
        let mut all = vec!["--env-file", env];
        all.extend(args.iter().copied());
        let run = mastomedia(&all);
        assert_eq!(run.code, 2, "{args:?}\n{}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(names), "{args:?}: {}", run.stderr);
    }
    assert_eq!(bucket.stats()["total"], 0, "nothing was sent");
    db.drop_db().await;
}

#[tokio::test]
async fn case9_7_env_file_port_zero_is_refused_at_once() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    // DATABASE_URL wins over DB_*: drop it, then add a UTF-8 BOM (line 1 is a comment)
    // and DB_PORT=0, which used to be accepted and then time out after 15 s.
    let text = std::fs::read_to_string(&env).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("DATABASE_URL="))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = format!("\u{feff}{text}DB_HOST=127.0.0.1\nDB_PORT=0\n");
    std::fs::write(&env, text).unwrap();
    let started = std::time::Instant::now();
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--dry-run"]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("DB_PORT"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("line 1"),
        "the BOM is not a syntax error: {}",
        run.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    db.drop_db().await;
}

/// Issue 9.7: a journal that cannot be written must fail at open (exit 2) before anything
/// is uploaded. Here a read-only tmpfs (needs root, as CI runs); the variant where SQLite
/// silently opens the file read-only and fails at the first write is covered by the
/// journal's own `case9_7_read_only_journal_fails_at_open` probe test.
#[tokio::test]
async fn case9_7_journal_on_a_read_only_filesystem_fails_before_any_upload() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let root = crate::support::temp_dir("ro-src");
    let file = root.join("media_attachments/files/000/000/001/original/aaaaaaaaaaaaaaaa.png");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"\x89PNG\r\n\x1a\n local upload").unwrap();
    let mnt = crate::support::temp_dir("ro-mnt");
    let sh = |cmd: &str| {
        let st = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()
            .unwrap();
        assert!(
            st.success(),
            "{cmd} failed (the test needs root, as CI has)"
        );
    };
    sh(&format!(
        "mount -t tmpfs -o size=4m mm-ro {}",
        mnt.display()
    ));
    let journal = mnt.join("journal.sqlite");
    // A journal made earlier on the same mount, now read-only.
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "migrate",
        "--from",
        root.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    sh(&format!("mount -o remount,ro {}", mnt.display()));
    bucket.reset_stats();
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "migrate",
        "--from",
        root.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ]);
    sh(&format!("umount {}", mnt.display()));
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("journal"), "{}", run.stderr);
    assert_eq!(bucket.stats()["mutating"], 0, "{}", bucket.stats());
    assert!(bucket.keys().await.is_empty());
    db.drop_db().await;
}

/// Issue 9.7: a provider that cannot be reached is one line saying what failed, not the
/// SDK's nested `DispatchFailure { source: ConnectorError { … } }` dump.
#[tokio::test]
async fn case9_7_unreachable_endpoint_is_one_readable_line() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = s3_env_file(
        &db,
        "mm-nowhere",
        &[("S3_ENDPOINT", &format!("http://127.0.0.1:{port}"))],
    );
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "du"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot connect") && run.stderr.contains("Connection refused"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("DispatchFailure"), "{}", run.stderr);
    assert!(!run.stderr.contains("ConnectorError"), "{}", run.stderr);
    db.drop_db().await;
}

/// A DNS server on loopback that answers every query NXDOMAIN (RCODE 3), for the one test
/// that needs a name that does not exist (the lab's mock DNS answers every A query).
fn nxdomain_server() -> std::net::SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // Same id and question; QR=1, RD copied, RA=1, RCODE=3; no answers.
            let mut resp = buf[..n].to_vec();
            resp[2] = 0x80 | (buf[2] & 0x01);
            resp[3] = 0x80 | 0x03;
            resp[6..12].fill(0); // ANCOUNT, NSCOUNT, ARCOUNT
            // Drop any additional (EDNS OPT) record the query carried: keep the question.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += 1 + buf[end] as usize;
            }
            resp.truncate((end + 5).min(n));
            let _ = sock.send_to(&resp, from);
        }
    });
    addr
}

/// Issue 9.7: an alias host that does not exist in DNS (NXDOMAIN) used to be reported as
/// "not a CNAME (an A record or a flattened CNAME)", a warning. It is a failure that says
/// the name does not resolve, with the record to add.
#[tokio::test]
async fn case9_7_doctor_reports_nxdomain_as_a_missing_name() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(
        &db,
        &bucket.name,
        &[("S3_ALIAS_HOST", "files.does-not-exist.example")],
    );
    let dns = nxdomain_server();
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "doctor",
        "--resolver",
        &dns.to_string(),
    ]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|r| r.starts_with("cname")))
        .unwrap_or_else(|| panic!("no cname line:\n{}", run.stdout));
    assert!(
        line.starts_with("FAIL")
            && line.contains("does not resolve")
            && !line.contains("not a CNAME"),
        "{line}"
    );
    db.drop_db().await;
}

/// Issue 10, item 6: a closed stdout (`mastomedia du --json | head -1`) ends the output
/// quietly: no panic, the run's own exit code.
#[tokio::test]
async fn closed_stdout_is_not_a_panic() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    bucket.put("robots.txt", b"x").await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mastomedia"))
        .args(["--env-file", env.to_str().unwrap(), "du", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // The reader goes away before anything is written, as `head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    db.drop_db().await;
}

/// Review finding F5: `orphans --prefix ../x` on the filesystem backend listed (and, with
/// `--delete`, would have judged) files outside the storage root. A prefix that leaves
/// the root is a usage error on every backend, and nothing outside the root is touched.
#[tokio::test]
async fn listing_prefixes_that_leave_the_root_are_usage_errors() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let base = crate::support::temp_dir("prefix");
    let root = base.join("system");
    std::fs::create_dir_all(&root).unwrap();
    let outside = base.join("outside/original/victim.png");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, b"not Mastodon's").unwrap();
    let env = crate::support::fs_env_file(&db, &root);
    let env = env.to_str().unwrap();
    for args in [
        vec!["orphans", "--prefix", "../outside/"],
        vec!["orphans", "--delete", "--min-age", "0", "--prefix", "../"],
        vec!["du", "--prefix", "cache/../../outside/"],
        vec!["du", "--prefix", "/etc/"],
    ] {
        let mut all = vec!["--env-file", env];
        all.extend(args.iter().copied());
        let run = mastomedia(&all);
        assert_eq!(run.code, 2, "{args:?}\n{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("--prefix") && run.stderr.contains("relative"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stdout.contains("victim"), "{args:?}: {}", run.stdout);
    }
    assert!(outside.exists(), "nothing outside the root was deleted");
    db.drop_db().await;
}
