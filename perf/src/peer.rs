//! One BRC-104 client over one keep-alive connection, as `AuthFetch` behaves: handshake at
//! `/.well-known/auth`, every request signed with the library's [`ClientSession`], every
//! response's signature verified, and one re-handshake when the server answers an unsigned
//! 401 (its session was retired or expired).

use messagebox::auth::{AuthMessage, ClientIdentity, ClientSession};

use crate::http::{Conn, HttpError, Response, Target};
use crate::stats::{ErrorKind, OpError};

impl From<HttpError> for OpError {
    fn from(e: HttpError) -> OpError {
        match e {
            HttpError::Protocol(m) => OpError::protocol(m),
            other => OpError::connect(other.to_string()),
        }
    }
}

pub struct Peer {
    identity: ClientIdentity,
    session: Option<ClientSession>,
    conn: Conn,
    verify: bool,
    /// Handshakes done, and those forced by a 401.
    pub handshakes: u64,
    pub rehandshakes: u64,
}

const JSON: (&str, &str) = ("content-type", "application/json");

impl Peer {
    pub fn new(identity: ClientIdentity, target: Target, verify: bool) -> Peer {
        Peer::from_source(identity, target, verify, None)
    }

    /// A peer whose connections come from the local address `source`.
    pub fn from_source(
        identity: ClientIdentity,
        target: Target,
        verify: bool,
        source: Option<std::net::IpAddr>,
    ) -> Peer {
        Peer {
            identity,
            session: None,
            conn: Conn::from_source(target, source),
            verify,
            handshakes: 0,
            rehandshakes: 0,
        }
    }

    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    pub fn target(&self) -> &Target {
        self.conn.target()
    }

    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// After a timeout: the connection's state is unknown.
    pub fn reset_connection(&mut self) {
        self.conn.reset();
    }

    /// A new BRC-103 session (replacing any current one).
    pub async fn handshake(&mut self) -> Result<(), OpError> {
        let (msg, pending) = self.identity.start_handshake();
        let body = msg.to_json().into_bytes();
        let headers = [(JSON.0.to_string(), JSON.1.to_string())];
        let resp = self.conn.request("POST", "/.well-known/auth", &headers, &body).await?;
        if resp.status != 200 {
            return Err(OpError::new(
                if resp.status == 401 { ErrorKind::Auth } else { ErrorKind::Http(resp.status) },
                format!("handshake: HTTP {}: {}", resp.status, snippet(&resp.body)),
            ));
        }
        let reply =
            AuthMessage::from_json(&resp.body).map_err(|e| OpError::protocol(format!("handshake reply: {e}")))?;
        // Always verified: the library builds sessions only from verified replies (and
        // `--skip-verify` is about the per-request signatures, not the rare handshakes).
        let session = pending.finish(&self.identity, &reply).map_err(|e| OpError::auth(format!("handshake: {e}")))?;
        self.session = Some(session);
        self.handshakes += 1;
        Ok(())
    }

    /// A signed request; the signed response is verified (unless `--skip-verify`). An
    /// unsigned 429 or 503 is returned as it is.
    pub async fn call(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, OpError> {
        let mut retried = false;
        loop {
            if self.session.is_none() {
                self.handshake().await?;
            }
            let session = self.session.as_ref().expect("handshaken");
            let headers: &[(&str, &str)] = if body.is_some() { &[JSON] } else { &[] };
            let signed = session
                .sign_request(&self.identity, method, path, headers, body)
                .map_err(|e| OpError::auth(format!("signing: {e}")))?;
            let resp = self.conn.request(method, path, &signed.headers, signed.body.as_deref().unwrap_or(&[])).await?;
            if resp.header("x-bsv-auth-signature").is_none() {
                if resp.status == 401 && !retried {
                    retried = true;
                    self.session = None;
                    self.rehandshakes += 1;
                    continue;
                }
                // A server's edge refusals (rate limit, busy) come before its auth layer and
                // are unsigned by design: they are answers, reported by their status.
                if resp.status == 429 || resp.status == 503 {
                    return Ok(resp);
                }
                return Err(OpError::auth(format!("unsigned HTTP {}: {}", resp.status, snippet(&resp.body))));
            }
            if self.verify {
                let session = self.session.as_ref().expect("signed on a session");
                let pairs: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                session
                    .verify_response(&signed.request_id, resp.status, &pairs, &resp.body)
                    .map_err(|e| OpError::auth(format!("response signature: {e}")))?;
            }
            return Ok(resp);
        }
    }

    /// A signed request whose answer is returned whatever it is (signed or not, any status),
    /// unverified: what an attacker needs, who only reads the status and code.
    pub async fn call_raw(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, OpError> {
        if self.session.is_none() {
            self.handshake().await?;
        }
        let session = self.session.as_ref().expect("handshaken");
        let signed = session
            .sign_request(&self.identity, method, path, &[JSON], Some(body))
            .map_err(|e| OpError::auth(format!("signing: {e}")))?;
        let resp = self.conn.request(method, path, &signed.headers, signed.body.as_deref().unwrap_or(&[])).await?;
        if resp.status == 401 && resp.header("x-bsv-auth-signature").is_none() {
            // The server forgot the session: the next call handshakes again.
            self.session = None;
            self.rehandshakes += 1;
        }
        Ok(resp)
    }

    /// POST a JSON body to a business route; anything but 200 is an error of that status.
    pub async fn post_ok(&mut self, route: &str, body: &[u8]) -> Result<Response, OpError> {
        let path = self.conn.target().route(route);
        let resp = self.call("POST", &path, Some(body)).await?;
        if resp.status != 200 {
            return Err(OpError::new(ErrorKind::Http(resp.status), format!("{route}: {}", snippet(&resp.body))));
        }
        Ok(resp)
    }
}

pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    s.into_owned()
}
