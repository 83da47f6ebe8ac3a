//! Durations as policy authors write them (`30s`, `1m`, `7d`) and throttle limits
//! (`@limit("30/1m")`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a period does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeriodError {
    /// Digits only, or nothing.
    #[error("`{0}` has no unit (expected s, m, h or d)")]
    NoUnit(String),
    /// The count is not a number that fits.
    #[error("`{0}`: count is not a whole number")]
    Count(String),
    /// A unit other than `s`, `m`, `h` or `d`.
    #[error("`{text}`: unknown unit `{unit}` (expected s, m, h or d)")]
    UnknownUnit {
        /// The period as written (trimmed).
        text: String,
        /// The unit.
        unit: String,
    },
    /// `0s` and the like.
    #[error("`{0}`: a period must be longer than zero")]
    Zero(String),
    /// More than a hundred years.
    #[error("`{0}` is longer than a hundred years")]
    TooLong(String),
}

/// Why a limit does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// No `/`.
    #[error("`{0}` is not `N/period` (e.g. `30/1m`)")]
    Shape(String),
    /// The count is not a number that fits.
    #[error("`{text}`: `{count}` is not a whole number of requests")]
    Count {
        /// The limit as written.
        text: String,
        /// The part before `/`.
        count: String,
    },
    /// `0/…`.
    #[error("`{0}`: the count must be at least 1")]
    Zero(String),
    /// The period after `/`.
    #[error(transparent)]
    Period(#[from] PeriodError),
}

/// A positive duration written as a count and a unit: `s`, `m`, `h` or `d` (`1m`, `10s`,
/// `7d`). A bare unit (`m`) means one of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period(Duration);

impl Period {
    /// Parses `[count]unit`.
    pub fn parse(text: &str) -> Result<Self, PeriodError> {
        let text = text.trim();
        let unit_at = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| PeriodError::NoUnit(text.to_owned()))?;
        let (count, unit) = text.split_at(unit_at);
        let count: u64 = if count.is_empty() {
            1
        } else {
            count
                .parse()
                .map_err(|_| PeriodError::Count(text.to_owned()))?
        };
        let seconds_per = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => {
                return Err(PeriodError::UnknownUnit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        if count == 0 {
            return Err(PeriodError::Zero(text.to_owned()));
        }
        let seconds = count
            .checked_mul(seconds_per)
            .filter(|s| *s <= 100 * 365 * 86_400)
            .ok_or_else(|| PeriodError::TooLong(text.to_owned()))?;
        Ok(Self(Duration::from_secs(seconds)))
    }

    /// A period of whole days.
    pub const fn days(days: u64) -> Self {
        Self(Duration::from_secs(days * 86_400))
    }

    /// A period of whole hours.
    pub const fn hours(hours: u64) -> Self {
        Self(Duration::from_secs(hours * 3_600))
    }

    /// A period of whole seconds.
    pub const fn seconds_of(seconds: u64) -> Self {
        Self(Duration::from_secs(seconds))
    }

    /// The length of the period.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// The period in whole seconds.
    pub fn seconds(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            _ if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            _ if s.is_multiple_of(3_600) => write!(f, "{}h", s / 3_600),
            _ if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `@limit("N/period")`: N requests per period, per (rule, principal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests let through per period.
    pub count: u32,
    /// The refill period.
    pub per: Period,
}

impl Limit {
    /// Parses `N/period`, e.g. `30/1m`, `5/s`, `1000/1h`.
    pub fn parse(text: &str) -> Result<Self, LimitError> {
        let (count, per) = text
            .split_once('/')
            .ok_or_else(|| LimitError::Shape(text.to_owned()))?;
        let count: u32 = count.trim().parse().map_err(|_| LimitError::Count {
            text: text.to_owned(),
            count: count.to_owned(),
        })?;
        if count == 0 {
            return Err(LimitError::Zero(text.to_owned()));
        }
        let per = Period::parse(per)?;
        Ok(Self { count, per })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_with_and_without_counts() {
        assert_eq!(Period::parse("1m").map(Period::seconds), Ok(60));
        assert_eq!(Period::parse("m").map(Period::seconds), Ok(60));
        assert_eq!(Period::parse("10s").map(Period::seconds), Ok(10));
        assert_eq!(Period::parse("7d").map(Period::seconds), Ok(604_800));
        assert_eq!(Period::parse("2h").map(Period::seconds), Ok(7_200));
    }

    #[test]
    fn bad_periods_say_why() {
        for (text, said) in [
            ("0s", "`0s`: a period must be longer than zero"),
            (" 5 ", "`5` has no unit (expected s, m, h or d)"),
            ("5w", "`5w`: unknown unit `w` (expected s, m, h or d)"),
            ("5.5m", "`5.5m`: unknown unit `.5m` (expected s, m, h or d)"),
            (
                "99999999999999d",
                "`99999999999999d` is longer than a hundred years",
            ),
            (
                "99999999999999999999s",
                "`99999999999999999999s`: count is not a whole number",
            ),
        ] {
            let error = Period::parse(text).expect_err(text);
            assert_eq!(error.to_string(), said, "{text}");
        }
    }

    #[test]
    fn limits_parse() {
        let l = Limit::parse("30/1m").expect("valid");
        assert_eq!((l.count, l.per.seconds()), (30, 60));
        assert_eq!(l.to_string(), "30/1m");
        for (text, said) in [
            ("0/1m", "`0/1m`: the count must be at least 1"),
            ("30", "`30` is not `N/period` (e.g. `30/1m`)"),
            ("x/1m", "`x/1m`: `x` is not a whole number of requests"),
            ("3/1y", "`1y`: unknown unit `y` (expected s, m, h or d)"),
        ] {
            let error = Limit::parse(text).expect_err(text);
            assert_eq!(error.to_string(), said, "{text}");
        }
    }
}
