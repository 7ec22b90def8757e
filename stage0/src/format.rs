//! rkt's text output formats, byte for byte: Go's `text/tabwriter` table layout, go-humanize
//! sizes and relative times, Go's time layout, and JSON re-indented with tabs.

use std::time::SystemTime;

use crate::pod::status::unix_nanos;

/// Go's `text/tabwriter` with minwidth 0, tabwidth 8, padding 1, padchar '\t' (what rkt
/// uses): every cell but a row's last is followed by tabs up to its column's width. Control
/// characters in cells (image labels and names come from images) are escaped
/// ([`escape_control`]), so a cell can neither break the table nor drive the terminal.
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape_control(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    const TABWIDTH: usize = 8;
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count() + 1);
                }
            }
        }
    }
    let mut s = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            s.push_str(c);
            if i + 1 < r.len() {
                let w = widths.get(i).copied().unwrap_or(0).div_ceil(TABWIDTH) * TABWIDTH;
                let tabs = w
                    .saturating_sub(c.chars().count())
                    .div_ceil(TABWIDTH)
                    .max(1);
                s.push_str(&"\t".repeat(tabs));
            }
        }
        s.push('\n');
    }
    s
}

pub use pod_abi::text::escape_control;

/// go-humanize `IBytes`: `82 B`, `1.5 KiB`, `12 MiB`.
pub fn ibytes(n: u64) -> String {
    const SIZES: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 10 {
        return format!("{n} B");
    }
    let f = n as f64;
    let e = f.log(1024.0).floor();
    let suffix = SIZES.get(e as usize).copied().unwrap_or("EiB");
    let val = (f / 1024f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// go-humanize `Time` (what `rkt image list` shows): `now`, `3 minutes ago`, `6 days ago`.
/// Times are Unix nanoseconds.
pub fn humanize_time(now_ns: i64, t_ns: i64) -> String {
    const S: i64 = 1;
    const MIN: i64 = 60 * S;
    const H: i64 = 60 * MIN;
    const D: i64 = 24 * H;
    const W: i64 = 7 * D;
    const MON: i64 = 30 * D;
    const Y: i64 = 12 * MON;
    let diff = (now_ns - t_ns) / 1_000_000_000;
    let (d, suffix) = if diff < 0 {
        (-diff, "from now")
    } else {
        (diff, "ago")
    };
    let table: [(i64, &str, i64); 15] = [
        (S, "now", 0),
        (2 * S, "1 second", 0),
        (MIN, "seconds", S),
        (2 * MIN, "1 minute", 0),
        (H, "minutes", MIN),
        (2 * H, "1 hour", 0),
        (D, "hours", H),
        (2 * D, "1 day", 0),
        (W, "days", D),
        (2 * W, "1 week", 0),
        (MON, "weeks", W),
        (2 * MON, "1 month", 0),
        (Y, "months", MON),
        (18 * MON, "1 year", 0),
        (2 * Y, "2 years", 0),
    ];
    for (lim, text, unit) in table {
        if d < lim {
            return match (text, unit) {
                ("now", _) => "now".to_string(),
                (t, 0) => format!("{t} {suffix}"),
                (t, u) => format!("{} {t} {suffix}", d / u),
            };
        }
    }
    format!("{} years {suffix}", d / Y)
}

/// `3 seconds ago`-style relative time, as `rkt list` shows.
pub fn format_ago(t: SystemTime, now: SystemTime) -> String {
    let s = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    let (n, unit) = match s {
        0..=1 => return "just now".into(),
        2..=59 => (s, "seconds"),
        60..=3599 => (s / 60, "minutes"),
        3600..=86_399 => (s / 3600, "hours"),
        _ => (s / 86_400, "days"),
    };
    if n == 1 {
        format!("1 {} ago", unit.trim_end_matches('s'))
    } else {
        format!("{n} {unit} ago")
    }
}

/// rkt's time layout `2006-01-02 15:04:05.999 -0700 MST`, in UTC (times before the epoch
/// show as the epoch).
pub fn format_time(t: SystemTime) -> String {
    format_time_nanos(unix_nanos(t))
}

/// [`format_time`] of a Unix time in nanoseconds.
pub fn format_time_nanos(t_ns: i64) -> String {
    let u = pod_abi::time::Utc::from_unix_nanos(t_ns);
    let ms = u.nanos / 1_000_000;
    let frac = if ms == 0 {
        String::new()
    } else {
        format!(".{ms:03}").trim_end_matches('0').to_string()
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// JSON indented with tabs (Go's `json.MarshalIndent(v, "", "\t")`).
pub fn to_json_tabs(v: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser)?;
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Removes insignificant whitespace from JSON, keeping key order and strings byte for byte.
pub fn compact_json(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    let mut in_str = false;
    let mut escaped = false;
    for &c in src {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// Re-indents JSON with tabs, keeping the key order and string contents byte for byte.
pub fn pretty_json(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut iter = src.iter().copied().peekable();
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b'\t', depth));
    };
    while let Some(c) = iter.next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => {
                in_str = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                while iter.peek().is_some_and(|n| n.is_ascii_whitespace()) {
                    iter.next();
                }
                if iter.peek().is_some_and(|n| *n == b'}' || *n == b']') {
                    if let Some(n) = iter.next() {
                        out.push(n);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn sizes_and_times() {
        assert_eq!(ibytes(5), "5 B");
        assert_eq!(ibytes(82), "82 B");
        assert_eq!(ibytes(1536), "1.5 KiB");
        assert_eq!(ibytes(12 * 1024 * 1024), "12 MiB");
        let s = 1_000_000_000;
        assert_eq!(humanize_time(100 * s, 100 * s), "now");
        assert_eq!(humanize_time(100 * s, 99 * s), "1 second ago");
        assert_eq!(humanize_time(1000 * s, 820 * s), "3 minutes ago");
        assert_eq!(humanize_time(10 * 86_400 * s, 4 * 86_400 * s), "6 days ago");
        assert_eq!(format_time_nanos(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            format_time_nanos(1_442_496_424_240_000_000),
            "2015-09-17 13:27:04.24 +0000 UTC"
        );
        let t = UNIX_EPOCH + Duration::from_millis(1_456_790_400_120);
        assert_eq!(format_time(t), "2016-03-01 00:00:00.12 +0000 UTC");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 +0000 UTC");
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let ago = |s| format_ago(UNIX_EPOCH + Duration::from_secs(s), now);
        assert_eq!(ago(990), "10 seconds ago");
        assert_eq!(ago(880), "2 minutes ago");
        assert_eq!(ago(940), "1 minute ago");
    }

    #[test]
    fn control_characters_in_cells_are_escaped() {
        assert_eq!(escape_control("plain"), "plain");
        assert_eq!(
            escape_control("a\u{1b}[2Jb\nc\td\u{9b}e\u{7f}"),
            "a\\x1b[2Jb\\nc\\td\\u{9b}e\\x7f"
        );
        let t = tabwrite(&[
            vec!["NAME".into(), "LABEL".into()],
            vec!["x\ny".into(), "\u{1b}]0;owned\u{7}".into()],
        ]);
        assert_eq!(t.lines().count(), 2, "{t:?}");
        assert!(!t.contains('\u{1b}'), "{t:?}");
        assert!(t.contains("x\\ny"), "{t:?}");
    }

    #[test]
    fn tabwriter_like_go() {
        let rows = vec![
            vec!["UUID".to_string(), "APP".into(), "X".into()],
            vec!["0123abcd".to_string(), "hello".into(), "y".into()],
        ];
        assert_eq!(tabwrite(&rows), "UUID\t\tAPP\tX\n0123abcd\thello\ty\n");
        let t = tabwrite(&[
            vec!["ID".into(), "NAME".into()],
            vec!["sha512-0123456789ab".into(), "x".into()],
        ]);
        assert_eq!(t, "ID\t\t\tNAME\nsha512-0123456789ab\tx\n");
    }

    #[test]
    fn json_reindent() {
        let p = pretty_json(br#"{"b":[1, {}],"a":"x,\"{y"}"#);
        assert_eq!(
            String::from_utf8_lossy(&p),
            "{\n\t\"b\": [\n\t\t1,\n\t\t{}\n\t],\n\t\"a\": \"x,\\\"{y\"\n}"
        );
        assert_eq!(compact_json(b"{ \"a b\" : [1, 2] }"), b"{\"a b\":[1,2]}");
    }
}
