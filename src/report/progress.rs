//! Progress on stderr: an indicatif bar (rows, bytes, ETA) when stderr is a terminal, a
//! one-line status every interval otherwise (cron mails), nothing with `-q`.
//!
//! Log lines never cut through a bar: every bar drawn registers itself in [`BARS`], and the
//! tracing writer ([`LogWriter`]) prints each event inside the newest bar's
//! `ProgressBar::suspend` (bar cleared, line written, bar redrawn below it); with no bar
//! drawn it writes to stderr as is.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use humansize::{BINARY, format_size};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars drawn now, newest last, each with the id [`Bars::register`] gave it.
#[derive(Debug, Default)]
struct Bars {
    next: u64,
    drawn: Vec<(u64, ProgressBar)>,
}

/// The process's bars: the ones [`Progress`] draws on stderr.
static BARS: Mutex<Bars> = Mutex::new(Bars {
    next: 0,
    drawn: Vec::new(),
});

impl Bars {
    /// Records `bar` as drawn; returns the id to [`Bars::unregister`] it with.
    fn register(&mut self, bar: &ProgressBar) -> u64 {
        self.next += 1;
        self.drawn.push((self.next, bar.clone()));
        self.next
    }

    /// Forgets the bar registered as `id` (no-op when unknown).
    fn unregister(&mut self, id: u64) {
        self.drawn.retain(|(i, _)| *i != id);
    }

    /// The newest bar drawn, if any.
    fn newest(&self) -> Option<ProgressBar> {
        self.drawn.last().map(|(_, bar)| bar.clone())
    }
}

