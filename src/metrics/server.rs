//! The metrics listener: `GET /metrics` on `MESSAGEBOX_METRICS_ADDR`, on a thread of its own
//! so a scrape never runs on (or waits for) a core.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::http::App;

/// Binds the listener (before the server starts, so a taken address stops start-up).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `GET /metrics` for `app` on `listener` until `shutdown` turns true.
pub fn serve(
    listener: std::net::TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("messagebox-metrics".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(error = %e, "cannot build the metrics runtime"),
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!(error = %e, "cannot register the metrics listener"),
            };
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let app = app.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| answer(app.clone(), req));
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
        });
    })
}

async fn answer(app: Arc<App>, req: http::Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let fleet = app.broker.as_ref().map(|b| b.stats());
            let text = app.metrics.render(&app.api.store.stats(), app.auth.sessions().len(), fleet);
            (StatusCode::OK, super::CONTENT_TYPE, Bytes::from(text))
        }
        (_, "/metrics") => {
            (StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", Bytes::from_static(b"GET only\n"))
        }
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"metrics are at /metrics\n")),
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    Ok(r)
}
