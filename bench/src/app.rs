//! The raw consumers' side of the stub app: one keep-alive HTTP/1.1 client that POSTs a body.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A pooled client for one URL; cheap to clone into each delivery's task.
#[derive(Clone)]
pub struct AppClient {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
}

impl AppClient {
    /// A client for `url`, with Nagle off as the sidecar has it.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().context("stub app URL")?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client, uri })
    }

    /// POSTs `body`; true when the app answered 2xx and the response was read to its end.
    pub async fn post(&self, body: Bytes) -> bool {
        let request = Request::post(self.uri.clone())
            .header("content-type", "application/octet-stream")
            .body(Full::new(body))
            .expect("a valid request");
        match self.client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let drained = response.into_body().collect().await.is_ok();
                status.is_success() && drained
            }
            Err(_) => false,
        }
    }
}
