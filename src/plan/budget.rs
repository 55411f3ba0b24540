//! `prune --max-cache-size` (issue 14, item 1): the size argument ([`parse_size`]) and the
//! budget decision ([`plan_budget`]): given every measured row of the cache (bytes from the
//! storage's own listing, the age prune's rule compares with the cutoff, and whether the
//! `--keep-interacted` / `--domain` / profile rules let it go), the one cutoff date that
//! removes the oldest rows first, across kinds, until the rest fits.
//!
//! Pure: `pool/budget.rs` measures, `pool/prune.rs` runs the passes with the cutoffs.

use chrono::NaiveDateTime;

/// Why a `--max-cache-size` argument was refused (a usage error, exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional unit.
    #[error(
        "{0:?} is not a size: give a number of bytes (500000000) or a number and a unit: 150GiB, 200GB, 500MB (B, kB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024)"
    )]
    Syntax(String),
    /// Zero, negative, or too large to count in bytes.
    #[error(
        "{0:?} is not a usable cache size: it must be above 0 and below 16 EiB (e.g. 150GiB, 200GB, 500MB)"
    )]
    Range(String),
}

/// Parses a cache size: plain bytes (`500000000`) or a number with a unit, case-insensitive,
/// an optional space between: `B`, `k`/`kB`, `M`/`MB`, `G`/`GB`, `T`/`TB`, `P`/`PB` (powers
/// of 1000, as providers bill) and `KiB`, `MiB`, `GiB`, `TiB`, `PiB` (powers of 1024, as
/// `du` prints). A decimal fraction is allowed (`1.5TB`); the result is rounded down to
/// whole bytes. Errors: [`SizeError::Syntax`] for anything else (`lots`, `5 GBs`),
/// [`SizeError::Range`] for `0`, a negative number (`-5GB`) or more than `u64::MAX` bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(SizeError::Range(s.to_owned()));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim_start();
    let valid_number = !num.is_empty()
        && num.chars().filter(|&c| c == '.').count() <= 1
        && num.chars().any(|c| c.is_ascii_digit());
    if !valid_number {
        return Err(SizeError::Syntax(s.to_owned()));
    }
    let factor: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        _ => return Err(SizeError::Syntax(s.to_owned())),
    };
    // Exact decimal arithmetic: integer part and up to 18 fraction digits.
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let frac = &frac[..frac.len().min(18)];
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| SizeError::Range(s.to_owned()))?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| SizeError::Syntax(s.to_owned()))?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = int
        .checked_mul(factor)
        .and_then(|b| b.checked_add(frac_value.checked_mul(factor)? / scale))
        .ok_or_else(|| SizeError::Range(s.to_owned()))?;
    match u64::try_from(bytes) {
        Ok(0) | Err(_) => Err(SizeError::Range(s.to_owned())),
        Ok(b) => Ok(b),
    }
}

/// One measured row of the cache, as the budget sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetRow {
    /// Which pass's kind (an index into the run's selections).
    pub kind: usize,
    /// The moment prune's rule for the kind compares with the cutoff (media: `created_at`;
    /// profiles: the latest of `last_webfingered_at`, `updated_at` and the newest post;
    /// cards: `updated_at`), UTC: the row goes with any cutoff at or after it.
    pub age: NaiveDateTime,
    /// The filters of the run (`--keep-interacted`, `--domain`, `--exclude-domain`, the
    /// profile rules) let it go. Rows they keep still count toward the size.
    pub prunable: bool,
    /// Bytes of its objects in the storage now (every style and thumbnail).
    pub bytes: u64,
}

/// What the budget decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetDecision {
    /// Bytes of every measured row.
    pub total_bytes: u64,
    /// Bytes of the rows the filters keep (never pruned, still counted).
    pub kept_bytes: u64,
    /// The cutoff the budget implies (inclusive: rows of that age or older go), `None`
    /// when the cache fits already (after the retention floors).
    pub cutoff: Option<NaiveDateTime>,
    /// Rows and bytes the cutoffs (budget and floors together) remove.
    pub rows_removed: u64,
    /// See `rows_removed`.
    pub bytes_removed: u64,
    /// The cache fits after the removal. False only when the kept rows alone (with what
    /// cannot go) exceed the budget: then every prunable row goes and it is still over.
    pub met: bool,
}

impl BudgetDecision {
    /// The inclusive cutoff for `kind`: the later of the budget's and of its retention
    /// floor (whichever removes more wins); `None`: nothing of that kind goes.
    pub fn kind_cutoff(&self, floor: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
        match (self.cutoff, floor) {
            (Some(c), Some(f)) => Some(c.max(f)),
            (c, f) => c.or(f),
        }
    }
}

