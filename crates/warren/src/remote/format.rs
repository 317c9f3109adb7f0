//! What the remote commands print: aligned tables, sizes in the units `--memory` takes, and
//! times relative to now.

use std::time::SystemTime;

pub(super) fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| (*s).to_owned()).collect()
}

/// Left-aligned columns three spaces apart; the last column is not padded.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count()) + 3;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes in binary units, as `--memory`/`--disk` take them: 512M, 2G, 1.5G.
pub(super) fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && n >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let div = 1u128 << (10 * unit);
    let n = u128::from(n);
    if n.is_multiple_of(div) {
        return format!("{}{}", n / div, UNITS[unit]);
    }
    let tenths = (n * 10 + div / 2) / div;
    if tenths.is_multiple_of(10) {
        format!("{}{}", tenths / 10, UNITS[unit])
    } else {
        format!("{}.{}{}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

/// An RFC 3339 time as "N units ago"; the raw text if it does not parse.
pub(super) fn ago(rfc3339: &str, now: SystemTime) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_owned();
    };
    let secs = now.duration_since(t).map_or(0, |d| d.as_secs());
    let (n, unit) = match secs {
        0..60 => {
            return if secs < 2 {
                "just now".into()
            } else {
                format!("{secs} seconds ago")
            };
        }
        60..3600 => (secs / 60, "minute"),
        3600..172_800 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use warren_types::parse_size;

    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1000), "1000B");
        assert_eq!(human_size(1024), "1K");
        assert_eq!(human_size(512 << 20), "512M");
        assert_eq!(human_size(2 << 30), "2G");
        assert_eq!(human_size(3 << 29), "1.5G");
        assert_eq!(human_size((1 << 30) + 1), "1G");
        assert_eq!(human_size(u64::MAX), "16384P");
        assert_eq!(parse_size(&human_size(3 << 29)).unwrap(), 3 << 29);
    }

    #[test]
    fn times_are_relative() {
        let now = humantime::parse_rfc3339("2025-01-02T00:00:00Z").unwrap();
        assert_eq!(ago("2025-01-02T00:00:00.000000Z", now), "just now");
        assert_eq!(ago("2025-01-01T23:59:30Z", now), "30 seconds ago");
        assert_eq!(ago("2025-01-01T23:59:00Z", now), "1 minute ago");
        assert_eq!(ago("2025-01-01T21:00:00Z", now), "3 hours ago");
        assert_eq!(ago("2024-12-25T00:00:00Z", now), "8 days ago");
        assert_eq!(ago("2025-02-01T00:00:00Z", now), "just now");
        assert_eq!(ago("yesterday", now), "yesterday");
    }

    #[test]
    fn tables_align() {
        let rows = vec![row(&["NAME", "STATUS"]), row(&["a-long-name", "ready"])];
        assert_eq!(table(&rows), "NAME          STATUS\na-long-name   ready\n");
    }
}
