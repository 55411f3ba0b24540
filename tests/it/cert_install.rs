//! Issue 10.4: the install/restore transaction of `cert renew` (`cert::install`) on the
//! paths `cert.rs` does not cover, against the Linode double (`support::certlab`), and the
//! one alias-host rule (`cert::alias`) as cert and doctor apply it: a flattened CNAME is
//! accepted by both; addresses that are not the bucket's are refused by cert and a warning
//! in doctor.

use crate::support::Run;
use crate::support::certlab::{Site, lab};

fn posts(site: &Site) -> usize {
    site.linode()
        .calls
        .iter()
        .filter(|c| *c == "POST ssl")
        .count()
}

fn expect(run: &Run, code: i32, words: &[&str]) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for w in words {
        assert!(
            run.stdout.contains(w) || run.stderr.contains(w),
            "`{w}` missing\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
}

fn doctor_line<'a>(run: &'a Run, check: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no `{check}` line:\n{}", run.stdout))
}

/// A bucket without a certificate whose first upload keeps failing: nothing to restore,
/// the bucket stays as it was (none), the new pair waits in `pending/` and is not
/// recorded as installed; a later run installs.
#[tokio::test]
async fn failed_first_install_keeps_the_new_pair_pending() {
    let site = Site::new(None, None, &[]).await;
    lab()
        .linode
        .with_bucket(&site.domain, |b| b.fail_new = true);
    let run = site.renew(&["--key-type", "ecdsa-p256"]);
    expect(&run, 1, &["the bucket had none before", "pending/"]);
    let after = site.linode();
    assert!(after.cert.is_none(), "no certificate appeared");
    assert!(
        !after.calls.iter().any(|c| c == "DELETE ssl"),
        "{:?}",
        after.calls
    );
    assert_eq!(
        posts(&site),
        3,
        "three attempts, no restore: {:?}",
        after.calls
    );
    let dir = site.state_dir.join(&site.domain);
    assert!(dir.join("pending/cert.pem").exists());
    assert!(!dir.join("current/cert.pem").exists(), "not promoted");

    lab()
        .linode
        .with_bucket(&site.domain, |b| b.fail_new = false);
    let again = site.renew(&["--key-type", "ecdsa-p256", "--force"]);
    expect(&again, 0, &["renewed"]);
    let installed = site.linode().cert.expect("installed now");
    assert_eq!(
        std::fs::read_to_string(dir.join("current/cert.pem")).unwrap(),
        installed.0
    );
}

/// A certificate mastomedia did not install is deleted first (Linode wants that), so a
/// failed upload leaves the bucket without one, and the error says so loudly.
#[tokio::test]
async fn a_foreign_certificate_cannot_be_restored_and_the_error_says_so() {
    let site = Site::new(None, None, &[]).await;
    let (cert, key) = lab().ca.leaf(&[site.domain.as_str()], None);
    lab().linode.with_bucket(&site.domain, |b| {
        b.cert = Some((cert, key));
        b.fail_new = true;
    });
    let run = site.renew(&["--key-type", "ecdsa-p256"]);
    expect(
        &run,
        1,
        &[
            "not installed by mastomedia",
            "THE BUCKET HAS NO CERTIFICATE NOW",
        ],
    );
    let after = site.linode();
    assert!(after.cert.is_none());
    let changes: Vec<&String> = after
        .calls
        .iter()
        .filter(|c| !c.starts_with("GET"))
        .collect();
    assert_eq!(
        changes,
        ["DELETE ssl", "POST ssl", "POST ssl", "POST ssl"],
        "delete, then three attempts"
    );
}

/// When the restore of the previous certificate fails too, the bucket has none: the
/// error says so and where the new pair is, `current/` still names the old certificate.
#[tokio::test]
async fn a_failed_restore_is_reported_and_keeps_both_pairs() {
    let site = Site::new(None, None, &[]).await;
    expect(&site.renew(&["--key-type", "ecdsa-p256"]), 0, &["renewed"]);
    let old = site.linode().cert.expect("installed");
    lab().linode.with_bucket(&site.domain, |b| {
        b.fail_all = true;
        b.calls.clear();
    });
    let run = site.renew(&["--key-type", "ecdsa-p256", "--force"]);
    expect(
        &run,
        1,
        &[
            "could not be restored",
            "THE BUCKET HAS NO CERTIFICATE NOW",
            "pending/cert.pem",
        ],
    );
    assert!(site.linode().cert.is_none());
    assert_eq!(
        posts(&site),
        6,
        "3 uploads and 3 restores: {:?}",
        site.linode().calls
    );
    let dir = site.state_dir.join(&site.domain);
    assert_eq!(
        std::fs::read_to_string(dir.join("current/cert.pem")).unwrap(),
        old.0,
        "current/ is the certificate to upload by hand"
    );
    let pending = std::fs::read_to_string(dir.join("pending/cert.pem")).unwrap();
    assert_ne!(pending, old.0);
    lab()
        .linode
        .with_bucket(&site.domain, |b| b.fail_all = false);
}

/// A flattened CNAME (no CNAME; the name answers with the bucket host's addresses, as
/// Cloudflare's flattening does): cert's preflight and doctor both accept it, with a note.
/// The lab's DNS answers every A query without a record of its own with 127.0.0.1.
#[tokio::test]
async fn a_flattened_cname_is_accepted_by_cert_and_doctor() {
    let site = Site::new(None, None, &[]).await;
    lab().mock_dns(
        "/clear-cname",
        serde_json::json!({"host": format!("{}.", site.domain)}),
    );
    let dry = site.renew(&["--dry-run"]);
    expect(&dry, 0, &["dry run", "flattened CNAME"]);
    let run = site.doctor(&[]);
    let l = doctor_line(&run, "cname");
    assert!(
        l.starts_with("ok") && l.contains("flattened CNAME"),
        "{l}\n{}",
        run.stdout
    );
}

/// Addresses that are not the bucket's: cert refuses (exit 2, nothing changed), doctor
/// warns (a CDN may front the bucket) with the record to add.
#[tokio::test]
async fn foreign_addresses_are_refused_by_cert_and_a_warning_in_doctor() {
    let site = Site::new(None, None, &[]).await;
    lab().mock_dns(
        "/clear-cname",
        serde_json::json!({"host": format!("{}.", site.domain)}),
    );
    lab().mock_dns(
        "/add-a",
        serde_json::json!({"host": format!("{}.", site.domain), "addresses": ["127.0.0.2"]}),
    );
    let run = site.renew(&[]);
    expect(&run, 2, &["is not a CNAME to the bucket's host"]);
    assert!(site.linode().cert.is_none());
    let doctor = site.doctor(&[]);
    let l = doctor_line(&doctor, "cname");
    assert!(
        l.starts_with("warn")
            && l.contains("does not resolve to the bucket's addresses")
            && l.contains(&format!(
                "IN CNAME {}",
                crate::support::certlab::bucket_hostname(&site.domain)
            )),
        "{l}\n{}",
        doctor.stdout
    );
}
