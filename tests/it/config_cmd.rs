//! Issue 15.3: `mastomedia config` shows every variable with its origin (env file line,
//! process environment, default) and never a secret, whichever source a secret comes
//! from; the derived facts include the Mastodon version read from the real schema.

use crate::support::{Mastodon, TestDb, mastomedia_env, temp_dir};

const SECRETS: [&str; 7] = [
    "ep-pw-in-env-3a3a",
    "pw-in-file-7f3a",
    "sk-in-file-91c2",
    "sk-in-env-55d0",
    "url-pw-in-env-0b7e",
    "lock-pw-in-file-c4d1",
    "linode-token-in-env-e8f9",
];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

#[tokio::test]
async fn config_shows_origins_and_never_a_secret() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    // The test database, reached with a password in the URL (trust auth ignores it).
    let with_password = db.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:url-pw-in-env-0b7e@",
        1,
    );
    assert_ne!(
        with_password, db.url,
        "the test URL has the expected shape: {}",
        db.url
    );
    let env_file = temp_dir("config").join(".env.production");
    std::fs::write(
        &env_file,
        "# Mastodon\n\
         DB_PASS=pw-in-file-7f3a\n\
         S3_ENABLED=true\n\
         S3_BUCKET=old-bucket\n\
         S3_BUCKET=media-bucket\n\
         S3_ENDPOINT=https://us-east-1.linodeobjects.com\n\
         AWS_ACCESS_KEY_ID=AKIDEXAMPLE\n\
         AWS_SECRET_ACCESS_KEY=sk-in-file-91c2\n\
         MASTOMEDIA_LOCK_DATABASE_URL=postgres://mastodon:lock-pw-in-file-c4d1@127.0.0.1/x\n",
    )
    .unwrap();
    let env = env_file.to_str().unwrap();
    let process = [
        ("DATABASE_URL", with_password.as_str()),
        ("AWS_SECRET_ACCESS_KEY", "sk-in-env-55d0"),
        ("LINODE_TOKEN", "linode-token-in-env-e8f9"),
        ("S3_KEY_PREFIX", "mastodon"),
    ];
    let run = mastomedia_env(&["--env-file", env, "config", "--json"], &process);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_no_secret("config --json", &format!("{}{}", run.stdout, run.stderr));
    let v = run.json();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all_names = names(&v);
    let var = |name: &str| {
        v["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {v:#}"))
            .clone()
    };
    // The last assignment in the file wins, and its line is named.
    assert_eq!(var("S3_BUCKET")["value"], "\"media-bucket\"");
    assert_eq!(var("S3_BUCKET")["origin"], "env_file");
    assert_eq!(var("S3_BUCKET")["line"], 5);
    assert_eq!(var("DB_PASS")["value"], "[hidden]");
    assert_eq!(var("DB_PASS")["line"], 2);
    // The process environment overrides the file.
    assert_eq!(var("AWS_SECRET_ACCESS_KEY")["origin"], "environment");
    assert_eq!(var("AWS_SECRET_ACCESS_KEY")["value"], "[hidden]");
    assert_eq!(var("S3_KEY_PREFIX")["origin"], "environment");
    assert_eq!(var("LINODE_TOKEN")["value"], "[hidden]");
    let url = var("DATABASE_URL");
    assert_eq!(url["origin"], "environment");
    assert!(
        url["value"]
            .as_str()
            .unwrap()
            .contains("connects to postgres://postgres@"),
        "{url}"
    );
    assert_eq!(var("MASTOMEDIA_LOCK_DATABASE_URL")["value"], "[hidden]");
    // Defaults and unset ones.
    assert_eq!(var("S3_REGION")["origin"], "default");
    assert_eq!(var("S3_REGION")["value"], "us-east-1");
    assert_eq!(var("S3_ALIAS_HOST")["origin"], "unset");
    assert!(var("S3_ALIAS_HOST")["value"].is_null());
    // Derived facts.
    let d = &v["derived"];
    assert_eq!(
        d["storage"],
        "s3://media-bucket at https://us-east-1.linodeobjects.com"
    );
    assert_eq!(d["addressing"], "path-style");
    assert_eq!(d["key_prefix"], "mastodon");
    assert!(
        d["mastodon_version"]
            .as_str()
            .unwrap()
            .starts_with("4.6 or later"),
        "{d}"
    );
    assert!(v["error"].is_null());

    // The human form, equally without secrets.
    let text = mastomedia_env(&["--env-file", env, "config"], &process);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert_no_secret("config", &format!("{}{}", text.stdout, text.stderr));
    assert!(text.stdout.contains("(env file line 5)"), "{}", text.stdout);
    assert!(
        text.stdout.contains("Mastodon version: 4.6 or later"),
        "{}",
        text.stdout
    );

    // An invalid value: exit 2, every variable still shown, still no secret.
    let bad = [
        ("DATABASE_URL", with_password.as_str()),
        ("S3_BATCH_DELETE_LIMIT", "5000"),
        ("LINODE_TOKEN", "linode-token-in-env-e8f9"),
    ];
    let run = mastomedia_env(&["--env-file", env, "config", "--json"], &bad);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert_no_secret("invalid config", &format!("{}{}", run.stdout, run.stderr));
    let v = run.json();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("S3_BATCH_DELETE_LIMIT"),
        "{v:#}"
    );
    assert_eq!(names(&v), all_names, "every variable is still shown");

    // Credentials inside S3_ENDPOINT are refused, and never echoed by config or by any
    // command's error.
    let ep = [(
        "S3_ENDPOINT",
        "https://user:ep-pw-in-env-3a3a@us-east-1.linodeobjects.com",
    )];
    for args in [
        vec!["config", "--offline"],
        vec!["du"],
        vec!["prune", "--dry-run"],
    ] {
        let mut all = vec!["--env-file", env];
        all.extend(args.iter().copied());
        let run = mastomedia_env(&all, &ep);
        assert_eq!(run.code, 2, "{args:?}\n{}\n{}", run.stdout, run.stderr);
        assert_no_secret(
            &format!("{args:?}"),
            &format!("{}{}", run.stdout, run.stderr),
        );
        assert!(
            format!("{}{}", run.stdout, run.stderr).contains("remove the user:password@ part"),
            "{args:?}: {}",
            run.stderr
        );
    }
    db.drop_db().await;
}

