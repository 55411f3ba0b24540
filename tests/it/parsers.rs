//! Property tests of the parsers that read text mastomedia does not control (issue 12.4):
//! the env file (`config::Vars::load` then `Config::from_vars`), listed object keys
//! (`plan::parse::parse_key`) and Mastodon's YAML-serialised retention setting
//! (`mastodon::parse_retention_yaml`). Whatever the input, each gives a value or a clear
//! error, never a panic; an error never echoes a secret; and every key the layout builds
//! parses back to the row that owns it. These need no service: they run the parsers only.
//! 256 cases per property by default; `PROPTEST_CASES=N` runs more.

use std::path::Path;

use mastomedia::config::{Config, Vars};
use mastomedia::mastodon::parse_retention_yaml;
use mastomedia::model::{Attachment, KeyPrefix};
use mastomedia::plan::layout::StoredAttachment;
use mastomedia::plan::parse::parse_key;
use proptest::prelude::*;

/// Lines an env file may plausibly hold, good and bad: assignments with every quoting
/// style, comments, `export`, unterminated quotes, substitutions, control characters.
fn env_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("S3_ENABLED".to_owned()),
        Just("S3_BUCKET".to_owned()),
        Just("S3_ENDPOINT".to_owned()),
        Just("S3_REGION".to_owned()),
        Just("S3_BATCH_DELETE_LIMIT".to_owned()),
        Just("S3_READ_TIMEOUT".to_owned()),
        Just("S3_KEY_PREFIX".to_owned()),
        Just("DB_PORT".to_owned()),
        Just("DB_SSLMODE".to_owned()),
        Just("DATABASE_URL".to_owned()),
        Just("PAPERCLIP_ROOT_PATH".to_owned()),
        "[A-Z_]{1,12}",
    ];
    let value = prop_oneof![
        "[ -~]{0,40}",
        "\\PC{0,20}",
        Just("true".to_owned()),
        Just("${OTHER}".to_owned()),
        Just("\"unterminated".to_owned()),
        Just("'single quoted'".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
    ];
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k}={v}")),
        (key, value).prop_map(|(k, v)| format!("export {k} = {v} # note")),
        "#[ -~]{0,30}".prop_map(|c| c.to_string()),
        "\\PC{0,30}",
        Just(String::new()),
    ]
}

