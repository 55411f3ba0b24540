//! A closed stdout (`mastomedia orphans --json | head -1`, `du | head -1`, a pager quit
//! early) is not an error of the run: the binary drops the rest of its report quietly and
//! exits with the run's own code, never with a panic (`report::out`, `main`'s return).

use std::process::{Command, Stdio};

use crate::support::{Mastodon, TestDb, fs_env_file, temp_dir};

/// Runs `mastomedia args` with stdout a pipe whose reading end is already closed (so the
/// first write fails with EPIPE, deterministically); returns (exit code, stderr).
fn run_with_closed_stdout(args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.args(args).env_clear();
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let out = cmd
        .env("MASTOMEDIA_STATUS_INTERVAL", "3600")
        .env("XDG_STATE_HOME", temp_dir("closed-stdout-state"))
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn du_and_orphans_exit_quietly_when_stdout_is_closed() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Kathmandu").await;
    let root = temp_dir("closed-stdout");
    for key in [
        "cache/media_attachments/files/109/345/678/901/234/567/original/0123456789abcdef.png",
        "media_attachments/files/000/000/001/original/a.png",
        "not-mastodon/readme.txt",
    ] {
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"0123456789").unwrap();
    }
    let env = fs_env_file(&db, &root);
    let env = env.to_str().unwrap();

    let runs: [&[&str]; 4] = [
        &["--env-file", env, "du"],
        &["--env-file", env, "du", "--json"],
        &["--env-file", env, "orphans", "--json"],
        &["--help"],
    ];
    for args in runs {
        let (code, stderr) = run_with_closed_stdout(args);
        assert!(
            !stderr.contains("panicked"),
            "{args:?} panicked on a closed stdout:\n{stderr}"
        );
        assert!(
            !stderr.contains("cannot write the report"),
            "a closed stdout is not reported as an error ({args:?}):\n{stderr}"
        );
        assert_eq!(code, 0, "{args:?} exits with the run's code:\n{stderr}");
    }
    db.drop_db().await;
}
