//! Progress on stderr: an indicatif bar (rows, bytes, ETA) when stderr is a terminal, a
//! one-line status every interval otherwise (cron mails), nothing with `-q`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use humansize::{BINARY, format_size};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar (stderr is a terminal).
    Bar,
    /// A status line every given interval (not a terminal: cron, logs).
    Status(Duration),
    /// Nothing (`-q`).
    Off,
}

impl ProgressMode {
    /// Bar on a terminal, else a status line every 30 s (`MASTOMEDIA_STATUS_INTERVAL`
    /// seconds overrides); `quiet` switches it off.
    pub fn detect(quiet: bool) -> Self {
        use std::io::IsTerminal;
        if quiet {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            let secs = std::env::var("MASTOMEDIA_STATUS_INTERVAL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(30);
            ProgressMode::Status(Duration::from_secs(secs))
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

/// Progress of one pass over `total` rows.
#[derive(Debug)]
pub struct Progress {
    label: String,
    unit: String,
    bytes_verb: String,
    total: u64,
    counters: Arc<Counters>,
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Progress {
    /// Starts showing progress for `label` (e.g. `prune media`) over `total` rows.
    pub fn start(label: &str, total: u64, mode: ProgressMode) -> Self {
        Self::start_unit(label, total, "rows", "freed", mode)
    }

    /// Like [`Progress::start`] with the unit counted (`rows`, `files`) and the verb for
    /// the byte counter (`freed`, `copied`).
    pub fn start_unit(
        label: &str,
        total: u64,
        unit: &str,
        bytes_verb: &str,
        mode: ProgressMode,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let (bar, ticker) = match mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                // total 0 = unknown (a listing): a counter instead of a bar.
                let template = if total == 0 {
                    format!("{{prefix}} {{spinner}} {{pos}} {unit} {{msg}} {{per_sec}}")
                } else {
                    format!(
                        "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} {{per_sec}} ETA {{eta}}"
                    )
                };
                bar.set_style(
                    ProgressStyle::with_template(&template)
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(label.to_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                (Some(bar), None)
            }
            ProgressMode::Status(every) => {
                let c = counters.clone();
                let label = label.to_owned();
                let (unit, verb) = (unit.to_owned(), bytes_verb.to_owned());
                let handle = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        eprintln!(
                            "{}",
                            status_line(&label, total, &c, started.elapsed(), &unit, &verb)
                        );
                    }
                });
                (None, Some(handle))
            }
            ProgressMode::Off => (None, None),
        };
        Self {
            label: label.to_owned(),
            unit: unit.to_owned(),
            bytes_verb: bytes_verb.to_owned(),
            total,
            counters,
            bar,
            ticker,
            started,
        }
    }

    /// Records `rows` handled (`failed` of them failed) and `bytes` freed.
    pub fn add(&self, rows: u64, failed: u64, bytes: u64) {
        self.counters.rows.fetch_add(rows, Ordering::Relaxed);
        self.counters.failed.fetch_add(failed, Ordering::Relaxed);
        let b = self.counters.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            bar.inc(rows);
            bar.set_message(format!("{} {}", format_size(b, BINARY), self.bytes_verb));
        }
    }

    /// Prints a log line above the bar (or plainly) without breaking it.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Stops the bar or ticker. Under cron a final status line is printed.
    pub fn finish(mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(t) = self.ticker.take() {
            t.abort();
            eprintln!(
                "{}",
                status_line(
                    &self.label,
                    self.total,
                    &self.counters,
                    self.started.elapsed(),
                    &self.unit,
                    &self.bytes_verb
                )
            );
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

fn status_line(
    label: &str,
    total: u64,
    c: &Counters,
    elapsed: Duration,
    unit: &str,
    verb: &str,
) -> String {
    let rows = c.rows.load(Ordering::Relaxed);
    let bytes = c.bytes.load(Ordering::Relaxed);
    let failed = c.failed.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = rows as f64 / secs;
    if total == 0 {
        return format!(
            "{label}: {rows} {unit}, {failed} failed, {} {verb}, {:.0} {unit}/s",
            format_size(bytes, BINARY),
            rows as f64 / secs
        );
    }
    let pct = (rows * 100).checked_div(total).unwrap_or(100);
    let eta = if rate > 0.0 && total > rows {
        format!("{}s", ((total - rows) as f64 / rate).round())
    } else {
        "-".to_owned()
    };
    format!(
        "{label}: {rows}/{total} {unit} ({pct}%), {failed} failed, {} {verb}, {rate:.0} {unit}/s, ETA {eta}",
        format_size(bytes, BINARY)
    )
}
