//! Durations as the flags take them: a whole number and a unit, `500ms`, `30s`,
//! `2m`, `1h` (SPEC section 8). [`parse_duration`] is the flags' clap value parser.

use std::time::Duration;

/// Why a duration flag's value is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration (write it as 500ms, 30s, 2m or 1h)")]
    Empty,
    /// The number is missing or is not a whole number.
    #[error("`{0}` does not start with a whole number (write it as 500ms, 30s, 2m or 1h)")]
    Number(String),
    /// The unit is missing or unknown.
    #[error("`{0}` has no known unit: use ms, s, m or h (500ms, 30s, 2m, 1h)")]
    Unit(String),
    /// The value does not fit in a duration.
    #[error("`{0}` is too long")]
    Overflow(String),
}

/// Parses `500ms`, `30s`, `2m` or `1h` (a whole number, then `ms`, `s`, `m` or
/// `h`; surrounding whitespace is ignored, and a space between number and unit is
/// allowed).
///
/// ```
/// use std::time::Duration;
/// use sluice_gateway::duration::parse_duration;
///
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse_duration("30").is_err()); // a unit is required
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(DurationError::Number(text.to_owned()));
    }
    let overflow = || DurationError::Overflow(text.to_owned());
    let n: u64 = number.parse().map_err(|_| overflow())?;
    let millis_per = match unit.trim_start() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(DurationError::Unit(text.to_owned())),
    };
    let millis = n.checked_mul(millis_per).ok_or_else(overflow)?;
    Ok(Duration::from_millis(millis))
}

/// Parses a timeout: a duration as [`parse_duration`] reads it, or `off` (any
/// case) or a bare `0` for none, returned as zero (a zero timeout is off).
///
/// ```
/// use std::time::Duration;
/// use sluice_gateway::duration::parse_timeout;
///
/// assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_timeout("off"), Ok(Duration::ZERO));
/// assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
/// assert!(parse_timeout("30").is_err());
/// ```
pub fn parse_timeout(text: &str) -> Result<Duration, DurationError> {
    match text.trim() {
        "0" => Ok(Duration::ZERO),
        off if off.eq_ignore_ascii_case("off") => Ok(Duration::ZERO),
        _ => parse_duration(text),
    }
}

/// Writes a timeout the way [`parse_timeout`] reads it: `off` for zero.
pub fn format_timeout(timeout: Duration) -> String {
    if timeout.is_zero() {
        "off".to_owned()
    } else {
        format_duration(timeout)
    }
}

/// Writes a duration the way [`parse_duration`] reads it (the largest unit that
/// divides it exactly), for logs and defaults.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis >= per && millis % per == 0 {
            return format!("{}{unit}", millis / per);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_spacing() {
        for (text, millis) in [
            ("500ms", 500),
            ("0ms", 0),
            ("30s", 30_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            (" 5s ", 5_000),
            ("10 s", 10_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("  "), Err(DurationError::Empty));
        assert!(matches!(parse_duration("30"), Err(DurationError::Unit(_))));
        assert!(matches!(parse_duration("3d"), Err(DurationError::Unit(_))));
        assert!(matches!(
            parse_duration("5 sec"),
            Err(DurationError::Unit(_))
        ));
        assert!(matches!(parse_duration("s"), Err(DurationError::Number(_))));
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::Number(_))
        ));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(DurationError::Unit(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("18446744073709551615h"),
            Err(DurationError::Overflow(_))
        ));
        let message = parse_duration("30").expect_err("no unit").to_string();
        assert!(message.contains("500ms, 30s"), "{message}");
    }

    #[test]
    fn formatting_round_trips() {
        for millis in [
            0, 1, 500, 1_000, 1_500, 30_000, 120_000, 3_600_000, 5_400_000,
        ] {
            let d = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{millis}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
