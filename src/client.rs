//! An async HTTP client that speaks BRC-103/104 the way `@bsv/sdk`'s `AuthFetch` does:
//! handshake on first use, every request signed, every response verified, and one
//! re-handshake when the server answers 401 (restart, expired or retired session).
//! Used by the integration tests and the load generator; one keep-alive connection.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::auth::{AuthError, AuthMessage, ClientIdentity, ClientSession, SignedRequest};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Connection(String),
    #[error("handshake failed: HTTP {status}: {body}")]
    Handshake { status: u16, body: String },
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("unauthenticated response HTTP {status}: {body}")]
    Unauthenticated { status: u16, body: String },
    #[error("bad response: {0}")]
    Protocol(String),
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One client identity talking to one server.
pub struct AuthClient {
    identity: ClientIdentity,
    addr: SocketAddr,
    session: Option<ClientSession>,
    conn: Option<SendRequest<Full<Bytes>>>,
    /// Handshakes performed (tests and load reports).
    pub handshakes: u64,
}

impl AuthClient {
    pub fn new(identity: ClientIdentity, addr: SocketAddr) -> Self {
        AuthClient { identity, addr, session: None, conn: None, handshakes: 0 }
    }

    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    pub fn session(&self) -> Option<&ClientSession> {
        self.session.as_ref()
    }

    /// Forgets the session (the next request handshakes again).
    pub fn forget_session(&mut self) {
        self.session = None;
    }

    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            let stream =
                tokio::net::TcpStream::connect(self.addr).await.map_err(|e| ClientError::Connection(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Connection(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.conn = Some(sender);
        }
        let conn = self.conn.as_mut().expect("just connected");
        conn.ready().await.map_err(|e| ClientError::Connection(e.to_string()))?;
        Ok(conn)
    }

    /// Sends any request and returns the raw response (no signing, no verification).
    pub async fn send_raw(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let mut b = http::Request::builder().method(method).uri(target).header("host", self.addr.to_string());
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let conn = self.connection().await?;
        let resp = match conn.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(ClientError::Connection(e.to_string()));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp.into_body().collect().await.map_err(|e| ClientError::Connection(e.to_string()))?.to_bytes();
        Ok(RawResponse { status, headers, body })
    }

    /// `POST /.well-known/auth` with an initialRequest; keeps the session.
    pub async fn handshake(&mut self) -> Result<&ClientSession, ClientError> {
        let (msg, pending) = self.identity.start_handshake();
        let resp = self
            .send_raw(
                "POST",
                "/.well-known/auth",
                &[("content-type".into(), "application/json".into())],
                Some(msg.to_json().into_bytes()),
            )
            .await?;
        if resp.status != 200 {
            return Err(ClientError::Handshake {
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).into(),
            });
        }
        let reply = AuthMessage::from_json(&resp.body).map_err(AuthError::from)?;
        self.session = Some(pending.finish(&self.identity, &reply)?);
        self.handshakes += 1;
        Ok(self.session.as_ref().expect("just set"))
    }

    /// Signs a request on the current session (handshaking first if needed).
    pub async fn sign(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<SignedRequest, ClientError> {
        if self.session.is_none() {
            self.handshake().await?;
        }
        let session = self.session.as_ref().expect("handshaken");
        Ok(session.sign_request(&self.identity, method, target, headers, body)?)
    }

    /// A signed request whose signed response is verified. A 401 answer re-handshakes and
    /// retries once, as AuthFetch does after it has had a successful exchange.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ClientError> {
        let mut retried = false;
        loop {
            let signed = self.sign(method, target, headers, body).await?;
            let resp = self.send_raw(method, target, &signed.headers, signed.body.clone()).await?;
            if resp.header("x-bsv-auth-signature").is_none() {
                if resp.status == 401 && !retried {
                    retried = true;
                    self.session = None;
                    continue;
                }
                return Err(ClientError::Unauthenticated {
                    status: resp.status,
                    body: String::from_utf8_lossy(&resp.body).into(),
                });
            }
            let pairs: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.session.as_ref().expect("signed on a session").verify_response(
                &signed.request_id,
                resp.status,
                &pairs,
                &resp.body,
            )?;
            return Ok(resp);
        }
    }

    /// POST a JSON body; returns status and parsed JSON.
    pub async fn post_json(&mut self, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        let bytes = serde_json::to_vec(body).expect("JSON serialises");
        let r = self.request("POST", path, &[("content-type", "application/json")], Some(&bytes)).await?;
        Ok((r.status, r.json()))
    }

    /// GET a path with query; returns status and parsed JSON.
    pub async fn get_json(&mut self, target: &str) -> Result<(u16, Value), ClientError> {
        let r = self.request("GET", target, &[], None).await?;
        Ok((r.status, r.json()))
    }
}
