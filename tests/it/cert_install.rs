//! Issue 10.4: the install/restore transaction of `cert renew` (`cert::install`) on the
//! paths `cert.rs` does not cover, against the Linode double (`support::certlab`).

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
