//! Small shared helpers: timestamps in RFC 3339, random identifiers, human sizes.
//! Kept here so no applet grows its own copy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2017-03-27T12:00:00Z` for a unix time.
pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2017-03-27T12:00:00.123Z` with milliseconds, for logs.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = rfc3339(d.as_secs() as i64);
    format!("{}.{:03}Z", &base[..base.len() - 1], d.subsec_millis())
}

/// `2017-03-27T12:00:00.123456Z` with microseconds, the most RFC 5424 syslog
/// allows.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = rfc3339(d.as_secs() as i64);
    format!("{}.{:06}Z", &base[..base.len() - 1], d.subsec_micros())
}

/// `2026-12-01T16:34:49.83192066Z`: Go's RFC3339Nano, as Docker writes log and
/// container times (the fraction loses its trailing zeros, a whole second has none).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = rfc3339(d.as_secs() as i64);
    if d.subsec_nanos() == 0 {
        return base;
    }
    let frac = format!("{:09}", d.subsec_nanos());
    format!(
        "{}.{}Z",
        &base[..base.len() - 1],
        frac.trim_end_matches('0')
    )
}

/// An RFC 3339 timestamp to the nanosecond (digits past the ninth are dropped).
pub fn parse_rfc3339_time(s: &str) -> Option<SystemTime> {
    let secs = parse_rfc3339(s)?;
    let digits: String = s[19..]
        .strip_prefix('.')
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse::<u32>().ok()?
    };
    let whole = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    t.checked_add(Duration::from_nanos(nanos.into()))
}

/// A size as people and docker write it: `512`, `64k`, `64M`, `10GiB`, `1.5g`
/// (binary multiples: docker's `--memory 1g` and `max-size=10m` mean MiB/GiB).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = (s[..split].trim(), s[split..].to_ascii_lowercase());
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    if num.is_empty() || num.starts_with('-') || num.starts_with('+') {
        return None;
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    let v = f * mult as f64;
    (f.is_finite() && v < u64::MAX as f64).then_some(v as u64)
}

/// `Sat, 28 Nov 2026 07:46:58 GMT` (RFC 9110's IMF-fixdate) for a unix time.
pub fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let s = secs.rem_euclid(86_400);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[mo as usize - 1],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parse an IMF-fixdate (`Sat, 28 Nov 2026 07:46:58 GMT`) to unix time.
pub fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rest = s.split_once(", ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    if f.len() != 5 || f[4] != "GMT" {
        return None;
    }
    let d: u32 = f[0].parse().ok()?;
    let mo = MONTHS.iter().position(|m| *m == f[1])? as u32 + 1;
    let y: i64 = f[2].parse().ok()?;
    let t: Vec<i64> = f[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

/// Parse an RFC 3339 timestamp (fractional seconds and offsets accepted) to unix time.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[n..];
    }
    let off = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + se - off)
}

/// Fill a buffer from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into our own buffer.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) exists since Linux 3.17; SL6's 2.6.32 lacks it.
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut buf[filled..]))
                .expect("no kernel random source");
            return;
        }
    }
}

/// A random version-4 UUID in its usual text form.
pub fn uuid4() -> String {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::digest::to_hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Sizes as docker prints them (decimal units: 857.6MB).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        return format!("{n}B");
    }
    // "%.4g" as docker's units package prints: four significant digits, no trailing zeros.
    let int_digits = if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let s = format!("{:.*}", 4 - int_digits, v);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[u])
}

/// "3 days ago", as docker prints creation times.
pub fn human_ago(then: i64, now: i64) -> String {
    let d = Duration::from_secs((now - then).max(0) as u64).as_secs();
    let (n, unit) = match d {
        0..=1 => return "Less than a second ago".into(),
        2..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=1_209_599 => (d / 86_400, "day"),
        1_209_600..=5_183_999 => (d / 604_800, "week"),
        5_184_000..=63_071_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    if n == 1 {
        let article = if unit == "hour" { "An" } else { "A" };
        format!("{article} {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Rows as docker prints tables: columns padded to their widest cell, three
/// spaces apart, no trailing blanks.
pub fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        s.push_str(cells.join("   ").trim_end());
        s.push('\n');
    }
    s
}

/// Ask on stderr and read one line from stdin; with `hidden` and a terminal,
/// without echo (passwords). The line ending is dropped.
pub fn prompt(label: &str, hidden: bool) -> crate::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let mut err = std::io::stderr();
    write!(err, "{label}")?;
    err.flush()?;
    let stdin = std::io::stdin();
    let mut line = String::new();
    if hidden && stdin.is_terminal() {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let old = tcgetattr(&stdin)?;
        let mut quiet = old.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
        let r = stdin.lock().read_line(&mut line);
        // the terminal gets its echo back even when the read failed
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &old);
        writeln!(err)?;
        r?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_490_616_000), "2017-03-27T12:00:00Z");
        assert_eq!(parse_rfc3339("2017-03-27T12:00:00Z"), Some(1_490_616_000));
        assert_eq!(
            parse_rfc3339("2017-03-27T12:00:00.123456789Z"),
            Some(1_490_616_000)
        );
        assert_eq!(
            parse_rfc3339("2017-03-27T14:00:00+02:00"),
            Some(1_490_616_000)
        );
        assert_eq!(parse_rfc3339("2017-03-27"), None);
        assert_eq!(http_date(1_490_616_000), "Mon, 27 Mar 2017 12:00:00 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        for t in [0i64, 951_782_400, 4_102_444_800, 1_764_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn nanosecond_times_read_and_write_like_go() {
        let t = UNIX_EPOCH + Duration::new(1_796_142_889, 831_920_668);
        assert_eq!(rfc3339_nano(t), "2026-12-01T16:34:49.831920668Z");
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::new(1_796_142_889, 830_000_000)),
            "2026-12-01T16:34:49.83Z"
        );
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::from_secs(1_796_142_889)),
            "2026-12-01T16:34:49Z"
        );
        assert_eq!(
            parse_rfc3339_time("2026-12-01T16:34:49.831920668Z"),
            Some(t)
        );
        assert_eq!(
            parse_rfc3339_time("2026-12-01T17:34:49.83192066812+01:00"),
            Some(t)
        );
        assert_eq!(
            parse_rfc3339_time("2026-12-01T16:34:49.83Z"),
            Some(UNIX_EPOCH + Duration::new(1_796_142_889, 830_000_000))
        );
        assert_eq!(
            parse_rfc3339_time("1969-12-31T23:59:59.5Z"),
            Some(UNIX_EPOCH - Duration::from_millis(500))
        );
        assert_eq!(parse_rfc3339_time("2026-12-01"), None);
    }

    #[test]
    fn tables_pad_columns_and_trim_ends() {
        let rows = vec![
            vec!["NAME".to_string(), "TAG".into()],
            vec!["sl6-umd3condv4".into(), "".into()],
        ];
        assert_eq!(table(&rows), "NAME             TAG\nsl6-umd3condv4\n");
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = uuid4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, uuid4());
    }

    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(human_size(857_600_000), "857.6MB");
        assert_eq!(human_size(1_445_000_000), "1.445GB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("5q"), None);
        assert_eq!(parse_size("99999999999t"), None);
        assert_eq!(human_ago(0, 21), "21 seconds ago");
        assert_eq!(human_ago(0, 3 * 86_400), "3 days ago");
        assert_eq!(human_ago(0, 3600), "An hour ago");
    }
}
