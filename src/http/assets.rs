//! `/assets/{assetId}/...`: the thumbnail list and the redirects an `<img src>` can point at.

use std::sync::OnceLock;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::params::{AssetPath, QueryParams, parse_index};
use super::problem::{Kind, Problem};
use crate::model::Thumbnail;
use crate::resolver::{Resolution, Resolved, ThumbnailView};

/// `GET /assets/{assetId}/thumbnails`: the cached JSON, as rendered (and compressed) at load
/// time, with a strong ETag. The hit path formats nothing and copies nothing: the body and the
/// ETag are views of the cached buffer, the other header values are shared constants.
pub async fn list(
    State(state): State<AppState>,
    path: AssetPath,
    request: Request,
) -> Result<Response, Problem> {
    let resolved = state.resolver.resolve(path.id()).await?;
    let (request, _) = request.into_parts();
    let request = request.headers;
    let gzip = accepts_gzip(&request);
    // Each encoding is its own representation, with its own strong tag.
    let (body, etag) = if gzip {
        (resolved.body_gzip(), resolved.etag_gzip().clone())
    } else {
        resolved.answer()
    };
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, etag.as_bytes()));
    // The request's map, emptied, holds the answer's headers: hyper hands each connection's
    // last answer map back as the next request's, so after the first request on a connection
    // this allocates nothing (a new map for the 9 headers an answer ends up with, security
    // headers and request id included, is a 1.2 KB allocation: past glibc's per-thread cache).
    let mut headers = request;
    headers.clear();
    headers.reserve(9);
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Response::new(Body::from(body))
    };
    headers.insert(header::ETAG, etag);
    set_freshness(&mut headers, &resolved);
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    *response.headers_mut() = headers;
    Ok(response)
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// `GET /assets/{assetId}/storyboard.vtt`: the sprite's WebVTT, cues pointing at working URLs.
pub async fn storyboard_vtt(
    State(state): State<AppState>,
    path: AssetPath,
) -> Result<Response, Problem> {
    let resolved = state.resolver.resolve(path.id()).await?;
    let body = resolved.storyboard_vtt().ok_or_else(no_storyboard)?;
    Ok(storyboard_response(
        body,
        "text/vtt; charset=utf-8",
        &resolved,
    ))
}

/// `GET /assets/{assetId}/storyboard.json`: sprite URL and tiles, for scrubbing previews.
pub async fn storyboard_json(
    State(state): State<AppState>,
    path: AssetPath,
) -> Result<Response, Problem> {
    let resolved = state.resolver.resolve(path.id()).await?;
    let body = resolved.storyboard_json().ok_or_else(no_storyboard)?;
    Ok(storyboard_response(body, "application/json", &resolved))
}

/// `DELETE /assets/{assetId}/cache`: forget the asset; the next request loads it afresh.
pub async fn invalidate(State(state): State<AppState>, path: AssetPath) -> StatusCode {
    state.resolver.invalidate(path.id()).await;
    StatusCode::NO_CONTENT
}

fn no_storyboard() -> Problem {
    Problem::new(
        Kind::NoStoryboard,
        "the asset has no sprite sheet with a WebVTT map (was spriteColumn set in its preset?)",
    )
}

fn storyboard_response(
    body: bytes::Bytes,
    content_type: &'static str,
    resolved: &Resolution,
) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    set_freshness(headers, resolved);
    response
}

/// `If-None-Match`: `*` or a list of entity tags (weak ones compare weakly, RFC 9110 13.1.2).
fn etag_matches(header: &str, etag: &[u8]) -> bool {
    header
        .split(',')
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == etag)
}

