//! `mastomedia completions SHELL` and `mastomedia man [SUBCOMMAND] [--out DIR]`: shell
//! completions and man pages generated from the clap definitions of this module's parent,
//! so `--help`, the man page and the completions come from one source (issue 15.1).

use std::path::PathBuf;

/// `mastomedia completions SHELL`.
///
/// Examples:
///
///   mastomedia completions bash > /etc/bash_completion.d/mastomedia
///
///   mastomedia completions zsh > /usr/local/share/zsh/site-functions/_mastomedia
///
///   mastomedia completions fish > ~/.config/fish/completions/mastomedia.fish
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `mastomedia man`.
///
/// Examples:
///
///   mastomedia man | man -l -
///
///   mastomedia man prune | man -l -
///
///   mastomedia man --out /usr/local/share/man/man1
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ManArgs {
    /// The subcommand whose page to print (`prune`, `cert renew` as `cert-renew`…);
    /// the main page when not given.
    #[arg(value_name = "SUBCOMMAND", conflicts_with = "out")]
    pub page: Option<String>,

    /// Write every page (mastomedia.1, mastomedia-prune.1, mastomedia-cert-renew.1, …)
    /// into this folder, created if missing, instead of printing one.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}
