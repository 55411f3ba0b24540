//! `completions` and `man`: render the clap definitions (`cli/`) with clap_complete and
//! clap_mangen. Neither reads the env file nor touches the database or the storage.

use std::io::Write as _;

use clap::CommandFactory as _;

use super::CommandError;
use crate::cli::Cli;
use crate::cli::docs::{CompletionsArgs, ManArgs};
use crate::report::ExitCode;

/// Prints the completion script for `args.shell` on stdout. Errors: none besides a
/// closed stdout, which is ignored like every other output of the tool.
pub fn completions(args: CompletionsArgs) -> Result<ExitCode, CommandError> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mastomedia", &mut buf);
    crate::report::out(&String::from_utf8_lossy(&buf));
    Ok(ExitCode::Success)
}

/// Every page name (`mastomedia`, `mastomedia-prune`, `mastomedia-cert-renew`, …) with
/// its command: clap's display name of a built subcommand, which clap_mangen uses as the
/// page's title, as [`clap_mangen::generate_to`] names its files.
fn pages() -> Vec<(String, clap::Command)> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        // clap's generated `help` subcommand gets no page of its own.
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub, out);
        }
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
        out.push((name, cmd.clone()));
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Prints one man page on stdout (`args.page`, else the main page), or writes every page
/// into `args.out`. Errors: an unknown page name (exit 2, with the names there are); the
/// folder cannot be created or written (exit 3).
pub fn man(args: ManArgs) -> Result<ExitCode, CommandError> {
    let pages = pages();
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| {
            CommandError::fatal(anyhow::anyhow!("cannot create {}: {e}", dir.display()))
        })?;
        for (name, cmd) in pages {
            let path = dir.join(format!("{name}.1"));
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .and_then(|()| std::fs::File::create(&path)?.write_all(&buf))
                .map_err(|e| {
                    CommandError::fatal(anyhow::anyhow!("cannot write {}: {e}", path.display()))
                })?;
            crate::outln!("{}", path.display());
        }
        return Ok(ExitCode::Success);
    }
    let want = match args.page.as_deref() {
        None => "mastomedia".to_owned(),
        Some(p) => format!("mastomedia-{}", p.trim().replace(' ', "-")),
    };
    let Some((_, cmd)) = pages.iter().find(|(n, _)| *n == want) else {
        let names: Vec<&str> = pages
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("mastomedia-"))
            .collect();
        return Err(CommandError::usage(anyhow::anyhow!(
            "no man page {want:?}; the pages are mastomedia and mastomedia-<SUBCOMMAND> for {}",
            names.join(", ")
        )));
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .map_err(|e| CommandError::fatal(anyhow::anyhow!("rendering the man page: {e}")))?;
    crate::report::out(&String::from_utf8_lossy(&buf));
    Ok(ExitCode::Success)
}