/// Whether `Accept-Encoding` admits gzip: an explicit `gzip` entry decides by its weight;
/// otherwise `*` does (RFC 9110 12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for coding in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let weight = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, q)| q.trim().parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(weight);
        } else if name == "*" {
            any = Some(weight);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// `GET /assets/{assetId}/thumbnails/{index}`: 302 to one rendition of that thumbnail.
pub async fn thumbnail(
    State(state): State<AppState>,
    path: AssetPath,
    query: QueryParams,
) -> Result<Response, Problem> {
    let index = parse_index(path.index().unwrap_or_default())?;
    let (label, width) = (query.label()?, query.width()?);
    let resolved = state.resolver.resolve(path.id()).await?;
    let chosen = choose_rendition(resolved.at_index(index), label, width).ok_or_else(|| {
        let detail = match label {
            Some(l) if resolved.indices().any(|i| i == index) => {
                format!("thumbnail {index} has no rendition labelled {l:?}")
            }
            _ => format!("the asset has no thumbnail with index {index}"),
        };
        Problem::new(Kind::ThumbnailNotFound, detail)
    })?;
    Ok(redirect(&chosen.url, &resolved))
}

/// `GET /assets/{assetId}/poster`: 302 to the default thumbnail, or the one nearest `?time=`.
pub async fn poster(
    State(state): State<AppState>,
    path: AssetPath,
    query: QueryParams,
) -> Result<Response, Problem> {
    let (time, label, width) = (query.time()?, query.label()?, query.width()?);
    let resolved = state.resolver.resolve(path.id()).await?;
    let Some(first) = resolved.indices().next() else {
        return Err(Problem::new(
            Kind::NoThumbnails,
            "the asset has no thumbnails (were they generated by its encoding job?)",
        ));
    };
    // Nearest known time (earlier wins a tie; past the end clamps to the last); without known
    // times, the default thumbnail.
    let index = time
        .and_then(|t| {
            // Clamped first: far past the end every distance rounds to the same float, and the
            // tie would pick the first thumbnail.
            let last = resolved
                .thumbnails()
                .filter_map(|th| th.time)
                .max_by(f64::total_cmp)?;
            let t = t.min(last);
            resolved
                .thumbnails()
                .filter_map(|th| th.time.map(|tt| (th.index, (tt - t).abs())))
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        })
        .map_or(first, |(index, _)| index);
    let chosen = choose_rendition(resolved.at_index(index), label, width).ok_or_else(|| {
        Problem::new(
            Kind::ThumbnailNotFound,
            format!(
                "the poster thumbnail has no rendition labelled {:?}",
                label.unwrap_or_default()
            ),
        )
    })?;
    let mut response = redirect(&chosen.url, &resolved);
    // Which thumbnail was chosen, and its time: `unknown` says that `?time=` could not be
    // honoured (no storyboard, no `recognition.timing`) and the default one was taken.
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-thumbnail-index"),
        HeaderValue::from(index),
    );
    let time = match chosen.time {
        Some(t) => HeaderValue::from_str(&format!("{t}")).expect("a number is a header value"),
        None => HeaderValue::from_static("unknown"),
    };
    headers.insert(HeaderName::from_static("x-thumbnail-time"), time);
    Ok(response)
}

/// What [`choose_rendition`] looks at.
trait Rendition {
    fn label(&self) -> Option<&str>;
    fn width(&self) -> Option<u32>;
}

impl Rendition for &Thumbnail {
    fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
    fn width(&self) -> Option<u32> {
        self.width
    }
}

impl Rendition for ThumbnailView<'_> {
    fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
    fn width(&self) -> Option<u32> {
        self.width
    }
}

/// Picks a rendition: by label; then the smallest at least `width` wide, else the widest;
/// without a width, the widest (the best picture). Renditions of unknown width count only when
/// none has a known width; ties go to the first in list order.
fn choose_rendition<R: Rendition>(
    renditions: impl Iterator<Item = R>,
    label: Option<&str>,
    width: Option<u32>,
) -> Option<R> {
    let mut first = None;
    // (width, position) of the best so far; the position picks the rendition at the end.
    let mut narrowest_fit: Option<(u32, usize)> = None;
    let mut widest: Option<(u32, usize)> = None;
    let mut candidates = Vec::new();
    for t in renditions.filter(|t| label.is_none_or(|l| t.label() == Some(l))) {
        let at = candidates.len();
        first.get_or_insert(at);
        if let Some(w) = t.width() {
            if width.is_some_and(|wanted| w >= wanted)
                && narrowest_fit.is_none_or(|(best, _)| w < best)
            {
                narrowest_fit = Some((w, at));
            }
            if widest.is_none_or(|(best, _)| w > best) {
                widest = Some((w, at));
            }
        }
        candidates.push(Some(t));
    }
    let at = narrowest_fit.or(widest).map_or(first?, |(_, at)| at);
    candidates[at].take()
}

/// 302 to the thumbnail's URL.
fn redirect(url: &str, resolved: &Resolution) -> Response {
    let Ok(location) = HeaderValue::from_str(url) else {
        return Problem::new(Kind::Internal, "the thumbnail URL is not a valid header")
            .into_response();
    };
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    set_freshness(headers, resolved);
    response
}

