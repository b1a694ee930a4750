//! Durations (`500ms`, `2s`, `1m`, `1h`) and sizes (`512M`, `2G`) as the command line writes
//! them, and counts as the report and the benchmark print them (`1,234,567`).

use std::time::Duration;

/// What is wrong with a duration, size or rate as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number with a unit.
    #[error("'{0}' is not a duration (e.g. 500ms, 2s, 1m)")]
    NotDuration(String),
    /// A duration unit that is not known.
    #[error("unknown unit '{unit}' in '{text}' (use ms, s, m or h)")]
    DurationUnit {
        /// The unit.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// Not a number with a size unit.
    #[error("'{0}' is not a size (e.g. 512M, 2G)")]
    NotSize(String),
    /// A size unit that is not known.
    #[error("unknown unit in '{0}' (use K, M, G or T)")]
    SizeUnit(String),
    /// Negative, zero where it cannot be, or too large.
    #[error("'{0}' is out of range")]
    OutOfRange(String),
    /// Not `N/DURATION`.
    #[error("'{0}' is not N/DURATION (e.g. 100/10s)")]
    NotRate(String),
    /// The count of a rate is not a count.
    #[error("'{count}' in '{text}' is not a count")]
    NotCount {
        /// The count as written.
        count: String,
        /// The whole text.
        text: String,
    },
    /// A rate over no time.
    #[error("the period in '{0}' must be above zero")]
    ZeroPeriod(String),
    /// Not `DUR`, `N%` or `N%,DUR`.
    #[error("'{0}' is not a timeout (e.g. 10m, 300% of the median successful run, 300%,10s with a floor)")]
    NotTimeout(String),
}

/// A `--timeout`: a fixed limit, or a percentage of the median time of the tasks that
/// succeeded so far with an optional floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutArg {
    /// The percentage (`300%`), if relative.
    pub percent: Option<u32>,
    /// The fixed limit, or the floor of a relative one.
    pub fixed: Option<Duration>,
}

/// Parses `--timeout`: `DUR`, `N%` or `N%,DUR`.
pub fn parse_timeout(s: &str) -> Result<TimeoutArg, UnitError> {
    let bad = || UnitError::NotTimeout(s.to_string());
    let (first, floor) = match s.split_once(',') {
        Some((a, b)) => (a.trim(), Some(b)),
        None => (s.trim(), None),
    };
    match first.strip_suffix('%') {
        Some(n) => {
            let percent = n.trim().parse::<u32>().ok().filter(|&p| p > 0).ok_or_else(bad)?;
            let fixed = floor.map(parse_duration).transpose()?;
            Ok(TimeoutArg { percent: Some(percent), fixed })
        }
        None if floor.is_none() => Ok(TimeoutArg { percent: None, fixed: Some(parse_duration(first)?) }),
        None => Err(bad()),
    }
}

/// `1234567` as `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| UnitError::NotDuration(s.into()))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(UnitError::DurationUnit { unit: other.into(), text: s.into() }),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(UnitError::OutOfRange(s.into()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size in bytes: a number with an optional binary unit (`K`, `M`, `G`, `T`, also
/// `KiB`, `MB`...), all powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| UnitError::NotSize(s.into()))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B').trim_end_matches('I') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(UnitError::SizeUnit(s.into())),
    };
    let bytes = value * mult as f64;
    // Zero is a size; whether it is big enough is for the setting that takes it to say, so
    // that `0` and `1` get the same answer.
    if !bytes.is_finite() || !(0.0..=1e18).contains(&bytes) {
        return Err(UnitError::OutOfRange(s.into()));
    }
    Ok(bytes as u64)
}

/// Parses `N/DUR`, e.g. `10/5s`.
pub fn parse_rate(s: &str) -> Result<(u32, Duration), UnitError> {
    let (n, d) = s.split_once('/').ok_or_else(|| UnitError::NotRate(s.into()))?;
    let n: u32 = n.trim().parse().map_err(|_| UnitError::NotCount { count: n.into(), text: s.into() })?;
    let d = parse_duration(d)?;
    if d.is_zero() {
        return Err(UnitError::ZeroPeriod(s.into()));
    }
    Ok((n, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_users_write() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("2 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12X").is_err());
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_rate("10/5s").unwrap(), (10, Duration::from_secs(5)));
        assert!(parse_rate("10").is_err());
    }

    #[test]
    fn timeouts_are_fixed_relative_or_relative_with_a_floor() {
        let secs = Duration::from_secs;
        assert_eq!(parse_timeout("10s"), Ok(TimeoutArg { percent: None, fixed: Some(secs(10)) }));
        assert_eq!(parse_timeout("300%"), Ok(TimeoutArg { percent: Some(300), fixed: None }));
        assert_eq!(parse_timeout("300%,10s"), Ok(TimeoutArg { percent: Some(300), fixed: Some(secs(10)) }));
        assert!(matches!(parse_timeout("0%"), Err(UnitError::NotTimeout(_))));
        assert!(matches!(parse_timeout("10s,5s"), Err(UnitError::NotTimeout(_))));
        assert!(parse_timeout("300%,x").is_err());
    }
}
