//! Range listings that size a batch of Mastodon keys at about one listing page per 1000
//! objects (`docs/ARCHITECTURE.md`, "Prune pipeline"; issue 11): the batch's keys of one
//! attachment folder and one id width sort like their ids, so one `ListObjectsV2` range
//! (`start-after` just before the first key, paging stopped once past the last) merged
//! with the sorted keys gives every size and every "already gone" of that run of rows.
//!
//! Mastodon's keys are `<attachment folder>/<id partition>/<style>/<file>`, the partition
//! being groups of three digits (`src/plan/layout.rs`; 3 groups for serial ids, 6 for
//! modern snowflakes, 4 or 5 for 10–17-digit ids). Keys of one folder and one group count
//! sort bytewise like the ids; partitions of other widths interleave with them, so each
//! (folder, group count) is its own range, and objects of other widths (or of rows that
//! are not candidates) inside a range are merely listed, never answered for a key.
//!
//! The rules that keep sizes exact: a key is answered only by a successful page that
//! covers it (listed: its size; passed over by the listing: "already gone"); a key no
//! successful page covered is left for the per-partition sizing
//! (`plan::partition::listing_prefixes`). A range is listed only where the per-partition
//! way would take at least two listings, and its paging stops as soon as the objects per
//! key seen so far project more pages than the per-partition listings the rest of its keys
//! would take ([`RangeMerge::feed`]): a quiet instance never lists more than today.
//! This module decides; `pool::send_window` (a prune window of chunks) and
//! `pool::stat_with_retries` (in `src/pool/mod.rs`) send.

use std::collections::BTreeMap;

use super::partition::{listing_prefixes, partition_prefix};

/// Objects per listing page the estimate assumes (`ListObjectsV2`'s default `MaxKeys`).
pub const PAGE_OBJECTS: u64 = 1000;

/// A key's range class: its attachment folder (the partition folder without its trailing
/// three-digit groups, e.g. `cache/media_attachments/files/`) and the number of those
/// groups (its id width). `None` for a key without an id partition (fewer than three
/// segments, or no three-digit group before `<style>/<file>`).
pub fn range_class(key: &str) -> Option<(&str, usize)> {
    let partition = partition_prefix(key);
    let mut folder = partition.trim_end_matches('/');
    let mut groups = 0;
    loop {
        let (head, last) = folder.rsplit_once('/').unwrap_or(("", folder));
        if last.len() != 3 || !last.bytes().all(|b| b.is_ascii_digit()) {
            break;
        }
        groups += 1;
        folder = head;
        if head.is_empty() {
            break;
        }
    }
    if groups == 0 {
        return None;
    }
    let cut = if folder.is_empty() {
        0
    } else {
        folder.len() + 1
    };
    Some((&partition[..cut], groups))
}

/// One range to list: every object below `prefix` after `start_after`, in key order, up
/// to (at least) the last of `keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePlan {
    /// The folder to list: the longest `/`-ended common prefix of the first and last key
    /// (the attachment folder at least).
    pub prefix: String,
    /// `start-after` of the first page: the first key without its last character, so
    /// the first key is listed first or right after the few keys that share that stem.
    pub start_after: String,
    /// The keys this range answers, sorted bytewise (S3's listing order), without repeats.
    pub keys: Vec<String>,
}

/// The ranges that size `keys` (pass only keys `store::validate_key` accepts): one per
/// (attachment folder, id width) whose keys the per-partition sizing would list with at
/// least two requests. Keys outside every range (other classes, no partition) are sized
/// per partition as before. Ordered by prefix, then first key.
pub fn plan_ranges<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<RangePlan> {
    let mut classes: BTreeMap<(&str, usize), Vec<&str>> = BTreeMap::new();
    for k in keys {
        if let Some(c) = range_class(k) {
            classes.entry(c).or_default().push(k);
        }
    }
    let mut out = Vec::new();
    for (_, mut members) in classes {
        members.sort_unstable();
        members.dedup();
        if listing_prefixes(members.iter().copied()).len() < 2 {
            continue;
        }
        let (first, last) = (members[0], members[members.len() - 1]);
        out.push(RangePlan {
            prefix: common_folder(first, last).to_owned(),
            start_after: without_last_char(first).to_owned(),
            keys: members.into_iter().map(str::to_owned).collect(),
        });
    }
    out.sort_by(|a, b| (&a.prefix, &a.keys[0]).cmp(&(&b.prefix, &b.keys[0])));
    out
}

