//! The service of one connection: the router, with the peer's address for `ConnectInfo` and
//! the connection's bookkeeping of requests in progress.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use bytes::Bytes;

use super::Tracked;

/// The router, with the connection's peer address (for `ConnectInfo`) and its bookkeeping.
#[derive(Clone)]
pub(super) struct ConnService {
    pub(super) router: Router,
    pub(super) tracked: Arc<Tracked>,
    pub(super) remote: SocketAddr,
}

impl<B> tower::Service<Request<B>> for ConnService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.tracked.begin();
        let guard = InFlight(self.tracked.clone());
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.remote));
        Answer {
            inner: tower::Service::call(&mut self.router, request),
            guard: Some(guard),
        }
    }
}

/// Marks the connection's request as finished when dropped: with the answer's body once hyper
/// has sent it, or with the request if the connection goes first.
pub struct InFlight(Arc<Tracked>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project_lite::pin_project! {
    pub struct Answer {
        #[pin]
        inner: axum::routing::future::RouteFuture<Infallible>,
        guard: Option<InFlight>,
    }
}

impl Future for Answer {
    type Output = Result<Response<CountedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// The answer's body, holding the connection's [`InFlight`] until hyper drops it.
    pub struct CountedBody {
        #[pin]
        inner: Body,
        _guard: Option<InFlight>,
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
