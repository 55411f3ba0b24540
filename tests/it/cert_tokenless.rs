//! Issue 9, case 7: `cert renew --dry-run` works without `LINODE_TOKEN` (the bucket's host
//! is derived from `S3_ENDPOINT`) and says which checks it skipped; a real run still needs
//! the token.

use crate::support::certlab::{LINODE_TOKEN, Site, lab};

#[tokio::test]
async fn case9_7_cert_renew_dry_run_without_linode_token() {
    let site = Site::new(None, None, &[]).await;
    let text = std::fs::read_to_string(&site.env_file).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("LINODE_TOKEN="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&site.env_file, &text).unwrap();
    // Without the API the CNAME target is `<bucket>.<S3_ENDPOINT host>`.
    let endpoint_host = text
        .lines()
        .find_map(|l| l.strip_prefix("S3_ENDPOINT="))
        .and_then(|e| e.split_once("://"))
        .map(|(_, rest)| rest.split([':', '/']).next().unwrap().to_owned())
        .unwrap();
    lab().mock_dns(
        "/set-cname",
        serde_json::json!({"host": format!("{}.", site.domain), "target": format!("{}.{endpoint_host}.", site.domain)}),
    );

    let dry = site.renew(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    assert!(
        dry.stderr.contains("without LINODE_TOKEN: skipped"),
        "{}",
        dry.stderr
    );
    assert!(site.linode().cert.is_none());
    assert!(!dry.stdout.contains(LINODE_TOKEN) && !dry.stderr.contains(LINODE_TOKEN));

    let real = site.renew(&[]);
    assert_eq!(real.code, 2, "{}\n{}", real.stdout, real.stderr);
    assert!(
        real.stderr.contains("LINODE_TOKEN is not set"),
        "{}",
        real.stderr
    );
}
