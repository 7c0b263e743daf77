//! Request parameters: path captures and query strings, validated into domain values, with
//! problem+json rejections instead of axum's plain-text ones.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::problem::{Kind, Problem};
use crate::asset_id::AssetId;

/// `{assetId}` (and `{index}`, where the route has it): the id parsed into an [`AssetId`] here,
/// at the edge, before any backend call; everything below takes that type and never checks
/// the text again.
#[derive(Debug)]
pub struct AssetPath {
    id: AssetId,
    params: RawPathParams,
}

impl AssetPath {
    pub fn id(&self) -> &AssetId {
        &self.id
    }

    pub fn index(&self) -> Option<&str> {
        capture(&self.params, "index")
    }
}

/// The path's captures as axum percent-decoded them; `problem` when they are not UTF-8.
pub(super) async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    problem: impl FnOnce() -> Problem,
) -> Result<RawPathParams, Problem> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| problem())
}

/// One capture by name.
pub(super) fn capture<'a>(params: &'a RawPathParams, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl<S: Send + Sync> FromRequestParts<S> for AssetPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state, || {
            Problem::new(
                Kind::InvalidAssetId,
                "the path is not valid UTF-8 once percent-decoded",
            )
        })
        .await?;
        let id = AssetId::parse(capture(&params, "assetId").unwrap_or_default())
            .map_err(|e| Problem::new(Kind::InvalidAssetId, e.to_string()))?;
        Ok(Self { id, params })
    }
}

/// The query string as key/value pairs (later duplicates win).
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .map_err(|_| Problem::new(Kind::InvalidParameter, "the query string is malformed"));
        if query.is_empty() {
            return Ok(Self::default());
        }
        pairs.map(Self)
    }
}

impl QueryParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `label`: a non-empty string.
    pub fn label(&self) -> Result<Option<&str>, Problem> {
        match self.get("label") {
            Some("") => Err(Problem::new(
                Kind::InvalidParameter,
                "label must not be empty",
            )),
            other => Ok(other),
        }
    }

    /// `width`: pixels, 1 or more.
    pub fn width(&self) -> Result<Option<u32>, Problem> {
        self.get("width")
            .map(|w| {
                w.parse::<u32>().ok().filter(|w| *w > 0).ok_or_else(|| {
                    Problem::new(
                        Kind::InvalidParameter,
                        format!("width must be a whole number of pixels of 1 or more, not {w:?}"),
                    )
                })
            })
            .transpose()
    }

    /// `time`: seconds (`12.5`) or an ISO 8601 duration (`PT1M2.5S`).
    pub fn time(&self) -> Result<Option<f64>, Problem> {
        self.get("time")
            .map(|t| {
                parse_time(t).ok_or_else(|| {
                    Problem::new(
                        Kind::InvalidParameter,
                        format!(
                            "time must be seconds (like 12.5), a duration (like 1m30s) or an ISO 8601 duration (like PT1M2.5S), not {t:?}"
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// Parses a thumbnail index: a positive whole number.
pub fn parse_index(raw: &str) -> Result<u64, Problem> {
    raw.parse::<u64>()
        .ok()
        .filter(|i| *i > 0 && raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Problem::new(
                Kind::InvalidParameter,
                format!("the thumbnail index must be a whole number of 1 or more, not {raw:?}"),
            )
        })
}

/// Seconds, an ISO 8601 duration (`P[nD][T[nH][nM][n[.n]S]]`), or a duration as the
/// configuration writes it (`7s`, `1m30s`, `1h 2m 3.5s`, `250ms`); non-negative and finite.
pub fn parse_time(raw: &str) -> Option<f64> {
    let raw = raw.trim();
    let secs = if let Some(rest) = raw.strip_prefix(['P', 'p']) {
        parse_iso_duration(rest)?
    } else if raw.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !raw.is_empty() {
        raw.parse::<f64>().ok()?
    } else {
        parse_units(raw)?
    };
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// `<number><unit>` terms (units `ms`, `s`, `m`, `h`, `d`; a number may have a fraction),
/// each followed by at most one space: the configuration's duration forms, summed.
fn parse_units(raw: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 5] = [
        ("ms", 0.001),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("d", 86_400.0),
    ];
    if raw.is_empty() {
        return None;
    }
    let mut rest = raw;
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        let whole = number.split('.').next().unwrap_or_default();
        if whole.is_empty() || number.ends_with('.') || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS.iter().find(|(u, _)| {
            rest.starts_with(u) && !rest[u.len()..].starts_with(|c: char| c.is_ascii_alphabetic())
        })?;
        total += value * scale;
        rest = &rest[unit.len()..];
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
    Some(total)
}

fn parse_iso_duration(rest: &str) -> Option<f64> {
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0.0;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let c = c.to_ascii_uppercase();
            let pos = units[next_unit..].iter().position(|(u, _)| *u == c)? + next_unit;
            let value: f64 = num.parse().ok()?;
            total += value * units[pos].1;
            any = true;
            num.clear();
            next_unit = pos + 1;
        }
        num.is_empty().then_some(())
    };
    take(date, &[('D', 86_400.0)])?;
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    any.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        // The configuration's forms.
        assert_eq!(parse_time("7s"), Some(7.0));
        assert_eq!(parse_time("1m30s"), Some(90.0));
        assert_eq!(parse_time("1h 2m 3.5s"), Some(3723.5));
        assert_eq!(parse_time("250ms"), Some(0.25));
        assert_eq!(parse_time("1d"), Some(86_400.0));
        for bad in [
            "s", "7 s", "7x", "7sec", "1.s", ".5s", "1.2.3s", "7s  8s", "-7s", "7S",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(parse_time("0"), Some(0.0));
        assert_eq!(parse_time("12.5"), Some(12.5));
        assert_eq!(parse_time("PT5S"), Some(5.0));
        assert_eq!(parse_time("PT1M2.5S"), Some(62.5));
        assert_eq!(parse_time("PT1H"), Some(3600.0));
        assert_eq!(parse_time("P1DT1S"), Some(86_401.0));
        assert_eq!(parse_time("pt2s"), Some(2.0));
        for bad in [
            "", "-1", "abc", "P", "PT", "PT5", "PT5X", "PT1S1M", "1e3", "NaN", "inf", "PT-1S",
            "P1M",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn indices() {
        assert_eq!(parse_index("1").unwrap(), 1);
        assert_eq!(parse_index("1000000").unwrap(), 1_000_000);
        for bad in ["0", "-1", "+1", "x", "", "1.0", "99999999999999999999999"] {
            assert!(parse_index(bad).is_err(), "{bad}");
        }
    }
}
