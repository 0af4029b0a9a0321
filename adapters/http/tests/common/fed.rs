//! The fed rig: a worker whose body is what the test sends it frame by frame, the
//! client service behind a layer ([`Route`]) and a hyper gateway relaying the layer's
//! `TrackedBody` ([`gateway`]), for the timer, failure-event and pool tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::{Empty, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sluice_http::PickedWorker;
use tokio::sync::mpsc;
use tower::Service;

use super::{Proto, Reader, Server, client, relay, within};

/// A worker the test feeds: each request answers `200` at once (`text/event-stream`,
/// or `application/json` on the path `/json`), its body what the test sends on the
/// request's channel (dropping the sender ends the body cleanly; the worker dropping
/// the body closes the channel).
pub struct FedWorker {
    pub server: Server,
    requests: mpsc::UnboundedReceiver<mpsc::UnboundedSender<Bytes>>,
}

impl FedWorker {
    pub async fn start() -> Self {
        let (tx, requests) = mpsc::unbounded_channel();
        let server = Server::start(service_fn(move |req: Request<Incoming>| {
            let (frames, rx) = mpsc::unbounded_channel::<Bytes>();
            let _ = tx.send(frames);
            let body = StreamBody::new(stream::unfold(rx, |mut rx| async move {
                let bytes = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
            }));
            let content_type = match req.uri().path() {
                "/json" => "application/json",
                _ => "text/event-stream",
            };
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            async move { Ok::<_, Infallible>(response) }
        }))
        .await;
        Self { server, requests }
    }

    /// The body channel of the next request that reaches this worker.
    pub async fn request(&mut self) -> mpsc::UnboundedSender<Bytes> {
        within("a request at the worker", self.requests.recv())
            .await
            .expect("worker")
    }
}

/// The client service behind a layer: sends each request, its path and query kept, to
/// `workers[i]`, `i` the worker the pool picked. Without a pool there must be one
/// worker; with more, the layer must have put the pick in the request's extensions.
#[derive(Clone)]
pub struct Route {
    pub workers: Arc<[SocketAddr]>,
    pub client: Client<HttpConnector, Empty<Bytes>>,
}

impl Route {
    /// A route to `workers`, over a client speaking `proto`.
    pub fn new(proto: Proto, workers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            workers: workers.into_iter().collect(),
            client: client(proto),
        }
    }
}

impl Service<Request<Empty<Bytes>>> for Route {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, mut request: Request<Empty<Bytes>>) -> Self::Future {
        let index = match request.extensions().get::<PickedWorker>() {
            Some(worker) => worker.index,
            None => {
                assert_eq!(
                    self.workers.len(),
                    1,
                    "a pool's layer puts the worker in the request"
                );
                0
            }
        };
        let pq = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let uri = format!("http://{}{pq}", self.workers[index]);
        *request.uri_mut() = uri.parse().expect("uri");
        self.client.call(request)
    }
}

/// A hyper gateway whose upstream is `upstream` (a layer's service over a [`Route`]),
/// relaying its body to the client, the path and query kept.
pub async fn gateway<S, B, E>(upstream: S) -> Server
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = sluice_http::BreakerError<E>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Server::start(service_fn(move |req: Request<Incoming>| {
        let upstream = upstream.clone();
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let request = Request::get(pq).body(Empty::new()).expect("request");
        async move { Ok::<_, Infallible>(relay(upstream, request).await) }
    }))
    .await
}

/// The client's request to a gateway, on `path`: the response must be a 200.
pub async fn get(proto: Proto, gateway: &Server, path: &str) -> Reader {
    let uri = format!("http://{}{path}", gateway.addr);
    let request = Request::get(uri).body(Empty::new()).expect("request");
    let response = within("gateway response", client(proto).request(request))
        .await
        .expect("gateway request");
    assert_eq!(response.status(), 200);
    Reader::new(response)
}
