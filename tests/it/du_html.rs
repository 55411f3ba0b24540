//! Issue 15.7: `du --html FILE` writes one self-contained page (inline CSS and SVG, no
//! script, a Content-Security-Policy that allows no fetch) with the categories and the
//! growth per month as charts, checked in a real headless browser: Debian's chromium,
//! which `.ci/run` installs (`--dump-dom` shows the rendered document).

use std::process::Command;

use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file, temp_dir};

#[tokio::test]
async fn du_html_is_self_contained_and_renders_in_chromium() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // Two months (2024-01, 2024-02) and keys without a month.
    for (k, n) in [
        (
            "cache/media_attachments/files/111/677/748/019/200/000/original/a.png",
            100,
        ),
        (
            "media_attachments/files/111/853/279/641/600/000/original/b.jpeg",
            1000,
        ),
        ("accounts/avatars/000/000/001/original/d.png", 50),
        ("<odd>&\"key\".txt", 3),
    ] {
        bucket.put(k, &vec![b'x'; n]).await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let dir = temp_dir("html");
    let file = dir.join("du.html");
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "du",
        "--html",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let months = run.json()["months"].as_array().expect("months").len();
    assert_eq!(months, 3, "2024-01, 2024-02, unknown");
    let html = std::fs::read_to_string(&file).unwrap();
    // Nothing that could leave the page: no script, no element or attribute that loads
    // anything (the storage's URL appears as text only), and a CSP that forbids every
    // fetch anyway.
    assert!(html.contains("default-src 'none'"), "CSP");
    for bad in [
        "<script", "<link", "<img", "<iframe", "<object", " src=", "href=", "url(", "@import",
    ] {
        assert!(!html.contains(bad), "{bad} in the page");
    }
    assert!(
        html.contains("&lt;odd&gt;&amp;&quot;key&quot;.txt"),
        "keys are escaped"
    );

    let chromium = std::env::var("MASTOMEDIA_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--dump-dom",
        ])
        .arg(format!("file://{}", file.display()))
        .env("HOME", dir.to_str().unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!("{chromium} (Debian's chromium; .ci/run installs it; MASTOMEDIA_TEST_CHROMIUM overrides): {e}")
        });
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("<svg"),
        "chromium rendered nothing: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("<title>mastomedia du: s3://"), "{dom}");
    // The growth chart: one row per month, three stacked segments each.
    let months_svg = dom
        .split(r#"<svg id="months""#)
        .nth(1)
        .and_then(|s| s.split("</svg>").next())
        .expect("the months chart in the rendered DOM");
    assert_eq!(
        months_svg.matches("<rect class=\"bar ").count(),
        3 * months,
        "{months_svg}"
    );
    for m in ["2024-01", "2024-02", "unknown"] {
        assert!(months_svg.contains(m), "{m} labelled");
    }
    let cats = dom
        .split(r#"<svg id="categories""#)
        .nth(1)
        .and_then(|s| s.split("</svg>").next())
        .expect("the categories chart");
    assert!(cats.contains("media_attachments/files"), "{cats}");
    assert!(cats.contains("outside the layout"), "{cats}");
    db.drop_db().await;
}
