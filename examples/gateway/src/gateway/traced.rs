//! tower-http's trace layer around a request's handling, not around every chunk of
//! its body.
//!
//! `TraceLayer` makes the request's span, enters it while the handler runs, and logs
//! the response head (and a 5xx as a failure). It also wraps the response body, to
//! enter the span and read the clock twice for every frame (and to log the end of
//! the stream at debug level): per streamed token, work that says nothing the
//! gateway's own verdict line, told inside the same span, does not say better.
//!
//! So the body goes around the trace layer instead of through it. [`KeepBody`],
//! directly inside the trace layer, moves each response body into a [`BodySlot`] the
//! request carries and hands the trace layer an empty one; [`TakeBody`], directly
//! outside it, gives the request that slot and puts the body back in place of the
//! trace layer's (empty, never polled) one. The span lives on in the request's ticket
//! until its verdict is logged in it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use axum::body::{Body, HttpBody};
use axum::http::{Request, Response};
use bytes::Bytes;
use pin_project_lite::pin_project;
use tower_service::Service;

/// Where a response body waits while the trace layer handles its response head.
#[derive(Debug, Clone, Default)]
struct BodySlot(Arc<Mutex<Option<Body>>>);

impl BodySlot {
    fn put(&self, body: Body) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
    }

    fn take(&self) -> Option<Body> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Directly inside the trace layer: moves the response body into the request's
/// [`BodySlot`] (if it has one) and answers with an empty body.
#[derive(Debug, Clone)]
pub(super) struct KeepBody<S>(pub(super) S);

impl<S> Service<Request<Body>> for KeepBody<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Kept<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let slot = request.extensions_mut().remove::<BodySlot>();
        Kept {
            inner: self.0.call(request),
            slot,
        }
    }
}

pin_project! {
    /// [`KeepBody`]'s response future.
    #[derive(Debug)]
    pub(super) struct Kept<F> {
        #[pin]
        inner: F,
        slot: Option<BodySlot>,
    }
}

impl<F, E> Future for Kept<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(match this.slot.take() {
            Some(slot) => response.map(|body| {
                slot.put(body);
                Body::empty()
            }),
            None => response,
        }))
    }
}

/// Directly outside the trace layer: gives each request a [`BodySlot`], and puts the
/// body [`KeepBody`] left there back in the response, in place of the one the trace
/// layer wrapped (which is dropped unpolled).
#[derive(Debug, Clone)]
pub(super) struct TakeBody<S>(pub(super) S);

impl<S, B> Service<Request<Body>> for TakeBody<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Taken<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let slot = BodySlot::default();
        request.extensions_mut().insert(slot.clone());
        Taken {
            inner: self.0.call(request),
            slot,
        }
    }
}

pin_project! {
    /// [`TakeBody`]'s response future.
    #[derive(Debug)]
    pub(super) struct Taken<F> {
        #[pin]
        inner: F,
        slot: BodySlot,
    }
}

impl<F, B, E> Future for Taken<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let (head, traced) = response.into_parts();
        let body = match this.slot.take() {
            Some(body) => body,
            // Not through `KeepBody` (nothing is, today): the traced body as it is.
            None => Body::new(traced),
        };
        Poll::Ready(Ok(Response::from_parts(head, body)))
    }
}
