//! The faults the fakes inject: a queue per operation ([`FaultQueue`], used by the fake ARM,
//! the fake MK.IO and the fake Entra ID), and the faults of the two REST services' fakes
//! ([`RestFault`], ARM and MK.IO alike) with what each does to a request ([`apply`]).
//!
//! (The storage fault proxy queues its faults differently: one queue, each fault taken by the
//! first request its target matches.)

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::fake_entra::json_text_response;

/// Faults queued per operation `Op`, each consumed in order by the next request of its
/// operation.
pub struct FaultQueue<Op, F> {
    queues: HashMap<Op, VecDeque<F>>,
}

impl<Op, F> Default for FaultQueue<Op, F> {
    fn default() -> Self {
        Self {
            queues: HashMap::new(),
        }
    }
}

impl<Op: Eq + Hash, F: Clone> FaultQueue<Op, F> {
    /// Queues `fault` for the next request of `op`.
    pub fn push(&mut self, op: Op, fault: F) {
        self.push_n(op, fault, 1);
    }

    /// Queues the same fault for the next `times` requests of `op`.
    pub fn push_n(&mut self, op: Op, fault: F, times: usize) {
        self.queues
            .entry(op)
            .or_default()
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Faults still queued for `op`.
    pub fn pending(&self, op: &Op) -> usize {
        self.queues.get(op).map_or(0, VecDeque::len)
    }

    /// Drops every queued fault.
    pub fn clear(&mut self) {
        self.queues.clear();
    }

    /// The fault for this request of `op`, if one is queued (consumed).
    pub fn next(&mut self, op: &Op) -> Option<F> {
        self.queues.get_mut(op).and_then(VecDeque::pop_front)
    }
}

/// A fault for the next request of one operation of the fake ARM or the fake MK.IO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestFault {
    /// This status with the service's error body (its code: the status' reason phrase).
    Status(u16),
    /// 429 with the service's throttling body, and `Retry-After` when given.
    TooManyRequests { retry_after_secs: Option<u64> },
    /// Wait this long, then answer normally (to trip client timeouts).
    Delay(Duration),
    /// No response at all. HTTP/1.1: the socket is closed. HTTP/2 (what TLS + ALPN gives
    /// reqwest): the stream is reset, since hyper runs each h2 stream in its own task.
    DropConnection,
    /// A 200 whose JSON body is cut in half, headers intact (other statuses are left alone).
    MalformedJson,
    /// (The asset list only) The page's `@odata.nextLink` points back to this same page, and
    /// so does the one on that page, forever.
    NextLinkLoop,
}

/// What is left for the handler to do after [`apply`] let the request through.
#[derive(Default)]
pub struct Proceed {
    /// Answer the list page with a `@odata.nextLink` back to itself.
    pub next_link_loop: bool,
    /// Pass a 200 answer through [`Proceed::finish`] to cut its body in half.
    malformed_json: bool,
}

impl Proceed {
    /// The handler's answer with the fault applied to it.
    pub async fn finish(self, response: Response) -> Response {
        if self.malformed_json && response.status() == StatusCode::OK {
            truncate_body(response).await
        } else {
            response
        }
    }
}

/// Applies `fault` to a request of the fake service `fake` ("ARM", "MK.IO"): `Err` holds the
/// answer when the fault is one (`error(status, code, message)` builds the service's error
/// body, `throttled(retry_after_secs)` its 429 body, to which `Retry-After` is added); `Ok`
/// lets the request through (after a delay) with what is left to do.
pub async fn apply(
    fault: Option<RestFault>,
    fake: &str,
    error: fn(StatusCode, &str, &str) -> Response,
    throttled: impl FnOnce(Option<u64>) -> Response,
) -> Result<Proceed, Response> {
    let mut proceed = Proceed::default();
    match fault {
        None => {}
        Some(RestFault::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("fault status is a valid code");
            let code_name: String = status
                .canonical_reason()
                .unwrap_or("Error")
                .split_whitespace()
                .collect();
            let message = format!("Fault injected by the fake {fake}: {code}.");
            return Err(error(status, &code_name, &message));
        }
        Some(RestFault::TooManyRequests { retry_after_secs }) => {
            let mut response = throttled(retry_after_secs);
            if let Some(secs) = retry_after_secs {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&secs.to_string()).expect("digits"),
                );
            }
            return Err(response);
        }
        Some(RestFault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(RestFault::DropConnection) => {
            // Handlers cannot fail in axum; unwinding out of the connection task (HTTP/1.1) or
            // stream task (HTTP/2) drops it without a response. `resume_unwind` skips the panic
            // hook, so nothing is printed; the caller holds no lock here.
            std::panic::resume_unwind(Box::new(format!("fake {fake}: RestFault::DropConnection")));
        }
        Some(RestFault::MalformedJson) => proceed.malformed_json = true,
        Some(RestFault::NextLinkLoop) => proceed.next_link_loop = true,
    }
    Ok(proceed)
}

/// The same response with its body cut in half: valid headers, broken JSON.
async fn truncate_body(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("in-memory body");
    let text = String::from_utf8_lossy(&bytes);
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut broken = json_text_response(parts.status, text[..cut].to_owned());
    *broken.headers_mut() = parts.headers;
    broken.headers_mut().remove(header::CONTENT_LENGTH);
    broken
}