/// The longest prefix of both `a` and `b` that ends with `/` (`""` when none).
fn common_folder<'a>(a: &'a str, b: &str) -> &'a str {
    let same = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    match a[..same].rfind('/') {
        Some(i) => &a[..=i],
        None => "",
    }
}

/// `key` without its last character (a `start-after` that sorts just before `key`).
fn without_last_char(key: &str) -> &str {
    let mut chars = key.chars();
    chars.next_back();
    chars.as_str()
}

/// What to do after a page ([`RangeMerge::feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every key of the range is answered: stop paging.
    Done,
    /// Request the next page.
    NextPage,
    /// The range is too sparse: stop paging; the keys not yet answered are sized per
    /// partition.
    GiveUp,
}

/// The merge of one range's listing pages with its sorted keys (borrowed from the
/// [`RangePlan`]: a window's keys are not copied again while it is listed).
#[derive(Debug, Clone)]
pub struct RangeMerge<'p> {
    keys: &'p [String],
    /// Per key: `None` not covered yet, `Some(size)` answered (`Some(None)`: gone).
    answers: Vec<Option<Option<u64>>>,
    /// Index of the first key not yet passed by the listing.
    next: usize,
    /// Objects listed so far.
    listed: u64,
}

impl<'p> RangeMerge<'p> {
    /// A merge of `plan`'s keys, nothing listed yet.
    pub fn new(plan: &'p RangePlan) -> Self {
        Self {
            keys: &plan.keys,
            answers: vec![None; plan.keys.len()],
            next: 0,
            listed: 0,
        }
    }

    /// Merges one successful page (`objects`: key and size, in key order, each after the
    /// previous page's last; `more`: the listing has further pages). A key equal to a
    /// listed one gets its size; a key the listing has passed (sorts before a listed key,
    /// or anywhere once the listing ended) is gone. Then: [`Step::Done`] when every key is
    /// answered or the listing ended; [`Step::GiveUp`] when the objects listed per answered
    /// key project more pages for the remaining keys than the per-partition listings
    /// those keys would take; else [`Step::NextPage`].
    pub fn feed<'a>(
        &mut self,
        objects: impl IntoIterator<Item = (&'a str, u64)>,
        more: bool,
    ) -> Step {
        for (key, size) in objects {
            self.listed += 1;
            while self.next < self.keys.len() && self.keys[self.next].as_str() < key {
                self.answers[self.next] = Some(None);
                self.next += 1;
            }
            if self.next < self.keys.len() && self.keys[self.next] == key {
                self.answers[self.next] = Some(Some(size));
                self.next += 1;
            }
        }
        if !more {
            for a in &mut self.answers[self.next..] {
                *a = Some(None);
            }
            self.next = self.keys.len();
        }
        if self.next == self.keys.len() {
            return Step::Done;
        }
        let rest = &self.keys[self.next..];
        let per_partition = listing_prefixes(rest.iter().map(String::as_str)).len() as u64;
        if self.next == 0 {
            return Step::GiveUp;
        }
        // Pages the rest would take at the density seen so far, rounded up.
        let rest_objects = (rest.len() as u64).saturating_mul(self.listed) / self.next as u64;
        let pages = rest_objects.div_ceil(PAGE_OBJECTS).max(1);
        if pages <= per_partition {
            Step::NextPage
        } else {
            Step::GiveUp
        }
    }

    /// The answered keys (size, or `None`: gone), in key order; keys no page covered are
    /// absent.
    pub fn answers(self) -> impl Iterator<Item = (&'p str, Option<u64>)> {
        self.keys
            .iter()
            .map(String::as_str)
            .zip(self.answers)
            .filter_map(|(k, a)| a.map(|a| (k, a)))
    }

