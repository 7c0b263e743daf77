//! Request metrics, with label sets a caller cannot grow: `route` is the matched route's
//! template (`unmatched` when none matched), `method` a standard method or `other`, `status`
//! one of the statuses the service answers with or `other`.

use std::cell::RefCell;
use std::collections::HashMap;

use axum::http::Method;

/// `http_requests_total` (route, method, status) and `http_request_duration_seconds` (route,
/// method). The handles are looked up in the recorder once per thread and label set, not per
/// request (registering hashes the labels under a lock and allocates their strings).
pub(super) fn record_request(route: &str, method: &Method, status: u16, seconds: f64) {
    let method = method_label(method);
    struct Handles {
        method: &'static str,
        status: u16,
        requests: metrics::Counter,
        duration: metrics::Histogram,
    }
    /// Label sets cached per thread; past this, handles are looked up per request (label sets
    /// are bounded by routes, methods and statuses, so this is a guard, not a limit in use).
    const MAX_CACHED: usize = 1024;
    type ByRoute = HashMap<Box<str>, Vec<Handles>, foldhash::fast::RandomState>;
    thread_local! {
        static CACHED: RefCell<(usize, ByRoute)> = RefCell::default();
    }
    CACHED.with(|cached| {
        let (count, map) = &mut *cached.borrow_mut();
        if let Some(h) = map
            .get(route)
            .and_then(|all| all.iter().find(|h| h.status == status && h.method == method))
        {
            h.requests.increment(1);
            h.duration.record(seconds);
            return;
        }
        let requests = metrics::counter!("http_requests_total", "route" => route.to_owned(), "method" => method, "status" => status_label(status));
        let duration = metrics::histogram!("http_request_duration_seconds", "route" => route.to_owned(), "method" => method);
        requests.increment(1);
        duration.record(seconds);
        if *count < MAX_CACHED {
            *count += 1;
            map.entry(route.into()).or_default().push(Handles {
                method,
                status,
                requests,
                duration,
            });
        }
    });
}

/// The `status` label: the statuses this service (its handlers, the gate, the file server and
/// the HTTP framework) answers with, by number; anything else `other`, so that the label set
/// stays fixed whatever a route ends up answering.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        202 => "202",
        204 => "204",
        206 => "206",
        302 => "302",
        304 => "304",
        307 => "307",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        412 => "412",
        413 => "413",
        414 => "414",
        415 => "415",
        416 => "416",
        429 => "429",
        431 => "431",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

/// The `method` label: the standard methods by name, anything else `other` (a caller can make
/// up methods without end; each would be a series kept forever).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "other");
    }

    #[test]
    fn odd_statuses_share_one_label() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(416), "416");
        for odd in [100, 201, 299, 418, 451, 599, 999] {
            assert_eq!(status_label(odd), "other", "{odd}");
        }
    }
}
