//! Issue 15, items 1 and 6: `--version` names the commit, and `completions` / `man` are
//! generated from the clap definitions for every subcommand. Read through the binary, and
//! checked with the real tools that consume them (bash, man/groff).

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::{mastomedia, temp_dir};

/// The subcommands `mastomedia --help` lists (clap's `help` aside), as the admin sees them.
fn subcommands() -> Vec<String> {
    let help = mastomedia(&["--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    let section = help
        .stdout
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .split("\n\n")
        .next()
        .unwrap()
        .to_owned();
    let names: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|n| n != "help")
        .collect();
    assert!(names.len() >= 8, "{section}");
    names
}

/// The long flags a subcommand's `--help` documents.
fn long_flags(path: &[&str]) -> BTreeSet<String> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let help = mastomedia(&args);
    assert_eq!(help.code, 0, "{args:?}: {}", help.stderr);
    help.stdout
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches([',', '.', ')', ':'])
                .split(['=', '['])
                .next()
                .unwrap()
                .to_owned()
        })
        .filter(|w| {
            w.chars()
                .skip(2)
                .all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .collect()
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let run = mastomedia(&["--version"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    assert!(head.status.success(), "the test runs in a git checkout");
    let head = String::from_utf8(head.stdout).unwrap();
    assert_eq!(
        run.stdout.trim(),
        format!(
            "mastomedia {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            head.trim()
        )
    );
    // Every subcommand answers --version alike.
    let sub = mastomedia(&["prune", "--version"]);
    assert!(sub.stdout.contains(head.trim()), "{}", sub.stdout);
}

#[test]
fn completions_cover_every_subcommand_in_every_shell() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = mastomedia(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        for s in &subs {
            assert!(run.stdout.contains(s.as_str()), "{shell} completes {s}");
        }
        // fish and elvish name long flags without their dashes (`-l dry-run`).
        assert!(
            run.stdout.contains("dry-run") && run.stdout.contains("keep-interacted"),
            "{shell} completes prune's flags"
        );
    }
    // bash itself accepts the script and registers the completion function.
    let run = mastomedia(&["completions", "bash"]);
    let dir = temp_dir("completions");
    let script = dir.join("mastomedia.bash");
    std::fs::write(&script, &run.stdout).unwrap();
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("source {} && complete -p mastomedia", script.display()),
        ])
        .output()
        .expect("bash");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("mastomedia"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = mastomedia(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

#[test]
fn man_pages_exist_for_every_subcommand_and_render() {
    let dir = temp_dir("man");
    let run = mastomedia(&["man", "--out", dir.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut pages = vec![(vec![], "mastomedia".to_owned())];
    for s in subcommands() {
        pages.push((vec![s.clone()], format!("mastomedia-{s}")));
    }
    pages.push((
        vec!["cert".into(), "renew".into()],
        "mastomedia-cert-renew".into(),
    ));
    pages.push((
        vec!["cert".into(), "status".into()],
        "mastomedia-cert-status".into(),
    ));
    for (path, name) in &pages {
        let file = dir.join(format!("{name}.1"));
        assert!(file.exists(), "{} written: {}", file.display(), run.stdout);
        // man (groff) renders it without a warning, and the page documents every long
        // flag the subcommand's --help does: one source.
        let out = Command::new("man")
            .args(["-l", "--warnings=all"])
            .arg(&file)
            .env("MANWIDTH", "200")
            .env_remove("MAN_KEEP_FORMATTING")
            .output()
            .expect("man");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}: {stderr}"
        );
        let text = String::from_utf8_lossy(&out.stdout).replace('\u{2010}', "-");
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let flags = long_flags(&path);
        assert!(flags.contains("--help"), "{name}: {flags:?}");
        for flag in flags {
            assert!(text.contains(&flag), "{name} documents {flag}");
        }
        // The same page on stdout.
        if !path.is_empty() {
            let one = mastomedia(&["man", &path.join("-")]);
            assert_eq!(one.code, 0, "{}", one.stderr);
            assert_eq!(
                one.stdout,
                std::fs::read_to_string(&file).unwrap(),
                "{name}"
            );
        }
    }
    let bad = mastomedia(&["man", "nope"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("prune"), "{}", bad.stderr);
}
