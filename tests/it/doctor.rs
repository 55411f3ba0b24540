//! `doctor` against healthy and broken setups: each broken one must be named by a failing
//! line, and the run must exit 1.

use crate::support::certlab::{Site, lab};
use crate::support::{Mastodon, Run, TestDb};

/// A site whose bucket holds one image and whose alias host serves a valid certificate.
async fn healthy_site(db: Option<&TestDb>, parent: Option<&str>, extra: &[(&str, &str)]) -> Site {
    let site = Site::new(parent, db.map(|d| d.url.as_str()), extra).await;
    site.client
        .put_object()
        .bucket(&site.domain)
        .key("media_attachments/files/109/000/000/000/000/001/original/a.png")
        .content_type("image/png")
        .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
        .body(b"\x89PNG\r\n\x1a\nfake".to_vec().into())
        .send()
        .await
        .expect("put object");
    let (cert, key) = lab().ca.leaf(&[site.domain.as_str()], None);
    lab()
        .linode
        .with_bucket(&site.domain, |b| b.cert = Some((cert, key)));
    site
}

fn line<'a>(run: &'a Run, check: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| {
            panic!(
                "no `{check}` line:\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            )
        })
}

fn assert_fails(run: &Run, check: &str, words: &[&str]) {
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let l = line(run, check);
    assert!(l.starts_with("FAIL"), "{l}\n{}", run.stdout);
    for w in words {
        assert!(l.contains(w), "`{w}` missing in: {l}\n{}", run.stdout);
    }
}