    /// The answer for each key of the plan, in the plan's order (`None`: no page covered
    /// it; `Some(None)`: gone), so the caller can move the plan's keys out beside them.
    pub fn into_answers(self) -> Vec<Option<Option<u64>>> {
        self.answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "cache/media_attachments/files/";

    fn key(id: u64, style: &str) -> String {
        let digits = format!("{id:018}");
        let groups: Vec<&str> = (0..6).map(|i| &digits[i * 3..i * 3 + 3]).collect();
        format!("{F}{}/{style}/{id:016x}.png", groups.join("/"))
    }

    #[test]
    fn range_class_table() {
        for (k, want) in [
            (
                format!("{F}109/345/678/901/234/567/original/a.png"),
                Some((F, 6)),
            ),
            // A 17-digit id: five groups, its own class.
            (format!("{F}999/999/999/999/999/small/a.png"), Some((F, 5))),
            (
                "accounts/avatars/000/004/242/original/a.png".to_owned(),
                Some(("accounts/avatars/", 3)),
            ),
            ("000/004/242/original/a.png".to_owned(), Some(("", 3))),
            ("robots.txt".to_owned(), None),
            ("x/original/a.png".to_owned(), None),
            (format!("{F}original/a.png"), None),
        ] {
            assert_eq!(range_class(&k), want, "{k}");
        }
    }

    #[test]
    fn one_range_per_folder_and_width() {
        let keys = [
            key(109_345_678_901_234_567, "original"),
            key(109_345_678_901_234_567, "small"),
            key(109_345_999_000_111_222, "original"),
            key(109_345_999_000_111_222, "original"), // a repeat
            // A 17-digit neighbour width: alone in its class, one partition: not ranged.
            format!("{F}099/999/999/999/999/original/n.png"),
            // Serial avatars of two partitions: their own range.
            "accounts/avatars/000/004/242/original/a.png".to_owned(),
            "accounts/avatars/000/004/243/original/b.png".to_owned(),
            "robots.txt".to_owned(),
        ];
        let got = plan_ranges(keys.iter().map(String::as_str));
        assert_eq!(
            got,
            [
                RangePlan {
                    prefix: "accounts/avatars/000/004/".into(),
                    start_after: "accounts/avatars/000/004/242/original/a.pn".into(),
                    keys: vec![
                        "accounts/avatars/000/004/242/original/a.png".into(),
                        "accounts/avatars/000/004/243/original/b.png".into(),
                    ],
                },
                RangePlan {
                    prefix: format!("{F}109/345/"),
                    start_after: key(109_345_678_901_234_567, "original")
                        .trim_end_matches('g')
                        .into(),
                    keys: vec![
                        key(109_345_678_901_234_567, "original"),
                        key(109_345_678_901_234_567, "small"),
                        key(109_345_999_000_111_222, "original"),
                    ],
                },
            ]
        );
        // One row (one partition): the per-partition listing is as cheap.
        let one = [key(1, "original"), key(1, "small")];
        assert!(plan_ranges(one.iter().map(String::as_str)).is_empty());
        assert!(plan_ranges([]).is_empty());
    }

    #[test]
    fn widths_sharing_a_folder_are_separate_ranges_and_never_answer_each_other() {
        // Serial and snowflake account ids in one attachment folder: their keys
        // interleave bytewise (`000/…` < `109/…` but a 17-digit folder holds 18-digit
        // ones), so each width is its own range.
        let a = "accounts/avatars/";
        let serial = [
            format!("{a}000/004/242/original/s1.png"),
            format!("{a}000/005/242/original/s2.png"),
        ];
        let five = [
            format!("{a}100/000/000/000/000/original/f1.png"),
            format!("{a}100/000/001/000/000/original/f2.png"),
        ];
        let six = [
            format!("{a}100/000/000/000/000/123/original/x1.png"),
            format!("{a}109/345/678/901/234/567/original/x2.png"),
        ];
        let all: Vec<&str> = serial
            .iter()
            .chain(&five)
            .chain(&six)
            .map(String::as_str)
            .collect();
        let plans = plan_ranges(all.iter().copied());
        let mut by_width: Vec<Vec<String>> = plans.iter().map(|p| p.keys.clone()).collect();
        by_width.sort();
        let mut want = vec![serial.to_vec(), five.to_vec(), six.to_vec()];
        want.sort();
        assert_eq!(by_width, want);
        // The 17-digit range's listing passes over the 18-digit object inside its folder
        // without answering for it, and a 17-digit key missing from the listing is gone.
        let plan = plans.iter().find(|p| p.keys == five).unwrap();
        assert_eq!(plan.prefix, format!("{a}100/000/"));
        let mut m = RangeMerge::new(plan);
        let listed = [(six[0].as_str(), 9), (five[0].as_str(), 4)];
        assert_eq!(m.feed(listed, false), Step::Done);
        let got: Vec<_> = m.answers().map(|(k, a)| (k.to_owned(), a)).collect();
        assert_eq!(got, [(five[0].clone(), Some(4)), (five[1].clone(), None)]);
    }

    fn plan_of(ids: &[u64]) -> RangePlan {
        let keys: Vec<String> = ids
            .iter()
            .flat_map(|&i| [key(i, "original"), key(i, "small")])
            .collect();
        plan_ranges(keys.iter().map(String::as_str)).remove(0)
    }

    #[test]
    fn merge_answers_listed_sizes_and_passed_keys_as_gone() {
        let base = 111_677_748_019_200_000;
        // Rows a coarse folder apart (ids 1e9 apart), so each takes its own listing.
        let g = 1_000_000_000;
        let plan = plan_of(&[base, base + 7 * g, base + 9 * g]);
        let mut m = RangeMerge::new(&plan);
        // Listed: row base (both styles), a non-candidate in between, row base+9's small
        // only; base+7 is passed over (gone); base+9's original sorts before its small and
        // was not listed: gone.
        let other = key(base + 8 * g, "original");
        let listed = [
            (key(base, "original"), 10),
            (key(base, "small"), 2),
            (other, 99),
            (key(base + 9 * g, "small"), 3),
        ];
        let step = m.feed(listed.iter().map(|(k, s)| (k.as_str(), *s)), true);
        assert_eq!(step, Step::Done);
        let got: Vec<_> = m.answers().map(|(k, a)| (k.to_owned(), a)).collect();
        assert_eq!(
            got,
            [
                (key(base, "original"), Some(10)),
                (key(base, "small"), Some(2)),
                (key(base + 7 * g, "original"), None),
                (key(base + 7 * g, "small"), None),
                (key(base + 9 * g, "original"), None),
                (key(base + 9 * g, "small"), Some(3)),
            ]
        );
    }

    #[test]
    fn the_end_of_the_listing_covers_every_remaining_key() {
        let base = 111_677_748_019_200_000;
        let plan = plan_of(&[base, base + 1]);
        let mut m = RangeMerge::new(&plan);
        let first = key(base, "original");
        assert_eq!(m.feed([(first.as_str(), 5)], false), Step::Done);
        let gone = m.answers().filter(|(_, a)| a.is_none()).count();
        assert_eq!(gone, 3);
    }

    #[test]
    fn uncovered_keys_stay_unanswered_and_density_decides_paging() {
        // 4 rows (8 keys) in 4 coarse folders. A dense first page: 2 keys answered by 2
        // listed objects; the rest projects 1 page ≤ 3 partition listings: next page.
        let base = 111_677_748_019_200_000;
        let g = 1_000_000_000;
        let plan = plan_of(&[base, base + g, base + 2 * g, base + 3 * g]);
        let mut m = RangeMerge::new(&plan);
        let (a, b) = (key(base, "original"), key(base, "small"));
        assert_eq!(
            m.feed([(a.as_str(), 1), (b.as_str(), 1)], true),
            Step::NextPage
        );
        let answered: Vec<_> = m.clone().answers().map(|(k, _)| k).collect();
        assert_eq!(answered, [a.clone(), b.clone()], "only covered keys");

        // A sparse first page: 2000 non-candidates before the second key; 7 keys left
        // would take ceil(7 × 2001 / 1 / 1000) = 15 pages > 4 partition listings.
        let mut m = RangeMerge::new(&plan);
        let noise: Vec<String> = (0..2000)
            .map(|i| format!("{}x{i:05}", a.trim_end_matches(".png")))
            .collect();
        let page = std::iter::once((a.as_str(), 1)).chain(noise.iter().map(|k| (k.as_str(), 1)));
        assert_eq!(m.feed(page, true), Step::GiveUp);
        assert_eq!(m.answers().count(), 1, "the rest is sized per partition");

        // A first page that reaches no key at all: give up.
        let mut m = RangeMerge::new(&plan);
        let before = plan.start_after.clone();
        assert_eq!(m.feed([(before.as_str(), 1)], true), Step::GiveUp);
        assert_eq!(m.answers().count(), 0);
    }
}
