//! When services are refreshed: a fixed interval or a cron expression.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A service's refresh schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every so often (`15s`).
    Every(Duration),
    /// A cron expression with seconds (`0 */5 * * * *`), in UTC.
    Cron(String),
}

/// The default refresh interval.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// The longest refresh interval: a year (`1y`, 365.25 days, as humantime counts it). The
/// scheduler does its arithmetic in signed milliseconds, which a few hundred million years
/// overflow.
pub const MAX_REFRESH: Duration = Duration::from_secs(31_557_600);

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Every(DEFAULT_REFRESH)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::Cron(expr) => write!(f, "cron `{expr}`"),
        }
    }
}

fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    // The same parser settings tokio-cron-scheduler uses, so what is accepted here runs there.
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if let Ok(secs) = text.parse::<u64>() {
            return positive(Duration::from_secs(secs)).map_err(serde::de::Error::custom);
        }
        if let Ok(d) = humantime::parse_duration(text) {
            return positive(d).map_err(serde::de::Error::custom);
        }
        match parse_cron(text) {
            // `0 0 0 30 2 *` (February 30) parses but matches no time: the service would never
            // be refreshed.
            Ok(cron) if never_runs(&cron, text) => Err(serde::de::Error::custom(format!(
                "cron `{text}` never fires: no time matches it (is the day of the month in that month?)"
            ))),
            Ok(_) => Ok(Schedule::Cron(text.to_string())),
            Err(e) => Err(serde::de::Error::custom(format!(
                "`{text}` is neither a duration like `15s` nor a cron expression with seconds like `0 */5 * * * *` ({e})"
            ))),
        }
    }
}

/// True if no time from now on matches `cron`. croner looks up to the year 5000 before it gives
/// up, which takes a while (both cases found by the `durations` fuzz target):
///
/// - An empty seconds, minutes or hours field (`,` parses as one) makes it try every minute:
///   17 s in a release build for `", * * * * *"`. Those fields are checked first, directly.
/// - A date that never comes (`0 */5 * 5 * +`, whose day-of-week set is empty) makes it try
///   every day: 0.2 s. The Gregorian calendar repeats every 400 years, weekdays included
///   (146,097 days is a whole number of weeks), so an expression without a year field that
///   matches some time matches one in the last 400 years of croner's range: the search starts
///   there. One with a year field other than `*` (seven fields) is searched from now: at most
///   0.1 s in a release build.
fn never_runs(cron: &croner::Cron, text: &str) -> bool {
    // `croner::component::ALL_BIT`, which croner does not export: the bit of a plain value.
    const ALL_BIT: u8 = 1;
    let p = &cron.pattern;
    if [&p.seconds, &p.minutes, &p.hours]
        .iter()
        .any(|c| c.get_set_values(ALL_BIT).is_empty())
    {
        return true;
    }
    // A year field of `*` restricts nothing: the calendar argument holds for it too.
    let years = text.split_whitespace().nth(6);
    let from = if years.is_some_and(|y| y != "*" && y != "?") {
        chrono::Utc::now()
    } else {
        chrono::NaiveDate::from_ymd_opt(croner::YEAR_UPPER_LIMIT - 400, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or_else(chrono::Utc::now, |t| t.and_utc())
    };
    cron.find_next_occurrence(&from, false).is_err()
}

fn positive(d: Duration) -> Result<Schedule, String> {
    if d < Duration::from_secs(1) {
        Err("refresh must be at least 1s".into())
    } else if d > MAX_REFRESH {
        Err("refresh must be at most 1 year (`1y`); for a list that never changes, any long interval will do".into())
    } else {
        Ok(Schedule::Every(d))
    }
}

impl Schedule {
    /// The time between two runs: the interval, or the gap between the next two cron times.
    pub fn period(&self) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron(expr) => {
                let Ok(cron) = parse_cron(expr) else {
                    return DEFAULT_REFRESH;
                };
                let mut next = cron.iter_after(chrono::Utc::now());
                match (next.next(), next.next()) {
                    (Some(a), Some(b)) => (b - a).to_std().unwrap_or(DEFAULT_REFRESH),
                    _ => DEFAULT_REFRESH,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn parse(text: &str) -> Result<Schedule, String> {
        yaml::parse(text)
            .unwrap()
            .deserialize::<Schedule>()
            .map_err(|e| e.message)
    }

    #[test]
    fn durations_and_cron_expressions_parse() {
        assert_eq!(
            parse("15s").unwrap(),
            Schedule::Every(Duration::from_secs(15))
        );
        assert_eq!(parse("2").unwrap(), Schedule::Every(Duration::from_secs(2)));
        assert_eq!(
            parse("\"0 */5 * * * *\"").unwrap(),
            Schedule::Cron("0 */5 * * * *".into())
        );
        assert!(parse("100ms").unwrap_err().contains("at least 1s"));
        assert!(parse("soonish").unwrap_err().contains("neither a duration"));
        assert!(parse("\"* * *\"").is_err());
    }

    #[test]
    fn a_cron_expression_that_never_fires_is_refused() {
        let start = std::time::Instant::now();
        let err = parse("\"0 0 0 31 2 *\"").unwrap_err();
        assert!(err.contains("never fires"), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        // Rare is not never: February 29th comes every four years.
        assert_eq!(
            parse("\"0 0 0 29 2 *\"").unwrap(),
            Schedule::Cron("0 0 0 29 2 *".into())
        );
    }

    #[test]
    fn intervals_are_capped_at_a_year() {
        assert_eq!(parse("1y").unwrap(), Schedule::Every(MAX_REFRESH));
        assert_eq!(parse("31557600").unwrap(), Schedule::Every(MAX_REFRESH));
        for long in ["31557601", "2y", "300000000y", "9223372036854775807"] {
            let err = parse(long).unwrap_err();
            assert!(err.contains("at most 1 year"), "{long}: {err}");
        }
    }

    #[tokio::test]
    async fn the_longest_interval_can_be_scheduled() {
        // What the daemon does with it: tokio-cron-scheduler turns it into chrono seconds.
        let job =
            tokio_cron_scheduler::Job::new_repeated_async(MAX_REFRESH, |_, _| Box::pin(async {}));
        assert!(job.is_ok());
    }

    #[test]
    fn cron_expressions_that_never_run_are_refused() {
        // Each parses as cron; all but the first two come from the `durations` fuzz target, and
        // the empty fields took croner seconds to rule out (docs/fuzzing.md).
        for never in [
            "\"0 0 0 30 2 *\"",
            "\"0 0 0 1 1 * 2020\"",
            "\"0 */5 * 5 * +\"",
            "\", * * * * *\"",
            "\"0 , * * * *\"",
            "\"0 0 , * * *\"",
            "\", * *  * * +*\"",
            "\"0 25 */5 */2, * + *\"",
        ] {
            let err = parse(never).unwrap_err();
            assert!(err.contains("never fires"), "{never}: {err}");
        }
        assert!(parse("\"0 0 0 29 2 *\"").is_ok());
        assert!(parse("\"59 59 23 31 12 *\"").is_ok());
        // February 29 on a Monday: next in 2044, then every 28 years or so.
        assert!(parse("\"0 0 0 29 2 MON\"").is_ok());
        assert!(parse("\"0 0 0 1 1 * 2030-2040\"").is_ok());
    }

    #[test]
    fn cron_period_is_the_gap_between_runs() {
        let s = Schedule::Cron("0 */5 * * * *".into());
        assert_eq!(s.period(), Duration::from_secs(300));
    }
}
