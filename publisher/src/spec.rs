//! Parsing of command-line values: durations (`365d`), start times (`now` or
//! RFC 3339) and wave lists (`canary=5%@0s/1h,early=25%@1d/6h,all=100%@3d/12h`).

use chrono::{DateTime, Utc};
use flotilla_protocol::{HumanDuration, Wave};

use crate::{Error, Result};

/// A duration such as `90s`, `6h`, `30d`.
pub fn duration(s: &str) -> Result<HumanDuration> {
    s.parse::<HumanDuration>().map_err(Error::Usage)
}

/// `now`, or an RFC 3339 time such as `2026-05-01T08:00:00Z`.
pub fn start(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if s == "now" {
        return Ok(now);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Usage(format!("--start {s:?}: expected `now` or an RFC 3339 time such as 2026-05-01T08:00:00Z: {e}")))
}

/// Waves written as `name=percent%@after/spread`, comma-separated, e.g.
/// `canary=5%@0s/1h,early=25%@1d/6h,all=100%@3d/12h`. Percents are
/// cumulative; `@after/spread` may be left out (both `0s`).
pub fn waves(s: &str) -> Result<Vec<Wave>> {
    let bad = |part: &str, why: &str| {
        Error::Usage(format!(
            "--waves: {part:?} {why}; expected name=percent%@after/spread, e.g. canary=5%@0s/1h"
        ))
    };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, rest) = part
            .split_once('=')
            .ok_or_else(|| bad(part, "has no `=`"))?;
        let (pct, timing) = match rest.split_once('@') {
            Some((p, t)) => (p, Some(t)),
            None => (rest, None),
        };
        let percent: f64 = pct
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| bad(part, "has no number before `%`"))?;
        let (after, spread) = match timing {
            None => (HumanDuration::default(), HumanDuration::default()),
            Some(t) => {
                let (a, s) = t.split_once('/').unwrap_or((t, "0s"));
                (
                    duration(a).map_err(|e| bad(part, &e.to_string()))?,
                    duration(s).map_err(|e| bad(part, &e.to_string()))?,
                )
            }
        };
        out.push(Wave {
            name: name.trim().to_owned(),
            percent,
            after,
            spread,
        });
    }
    if out.is_empty() {
        return Err(bad(s, "names no wave"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_standard_waves() {
        let w = waves("canary=5%@0s/1h,early=25%@1d/6h,all=100%@3d/12h").unwrap();
        assert_eq!(w, flotilla_protocol::sources::standard_waves());
        let w = waves("all=100%").unwrap();
        assert_eq!(w[0].spread, HumanDuration::default());
        assert!(waves("canary5%").is_err());
        assert!(waves("a=x%").is_err());
        assert!(waves("a=5%@1q/1h").is_err());
    }

    #[test]
    fn start_now_or_rfc3339() {
        let now = Utc::now();
        assert_eq!(start("now", now).unwrap(), now);
        assert_eq!(
            start("2026-05-01T10:00:00+02:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-05-01T08:00:00+00:00"
        );
        assert!(start("tomorrow", now).is_err());
    }
}