/// Writes `bytes` to `sink`: inside `bar.suspend` when a bar is drawn, so the text lands
/// above it and the bar is redrawn after; else directly.
fn write_above(
    bar: Option<ProgressBar>,
    sink: &mut dyn Write,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut write = || sink.write_all(bytes).and_then(|()| sink.flush());
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

fn lock_bars() -> std::sync::MutexGuard<'static, Bars> {
    BARS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `tracing_subscriber` writer of the binary: stderr, with each event printed above the
/// progress bar when one is drawn (through `ProgressBar::suspend`), never through it.
/// Plain stderr otherwise (cron, `-q`, the status-line mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One event's text, collected by [`LogWriter`] and written out on flush or drop.
#[derive(Debug, Default)]
pub struct LogLine {
    buf: Vec<u8>,
}

impl LogLine {
    fn emit(&mut self) -> std::io::Result<()> {
        // Not `stderr().lock()` held across `suspend`: the bar's ticker thread takes the
        // bar's lock and then stderr's, so this side must take them in that order too.
        self.emit_to(&mut std::io::stderr())
    }

    /// Writes the collected text above the newest bar (see [`write_above`]) and clears it.
    fn emit_to(&mut self, sink: &mut dyn Write) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bar = lock_bars().newest();
        let result = write_above(bar, sink, &self.buf);
        self.buf.clear();
        result
    }
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine::default()
    }
}

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
        } else if std::io::stderr().is_terminal() && !super::log::is_json() {
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
    /// The id of `bar` in [`BARS`] while it is drawn.
    bar_id: Option<u64>,
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
                        status(&label, total, &c, started.elapsed(), &unit, &verb);
                    }
                });
                (None, Some(handle))
            }
            ProgressMode::Off => (None, None),
        };
        let bar_id = bar.as_ref().map(|b| lock_bars().register(b));
        Self {
            label: label.to_owned(),
            unit: unit.to_owned(),
            bytes_verb: bytes_verb.to_owned(),
            total,
            counters,
            bar,
            bar_id,
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
            None => super::log::line("INFO", line, serde_json::Map::new()),
        }
    }

    /// Stops the bar or ticker. Under cron a final status line is printed.
    pub fn finish(mut self) {
        if let Some(id) = self.bar_id.take() {
            lock_bars().unregister(id);
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(t) = self.ticker.take() {
            t.abort();
            status(
                &self.label,
                self.total,
                &self.counters,
                self.started.elapsed(),
                &self.unit,
                &self.bytes_verb,
            );
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(id) = self.bar_id.take() {
            lock_bars().unregister(id);
        }
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

/// Writes the status line; in JSON mode its numbers are fields too (`pass`, `unit`,
/// `done`, `total` (0: unknown), `failed`, `bytes`, `elapsed_s`).
fn status(label: &str, total: u64, c: &Counters, elapsed: Duration, unit: &str, verb: &str) {
    let mut f = serde_json::Map::new();
    f.insert("pass".into(), label.into());
    f.insert("unit".into(), unit.into());
    f.insert("done".into(), c.rows.load(Ordering::Relaxed).into());
    f.insert("total".into(), total.into());
    f.insert("failed".into(), c.failed.load(Ordering::Relaxed).into());
    f.insert("bytes".into(), c.bytes.load(Ordering::Relaxed).into());
    f.insert(
        "elapsed_s".into(),
        ((elapsed.as_secs_f64() * 10.0).round() / 10.0).into(),
    );
    let text = status_line(label, total, c, elapsed, unit, verb);
    super::log::line("INFO", &text, f);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A terminal that records what is done to it, in order, next to the log lines.
    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Recorder {
        fn push(&self, event: String) -> std::io::Result<()> {
            self.0.lock().unwrap().push(event);
            Ok(())
        }

        fn events(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl indicatif::TermLike for Recorder {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("up {n}"))
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("down {n}"))
        }
        fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("right {n}"))
        }
        fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("left {n}"))
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("draw {s}"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("draw {s}"))
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("clear".to_owned())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The log sink: stderr's stand-in, writing into the recorder's event list.
    struct Sink(Recorder);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .push(format!("log {}", String::from_utf8_lossy(bytes).trim_end()))?;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_go_above_a_drawn_bar_and_plain_without_one() {
        let term = Recorder::default();
        let bar = ProgressBar::with_draw_target(
            Some(10),
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        );
        bar.set_style(ProgressStyle::with_template("BAR {pos}/{len}").unwrap());
        let mut bars = Bars::default();
        let id = bars.register(&bar);
        bar.inc(3);
        bar.tick();
        assert!(
            term.events().iter().any(|e| e.contains("BAR 3/10")),
            "{:?}",
            term.events()
        );
        let before = term.events().len();

        write_above(bars.newest(), &mut Sink(term.clone()), b"WARN first\n").unwrap();
        let events = term.events()[before..].to_vec();
        let log = events.iter().position(|e| e == "log WARN first");
        let log = log.unwrap_or_else(|| panic!("{events:?}"));
        assert!(
            events[..log].iter().any(|e| e == "clear"),
            "the bar is cleared before the line: {events:?}"
        );
        assert!(
            events[log + 1..].iter().any(|e| e.contains("BAR 3/10")),
            "the bar is drawn again below the line: {events:?}"
        );

        // Once the bar is gone, lines go straight to the sink, the terminal untouched.
        bars.unregister(id);
        assert!(bars.newest().is_none());
        let before = term.events().len();
        write_above(bars.newest(), &mut Sink(term.clone()), b"WARN second\n").unwrap();
        assert_eq!(term.events()[before..], ["log WARN second".to_owned()]);
    }

    #[test]
    fn the_newest_bar_is_the_one_suspended() {
        let mut bars = Bars::default();
        let (a, b) = (ProgressBar::hidden(), ProgressBar::hidden());
        let ia = bars.register(&a);
        let ib = bars.register(&b);
        assert_ne!(ia, ib);
        b.set_position(7);
        assert_eq!(bars.newest().map(|p| p.position()), Some(7));
        bars.unregister(ib);
        assert_eq!(bars.newest().map(|p| p.position()), Some(0));
        bars.unregister(ib);
        bars.unregister(ia);
        assert!(bars.newest().is_none());
    }

    #[test]
    fn a_log_line_is_written_once_on_flush_or_drop() {
        let mut line = LogLine::default();
        line.write_all(b"").unwrap();
        assert!(line.buf.is_empty());
        line.write_all(b"part one ").unwrap();
        line.write_all(b"part two\n").unwrap();
        assert_eq!(line.buf, b"part one part two\n");
        let mut sink = Vec::new();
        line.emit_to(&mut sink).unwrap();
        line.emit_to(&mut sink).unwrap();
        assert_eq!(sink, b"part one part two\n", "handed on once, then cleared");
        assert!(line.buf.is_empty());
    }
}
