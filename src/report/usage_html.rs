//! `du --html FILE` (issue 15.7): the du report as one self-contained HTML page — inline
//! CSS and inline SVG charts, no script, and a Content-Security-Policy of
//! `default-src 'none'` so the page can fetch nothing — showing the categories (bucket
//! beside database), the keys outside the layout and the growth per month of creation
//! ([`super::usage::DuReport::months`]), so an admin sees what is eating the bill.

use std::fmt::Write as _;

use humansize::{BINARY, format_size};

use super::usage::DuReport;

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn size(b: u64) -> String {
    format_size(b, BINARY)
}

/// One horizontal bar chart: `rows` of (label, [(value, css class)]), values in bytes,
/// bars stacked in the order given. Each bar segment is an SVG `rect` with class
/// `bar <class>` and a `title` with its exact value.
fn bar_chart(id: &str, rows: &[(String, Vec<(u64, &str)>)]) -> String {
    let max = rows
        .iter()
        .map(|(_, segs)| segs.iter().map(|(v, _)| *v).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (label_w, bar_w, row_h) = (340.0, 480.0, 22.0);
    let height = row_h * rows.len() as f64 + 4.0;
    let mut svg = format!(
        r#"<svg id="{id}" width="{w}" height="{height}" role="img">"#,
        w = label_w + bar_w + 110.0
    );
    for (i, (label, segs)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 2.0;
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{ty}" text-anchor="end">{l}</text>"#,
            x = label_w - 8.0,
            ty = y + 15.0,
            l = esc(label)
        );
        let mut x = label_w;
        let mut total = 0;
        for (v, class) in segs {
            let w = *v as f64 / max as f64 * bar_w;
            let _ = write!(
                svg,
                r#"<rect class="bar {class}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h}"><title>{l}: {s} ({v} bytes)</title></rect>"#,
                h = row_h - 6.0,
                l = esc(label),
                s = size(*v),
            );
            x += w;
            total += v;
        }
        let _ = write!(
            svg,
            r#"<text x="{tx:.1}" y="{ty}">{s}</text>"#,
            tx = x + 6.0,
            ty = y + 15.0,
            s = size(total)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole page. `generated` is shown as is (an RFC 3339 time).
pub fn render(report: &DuReport, generated: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mastomedia du: {storage}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
td:first-child, th:first-child, td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
svg text {{ font: 12px system-ui, sans-serif; fill: #222; }}
.bucket {{ fill: #3b6fb6; }} .database {{ fill: #bbb; }}
.cache {{ fill: #e08a2c; }} .outside {{ fill: #3b6fb6; }} .unrecognised {{ fill: #999; }}
.key span {{ display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }}
.key .bucket, .key .outside {{ background: #3b6fb6; }} .key .database {{ background: #bbb; }}
.key .cache {{ background: #e08a2c; }} .key .unrecognised {{ background: #999; }}
</style></head><body>
<h1>mastomedia du</h1>
<p>{storage}{prefix} — {objects} objects, {bytes} ({exact} bytes){partial}. Generated {generated}.</p>
"#,
        storage = esc(&report.storage),
        prefix = if report.prefix.is_empty() {
            String::new()
        } else {
            format!(", prefix <code>{}</code>", esc(&report.prefix))
        },
        objects = report.total.objects,
        bytes = size(report.total.bytes),
        exact = report.total.bytes,
        partial = if report.complete {
            ""
        } else {
            " (interrupted: partial)"
        },
        generated = esc(generated),
    );
    h.push_str("<h2>Categories: bucket beside database</h2>\n");
    h.push_str(r#"<p class="key"><span class="bucket"></span>in the bucket<span class="database"></span>the database's sum (originals only)</p>"#);
    let mut rows = Vec::new();
    // Only categories with something in the bucket or the database: an empty slot is
    // noise in a chart (the table below lists every category).
    for c in report
        .categories
        .iter()
        .filter(|c| c.bytes > 0 || c.db_bytes.is_some_and(|d| d > 0))
    {
        let name = format!(
            "{}{}/{}",
            if c.cache { "cache/" } else { "" },
            c.class,
            c.attachment
        );
        rows.push((name.clone(), vec![(c.bytes, "bucket")]));
        if let Some(d) = c.db_bytes {
            rows.push((
                format!("{name} (database)"),
                vec![(d.max(0) as u64, "database")],
            ));
        }
    }
    if report.other.objects > 0 {
        rows.push((
            "outside the layout".to_owned(),
            vec![(report.other.bytes, "bucket")],
        ));
    }
    h.push_str(&bar_chart("categories", &rows));
    h.push_str("\n<table><tr><th>category</th><th>cache/</th><th>objects</th><th>bytes</th><th>database</th><th>difference</th></tr>\n");
    for c in &report.categories {
        let _ = writeln!(
            h,
            "<tr><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(c.class),
            esc(c.attachment),
            if c.cache { "yes" } else { "no" },
            c.objects,
            size(c.bytes),
            c.db_bytes.map_or("-".to_owned(), |d| size(d.max(0) as u64)),
            c.difference.map_or("-".to_owned(), |d| {
                let s = size(d.unsigned_abs());
                if d < 0 {
                    format!("-{s}")
                } else {
                    format!("+{s}")
                }
            }),
        );
    }
    let _ = writeln!(
        h,
        "<tr><td>outside the layout</td><td></td><td>{}</td><td>{}</td><td>-</td><td>-</td></tr></table>",
        report.other.objects,
        size(report.other.bytes)
    );
    if !report.other.examples.is_empty() {
        h.push_str("<p>Keys outside the layout, e.g.: ");
        let ex: Vec<String> = report
            .other
            .examples
            .iter()
            .map(|k| format!("<code>{}</code>", esc(k)))
            .collect();
        h.push_str(&ex.join(", "));
        h.push_str("</p>\n");
    }
    if let Some(months) = &report.months {
        h.push_str("<h2>Growth per month of creation</h2>\n");
        h.push_str(r#"<p class="key"><span class="cache"></span>under cache/ (remote copies)<span class="outside"></span>outside cache/ (local uploads, old remote copies)<span class="unrecognised"></span>outside the layout</p>"#);
        let rows: Vec<(String, Vec<(u64, &str)>)> = months
            .iter()
            .map(|m| {
                (
                    m.month.clone(),
                    vec![
                        (m.cache.bytes, "cache"),
                        (m.outside_cache.bytes, "outside"),
                        (m.unrecognised.bytes, "unrecognised"),
                    ],
                )
            })
            .collect();
        h.push_str(&bar_chart("months", &rows));
        h.push_str("\n<p><code>unknown</code>: keys with no creation time (serial ids such as accounts and preview cards, keys outside the layout).</p>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_nothing_is_fetched() {
        let mut r = DuReport {
            storage: "s3://b<script>".into(),
            ..DuReport::default()
        };
        r.other.examples = vec!["a\"b<c>.txt".into()];
        r.other.objects = 1;
        let html = render(&r, "2026-12-01T00:00:00Z");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("s3://b&lt;script&gt;"));
        assert!(html.contains("a&quot;b&lt;c&gt;.txt"));
        assert!(html.contains("default-src 'none'"));
        assert!(!html.contains(" src="), "{html}");
    }
}