#[tokio::test]
async fn healthy_setup_passes_with_one_line_per_check() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let site = healthy_site(Some(&db), None, &[]).await;
    let run = site.doctor(&["--write-test"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for l in run.stdout.lines().filter(|l| !l.contains(" checks: ")) {
        assert!(
            l.starts_with("ok  ") || l.starts_with("warn"),
            "unexpected line: {l}\n{}",
            run.stdout
        );
    }
    for check in [
        "env",
        "database",
        "bucket",
        "linode",
        "dns",
        "cname",
        "caa",
        "tls",
        "public read",
        "write test",
        "probe read",
        "batch delete",
    ] {
        assert!(
            line(&run, check).starts_with("ok"),
            "{check}:\n{}",
            run.stdout
        );
    }
    assert!(line(&run, "public read").contains("image/png"));
    assert!(
        site.keys()
            .await
            .iter()
            .all(|k| !k.starts_with("mastomedia-doctor/"))
    );
    db.drop_db().await;
}

/// Issue 9.2: `--write-test` sends a real two-key `DeleteObjects`, as prune does, so a
/// provider that refuses the SDK's checksum headers is found (a single-key probe never
/// carried them). Default: Content-MD5 only, accepted; with `crc32` the refusal is named.
#[tokio::test]
async fn case9_2_write_test_probes_a_two_key_delete_objects() {
    let site = healthy_site(None, None, &[]).await;
    let (status, body) = crate::support::http(
        &crate::support::s3().proxy,
        "PUT",
        &format!("/__faults/{}", site.domain),
        Some(r#"{"allow_anonymous": true, "reject_checksum_headers": true}"#),
    );
    assert_eq!(status, 200, "{body}");
    let run = site.doctor(&["--write-test"]);
    let l = line(&run, "batch delete");
    assert!(l.starts_with("ok") && l.contains("Content-MD5 only"), "{l}");
    assert!(!line(&run, "checksums").contains("accepted by every provider"));

    let strict = healthy_site(None, None, &[("MASTOMEDIA_DELETE_CHECKSUM", "crc32")]).await;
    let (status, body) = crate::support::http(
        &crate::support::s3().proxy,
        "PUT",
        &format!("/__faults/{}", strict.domain),
        Some(r#"{"allow_anonymous": true, "reject_checksum_headers": true}"#),
    );
    assert_eq!(status, 200, "{body}");
    let run = strict.doctor(&["--write-test"]);
    let l = line(&run, "batch delete");
    assert!(
        l.starts_with("warn")
            && l.contains("refused")
            && l.contains("MASTOMEDIA_DELETE_CHECKSUM=md5"),
        "{l}\n{}",
        run.stdout
    );
    assert!(
        strict
            .keys()
            .await
            .iter()
            .all(|k| !k.starts_with("mastomedia-doctor/")),
        "both probes are gone"
    );
}

/// Issue 9.7: an alias host that redirects to another host is reported (the browser
/// loads media from that host too, which Mastodon's Content-Security-Policy must allow).
#[tokio::test]
async fn case9_7_alias_host_redirect_to_another_host_is_reported() {
    let site = healthy_site(None, None, &[]).await;
    let other = healthy_site(None, None, &[]).await;
    crate::support::certlab::redirect_host(
        &site.domain,
        &format!("https://{}:{}", other.domain, lab().https_port),
    );
    let run = site.doctor(&[]);
    let l = line(&run, "alias redirect");
    assert!(
        l.starts_with("warn") && l.contains(&other.domain) && l.contains("EXTRA_MEDIA_HOSTS"),
        "{l}\n{}",
        run.stdout
    );
    // The object is still read (through the redirect).
    assert!(
        line(&run, "public read").starts_with("ok"),
        "{}",
        run.stdout
    );
    // Without a redirect there is no such line.
    let run = other.doctor(&[]);
    assert!(!run.stdout.contains("alias redirect"), "{}", run.stdout);
}

#[tokio::test]
async fn private_objects_are_named() {
    let site = healthy_site(None, None, &[]).await;
    site.client
        .put_object_acl()
        .bucket(&site.domain)
        .key("media_attachments/files/109/000/000/000/000/001/original/a.png")
        .acl(aws_sdk_s3::types::ObjectCannedAcl::Private)
        .send()
        .await
        .expect("make private");
    let run = site.doctor(&[]);
    assert_fails(&run, "public read", &["403", "not public"]);
}

#[tokio::test]
async fn wrong_cname_target_is_named() {
    let site = healthy_site(None, None, &[]).await;
    lab().mock_dns(
        "/set-cname",
        serde_json::json!({"host": format!("{}.", site.domain), "target": "elsewhere.eu-central-1.linodeobjects.com."}),
    );
    let run = site.doctor(&[]);
    let expected = format!("{}.us-east-1.linodeobjects.com", site.domain);
    assert_fails(
        &run,
        "cname",
        &["elsewhere.eu-central-1.linodeobjects.com", &expected],
    );
    let json = site.doctor(&["--json"]).json();
    assert_eq!(json["ok"], false);
    let cname = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "cname")
        .unwrap();
    assert_eq!(cname["status"], "fail");
}

#[tokio::test]
async fn caa_blocking_is_named_with_the_record_to_add() {
    let parent = format!("{}.test", crate::support::unique("dcaa"));
    let site = healthy_site(None, Some(&parent), &[]).await;
    lab().mock_dns(
        "/add-caa",
        serde_json::json!({"host": format!("{parent}."), "policies": [{"tag": "issue", "value": "sectigo.com"}]}),
    );
    let run = site.doctor(&[]);
    let record = format!("{parent}. IN CAA 0 issue \"letsencrypt.org\"");
    assert_fails(&run, "caa", &["sectigo.com", &record]);
}

#[tokio::test]
async fn missing_bucket_is_named() {
    let site = healthy_site(None, None, &[("S3_BUCKET", "no-such-bucket-here")]).await;
    let run = site.doctor(&[]);
    assert_fails(&run, "bucket", &["no-such-bucket-here", "does not exist"]);
}

#[tokio::test]
async fn bad_credentials_are_named() {
    let site = healthy_site(None, None, &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")]).await;
    let run = site.doctor(&[]);
    assert_fails(
        &run,
        "bucket",
        &["credentials rejected", "AWS_SECRET_ACCESS_KEY"],
    );
}

#[tokio::test]
async fn unreachable_database_is_named() {
    let site = healthy_site(
        None,
        None,
        &[(
            "DATABASE_URL",
            "postgres://mastodon@127.0.0.1:1/mastodon_production",
        )],
    )
    .await;
    let run = site.doctor(&[]);
    assert_fails(&run, "database", &["cannot connect", "127.0.0.1:1"]);
}

#[tokio::test]
async fn expired_certificate_on_the_alias_host_is_named() {
    let site = healthy_site(None, None, &[]).await;
    let (cert, key) = lab()
        .ca
        .leaf(&[site.domain.as_str()], Some(((2020, 1, 1), (2021, 1, 1))));
    lab()
        .linode
        .with_bucket(&site.domain, |b| b.cert = Some((cert, key)));
    let run = site.doctor(&[]);
    assert_fails(&run, "tls", &["expired on 2021-01-01"]);
}

#[tokio::test]
async fn certificate_for_another_name_is_named() {
    let site = healthy_site(None, None, &[]).await;
    // No certificate installed: the front presents the provider's wildcard, like Linode.
    lab().linode.with_bucket(&site.domain, |b| b.cert = None);
    let run = site.doctor(&[]);
    assert_fails(
        &run,
        "tls",
        &[
            &format!("does not name {}", site.domain),
            "*.us-east-1.linodeobjects.com",
        ],
    );
    assert!(line(&run, "linode").contains("no certificate is installed"));
}