/// Decides the budget's cutoff: rows are removed oldest first (by [`BudgetRow::age`],
/// across kinds) until the bytes left are at most `max_bytes`. `floors[kind]` is a kind's
/// own retention cutoff (inclusive; `--days`, the preview card days): those rows go
/// whatever the budget says. Rows of the same age go together (a cutoff cannot split
/// them), so the cache ends below the budget by less than the rows of the last age
/// removed. Rows that are not [`BudgetRow::prunable`] never go.
pub fn plan_budget(
    rows: &[BudgetRow],
    max_bytes: u64,
    floors: &[Option<NaiveDateTime>],
) -> BudgetDecision {
    let floor = |r: &BudgetRow| floors.get(r.kind).copied().flatten();
    let forced = |r: &BudgetRow| r.prunable && floor(r).is_some_and(|f| r.age <= f);
    let total_bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    let kept_bytes: u64 = rows.iter().filter(|r| !r.prunable).map(|r| r.bytes).sum();
    let mut bytes_removed: u64 = rows.iter().filter(|r| forced(r)).map(|r| r.bytes).sum();
    let mut rows_removed = rows.iter().filter(|r| forced(r)).count() as u64;
    let mut rest: Vec<&BudgetRow> = rows.iter().filter(|r| r.prunable && !forced(r)).collect();
    rest.sort_by_key(|r| r.age);
    let mut cutoff = None;
    let mut i = 0;
    while total_bytes - bytes_removed > max_bytes && i < rest.len() {
        let age = rest[i].age;
        while i < rest.len() && rest[i].age == age {
            bytes_removed += rest[i].bytes;
            rows_removed += 1;
            i += 1;
        }
        cutoff = Some(age);
    }
    BudgetDecision {
        total_bytes,
        kept_bytes,
        cutoff,
        rows_removed,
        bytes_removed,
        met: total_bytes - bytes_removed <= max_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        let cases = [
            ("150GiB", 150 * (1u64 << 30)),
            ("200GB", 200_000_000_000),
            ("500MB", 500_000_000),
            ("500 mb", 500_000_000),
            ("123456", 123_456),
            ("1B", 1),
            ("1.5TB", 1_500_000_000_000),
            ("0.5KiB", 512),
            ("2k", 2000),
            (" 3 TiB ", 3 << 40),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn bad_sizes_say_what_is_accepted() {
        for s in ["0", "0GB", "-5GB", "-1", "0.0001B", "99999999999999999999"] {
            assert!(matches!(parse_size(s), Err(SizeError::Range(_))), "{s}");
        }
        for s in ["lots", "", "GB", "5 GBs", "1.2.3MB", ".", "5e9", "5 G B"] {
            let e = parse_size(s).unwrap_err();
            assert!(matches!(e, SizeError::Syntax(_)), "{s}");
            assert!(e.to_string().contains("150GiB"), "{e}");
        }
    }

    fn at(day: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 1, day)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
    }

    fn row(kind: usize, day: u32, prunable: bool, bytes: u64) -> BudgetRow {
        BudgetRow {
            kind,
            age: at(day),
            prunable,
            bytes,
        }
    }

    #[test]
    fn oldest_go_first_across_kinds_until_it_fits() {
        let rows = [
            row(0, 5, true, 100),
            row(1, 1, true, 100),
            row(0, 2, false, 100), // kept by the filters: counted, never removed
            row(0, 3, true, 100),
            row(2, 4, true, 100),
        ];
        let d = plan_budget(&rows, 250, &[None, None, None]);
        assert_eq!(d.total_bytes, 500);
        assert_eq!(d.kept_bytes, 100);
        // Day 1 (kind 1), day 3, day 4 go: 200 left.
        assert_eq!(d.cutoff, Some(at(4)));
        assert_eq!((d.rows_removed, d.bytes_removed, d.met), (3, 300, true));
        // Fits already: nothing goes.
        let d = plan_budget(&rows, 500, &[None, None, None]);
        assert_eq!((d.cutoff, d.rows_removed, d.met), (None, 0, true));
        // Kept rows alone exceed it: every prunable row goes, not met.
        let d = plan_budget(&rows, 50, &[None, None, None]);
        assert_eq!(
            (d.cutoff, d.bytes_removed, d.met),
            (Some(at(5)), 400, false)
        );
    }

    #[test]
    fn a_retention_floor_removes_its_rows_first_and_the_later_cutoff_wins() {
        let rows = [
            row(0, 1, true, 100),
            row(0, 2, true, 100),
            row(0, 3, true, 100),
            row(1, 1, true, 100),
        ];
        // --days would remove days 1–2 of kind 0; the budget needs only one row.
        let d = plan_budget(&rows, 300, &[Some(at(2)), None]);
        assert_eq!((d.cutoff, d.bytes_removed), (None, 200));
        assert_eq!(d.kind_cutoff(Some(at(2))), Some(at(2)));
        assert_eq!(d.kind_cutoff(None), None);
        // A smaller budget takes the oldest row the floor left (kind 1's); kind 0 keeps
        // its later floor.
        let d = plan_budget(&rows, 100, &[Some(at(2)), None]);
        assert_eq!((d.cutoff, d.bytes_removed), (Some(at(1)), 300));
        assert_eq!(d.kind_cutoff(Some(at(2))), Some(at(2)));
        // Smaller still: past the floor.
        let d = plan_budget(&rows, 50, &[Some(at(2)), None]);
        assert_eq!((d.cutoff, d.bytes_removed), (Some(at(3)), 400));
        assert_eq!(d.kind_cutoff(Some(at(2))), Some(at(3)));
    }

    #[test]
    fn rows_of_one_age_go_together() {
        let rows = [
            row(0, 1, true, 100),
            row(1, 1, true, 100),
            row(0, 2, true, 10),
        ];
        let d = plan_budget(&rows, 150, &[None, None]);
        assert_eq!(
            (d.cutoff, d.rows_removed, d.bytes_removed),
            (Some(at(1)), 2, 200)
        );
    }
}