/// Writes `text` as an env file in a fresh temporary folder and loads it, with no process
/// environment on top. Returns the error text, if any.
fn load(text: &str) -> Result<(), String> {
    let dir = tempfile_dir();
    let path = dir.join(".env.production");
    std::fs::write(&path, text).unwrap();
    let result = Vars::load(&path, Vec::new())
        .and_then(|vars| Config::from_vars(&path, &vars).map(|_| ()))
        .map_err(|e| format!("{e:#}"));
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

fn tempfile_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mastomedia-parsers-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {

    /// Any env file gives a configuration or a usage error that says something; never a panic.
    #[test]
    fn env_file_never_panics(lines in prop::collection::vec(env_line(), 0..12)) {
        if let Err(message) = load(&lines.join("\n")) {
            prop_assert!(!message.trim().is_empty());
        }
    }

    /// Whatever else the file holds, an error never prints the password, the secret key or
    /// the database URL's password.
    #[test]
    fn env_file_errors_never_echo_secrets(
        lines in prop::collection::vec(env_line(), 0..8),
        secret in "[A-Za-z0-9]{16,24}",
        quote in prop_oneof![Just(""), Just("'"), Just("\"")],
        broken in any::<bool>(),
    ) {
        let secret = format!("Zq{secret}");
        let mut text = lines.join("\n");
        text.push_str(&format!("\nDB_PASS={quote}{secret}{quote}\n"));
        text.push_str(&format!("AWS_SECRET_ACCESS_KEY={secret}\n"));
        text.push_str(&format!("DATABASE_URL=postgres://u:{secret}@db/x\n"));
        if broken {
            // An unterminated quote around the secret: dotenvy's own error holds the line.
            text.push_str(&format!("SMTP_PASSWORD=\"{secret}\n"));
        }
        if let Err(message) = load(&text) {
            prop_assert!(!message.contains(&secret), "secret in: {message}");
        }
    }

    /// Any string, under any prefix, is either a key of the layout or unrecognised; a
    /// recognised key has a partition of 9, 12, 15 or 18 digits and id ranges that hold.
    #[test]
    fn parse_key_never_panics(key in "\\PC{0,80}", prefix in prop::option::of("[a-z/]{0,8}")) {
        let prefix = KeyPrefix::new(prefix.as_deref());
        if let Ok(parsed) = parse_key(&key, &prefix) {
            prop_assert!([9, 12, 15, 18].contains(&parsed.partition.len()));
            prop_assert!(parsed.partition.bytes().all(|b| b.is_ascii_digit()));
            for r in parsed.id_ranges() {
                prop_assert!(r.start() <= r.end());
            }
        }
    }

    /// Keys in the layout's alphabet, shaped like real ones (with digit groups of any
    /// length), never panic either.
    #[test]
    fn parse_key_of_layout_shapes_never_panics(
        groups in prop::collection::vec("[0-9]{1,4}", 0..8),
        cache in any::<bool>(),
        class in prop_oneof![Just("media_attachments/files"), Just("accounts/avatars"), Just("x/y")],
        tail in "[a-z0-9@./]{0,20}",
    ) {
        let key = format!("{}{class}/{}/{tail}", if cache { "cache/" } else { "" }, groups.join("/"));
        let _ = parse_key(&key, &KeyPrefix::default());
    }

    /// Every key the layout builds for a remote row parses back to its attachment, under
    /// `cache/`, with the row's id in the partition's id ranges.
    #[test]
    fn built_keys_parse_back_to_their_row(
        id in 1i64..=999_999_999_999_999_999,
        attachment in prop_oneof![
            Just(Attachment::MediaFile),
            Just(Attachment::MediaThumbnail),
            Just(Attachment::Avatar),
            Just(Attachment::Header),
            Just(Attachment::PreviewCardImage),
        ],
        stem in "[a-z0-9]{1,16}",
        ext in prop_oneof![Just("png"), Just("jpeg"), Just("mp4"), Just("gif")],
        prefix in prop::option::of("[a-z]{1,8}"),
    ) {
        let file_name = format!("{stem}.{ext}");
        let prefix = KeyPrefix::new(prefix.as_deref());
        let stored = StoredAttachment {
            attachment,
            id,
            file_name: &file_name,
            content_type: None,
            storage_schema_version: Some(1),
            remote: true,
            site_upload_var: None,
        };
        let keys = stored.keys(&prefix);
        prop_assert!(!keys.is_empty());
        for key in keys {
            let parsed = parse_key(key.as_str(), &prefix)
                .map_err(|e| TestCaseError::fail(format!("{key}: {e:?}")))?;
            prop_assert!(parsed.cache);
            prop_assert_eq!(parsed.attachment, attachment);
            prop_assert!(
                parsed.id_ranges().iter().any(|r| r.contains(&id)),
                "{} does not name id {}", key, id
            );
        }
    }

    /// Any setting value gives a positive number of days or none; never a panic.
    #[test]
    fn retention_yaml_never_panics(value in "\\PC{0,40}") {
        if let Some(days) = parse_retention_yaml(&value) {
            prop_assert!(days > 0);
        }
    }

    /// Mastodon's own serialisations of a positive integer read back as that integer.
    #[test]
    fn retention_yaml_reads_what_mastodon_writes(days in 1i64..=i64::MAX, end in any::<bool>()) {
        let value = if end { format!("--- {days}\n...\n") } else { format!("--- {days}\n") };
        prop_assert_eq!(parse_retention_yaml(&value), Some(days));
    }
}

/// The env file parser reads a real file: a missing one is an error naming the path.
#[test]
fn missing_env_file_is_an_error_naming_it() {
    let path = Path::new("/nonexistent/mastomedia/.env.production");
    let e = Vars::load(path, Vec::new()).unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/mastomedia/.env.production"));
}