/// `Cache-Control`, and `x-cache-status: stale` when the answer is served past its freshness
/// while a refresh runs.
fn set_freshness(headers: &mut HeaderMap, resolution: &Resolution) {
    headers.insert(
        header::CACHE_CONTROL,
        cache_control(resolution, resolution.at),
    );
    if resolution.stale {
        headers.insert(
            HeaderName::from_static("x-cache-status"),
            HeaderValue::from_static("stale"),
        );
    }
}

/// Cacheable while the service itself would serve the entry, and never longer than its URLs
/// stay valid; `private` when the URLs are signed (they grant access).
fn cache_control(resolved: &Resolved, now: Instant) -> HeaderValue {
    // Only the fresh part: a stale answer is not for clients to keep.
    let mut max_age = resolved
        .fresh_until()
        .saturating_duration_since(now)
        .as_secs();
    if let Some(expires) = resolved.urls_expire() {
        max_age = max_age.min(expires.saturating_duration_since(now).as_secs());
    }
    cache_control_value(resolved.urls_expire().is_some(), max_age)
}

/// `public, max-age=N` or `private, max-age=N`: made once per value up to a limit (no
/// formatting per request); larger ages are formatted each time.
fn cache_control_value(private: bool, max_age: u64) -> HeaderValue {
    const MADE_ONCE: usize = 4096;
    static VALUES: [[OnceLock<HeaderValue>; MADE_ONCE]; 2] =
        [const { [const { OnceLock::new() }; MADE_ONCE] }; 2];
    let scope = if private { "private" } else { "public" };
    let text = || format!("{scope}, max-age={max_age}");
    match VALUES[usize::from(private)].get(max_age as usize) {
        Some(value) => value
            .get_or_init(|| HeaderValue::from_static(Box::leak(text().into_boxed_str())))
            .clone(),
        None => HeaderValue::from_str(&text()).expect("ASCII header"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(label: Option<&str>, width: Option<u32>) -> Thumbnail {
        Thumbnail {
            index: 1,
            name: format!("{label:?}{width:?}"),
            url: String::new(),
            content_type: "image/jpeg".into(),
            size: 1,
            label: label.map(String::from),
            width,
            height: None,
            time: None,
        }
    }

    #[test]
    fn conditional_and_encoding_headers() {
        assert!(etag_matches("\"abc\"", b"\"abc\""));
        assert!(etag_matches("\"x\", W/\"abc\"", b"\"abc\""));
        assert!(etag_matches("*", b"\"abc\""));
        assert!(!etag_matches("\"abd\"", b"\"abc\""));
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("gzip;Q=0")));
        assert!(!accepts_gzip(&h("gzip;q=0, *")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("*;q=0")));
        assert!(!accepts_gzip(&h("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn rendition_by_label_and_width() {
        let all = [
            th(Some("large"), Some(640)),
            th(Some("medium"), Some(320)),
            th(Some("small"), Some(160)),
        ];
        let pick = |l, w| choose_rendition(all.iter(), l, w).map(|t| t.label.clone().unwrap());
        assert_eq!(
            pick(None, None).as_deref(),
            Some("large"),
            "the widest by default"
        );
        assert_eq!(pick(Some("small"), None).as_deref(), Some("small"));
        assert_eq!(pick(Some("tiny"), None), None);
        assert_eq!(pick(None, Some(200)).as_deref(), Some("medium"));
        assert_eq!(pick(None, Some(160)).as_deref(), Some("small"));
        assert_eq!(pick(None, Some(1)).as_deref(), Some("small"));
        assert_eq!(pick(None, Some(4000)).as_deref(), Some("large"));
        let ties = [th(Some("a"), Some(100)), th(Some("b"), Some(100))];
        assert_eq!(
            choose_rendition(ties.iter(), None, None)
                .unwrap()
                .label
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            choose_rendition(ties.iter(), None, Some(50))
                .unwrap()
                .label
                .as_deref(),
            Some("a")
        );
        let no_width = [th(Some("a"), None), th(Some("b"), None)];
        assert_eq!(
            choose_rendition(no_width.iter(), None, Some(100))
                .unwrap()
                .label
                .as_deref(),
            Some("a")
        );
    }
}