/// A Kubernetes pod has no env file: the chart's ConfigMap and Secrets arrive as process
/// environment, and `MASTOMEDIA_ENV_FILE=/dev/null` (deploy/kubernetes/) says so. Every
/// setting then comes from the environment, and a missing file named by the variable is
/// the same clear error as a missing `--env-file`.
#[tokio::test]
async fn settings_from_the_process_environment_alone() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let process = [
        ("MASTOMEDIA_ENV_FILE", "/dev/null"),
        ("DATABASE_URL", db.url.as_str()),
        ("S3_ENABLED", "true"),
        ("S3_BUCKET", "pod-bucket"),
        ("S3_ENDPOINT", "https://us-east-1.linodeobjects.com"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "sk-in-env-55d0"),
    ];
    let run = mastomedia_env(&["config", "--json"], &process);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_no_secret("config --json", &format!("{}{}", run.stdout, run.stderr));
    let v = run.json();
    let bucket = v["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "S3_BUCKET")
        .unwrap_or_else(|| panic!("S3_BUCKET in {v:#}"))
        .clone();
    assert_eq!(bucket["origin"], "environment");
    assert_eq!(bucket["value"], "\"pod-bucket\"");
    assert_eq!(
        v["derived"]["storage"],
        "s3://pod-bucket at https://us-east-1.linodeobjects.com"
    );

    // --env-file beats the variable; a missing file is exit 2 naming it.
    let missing = temp_dir("config-env").join("nope.env");
    let env = [("MASTOMEDIA_ENV_FILE", missing.to_str().unwrap())];
    let run = mastomedia_env(&["config"], &env);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("nope.env"), "{}", run.stderr);
    let run = mastomedia_env(&["--env-file", "/dev/null", "config", "--json"], &env);
    assert_eq!(run.json()["env_file"], "/dev/null", "{}", run.stderr);
    assert!(!run.stderr.contains("nope.env"), "{}", run.stderr);
}
