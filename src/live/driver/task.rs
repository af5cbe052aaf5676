//! The task of one Engine.IO session: it pumps a [`ConnectionCore`] — inputs from the core's
//! queue, WebSocket frames, timers, store outcomes in; replies, frames and commands out. All
//! protocol timing (what to buffer, when to store) is the core's; this only moves bytes.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::core::{AdoptInput, Input, LocalCore, PostInput, Reply};
use super::hub::StoreFuture;
use super::WRITE_TIMEOUT;
use crate::live::engineio::{ErrorCode, HttpReply, PollStart, Transmit, WsId};
use crate::live::events::{StoreOutcome, StoreToken};
use crate::live::{Command, ConnectionCore};

/// One session's task state. Boxed by its task (see [`Connection::new`]).
pub(super) struct Connection {
    core: ConnectionCore,
    local: Rc<LocalCore>,
    held: Option<Reply<HttpReply>>,
    /// The stream of the core's adopted WebSocket ([`ConnectionCore::adopted_ws`]).
    ws: Option<WebSocketStream<TcpStream>>,
    /// The store request under way (the core hands out one at a time).
    inflight: Option<StoreFuture>,
}

fn ws_config(max_payload: usize) -> WebSocketConfig {
    // Small buffers keep idle connections cheap; messages above maxPayload close with 1009.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max_payload + 1024))
        .max_frame_size(Some(max_payload + 1024))
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.local.task_finished();
    }
}

impl Connection {
    /// Boxed: an async fn taking `self` by value keeps the 1.5 KiB struct twice in its state
    /// (the argument and the binding), which made each connection's task 4 KiB.
    pub fn new(core: ConnectionCore, local: Rc<LocalCore>) -> Box<Connection> {
        Box::new(Connection { core, local, held: None, ws: None, inflight: None })
    }

    pub async fn run(mut self: Box<Self>, mut rx: mpsc::Receiver<Input>) {
        let sid = self.core.sid().to_string();
        let mut outgoing: Vec<String> = Vec::new();
        while self.drain(&mut outgoing).await {
            let deadline = self.core.next_timeout();
            let adopted = self.core.adopted_ws();
            tokio::select! {
                input = rx.recv() => match input {
                    Some(i) => self.on_input(i).await,
                    // Dropped as too slow (or the core is gone).
                    None => self.core.close(Instant::now()),
                },
                _ = sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
                _ = held_closed(&mut self.held) => {
                    self.held = None;
                    self.core.poll_aborted(Instant::now());
                }
                frame = next_frame(&mut self.ws) => self.on_frame(adopted, frame),
                (token, outcome) = inflight(&mut self.inflight) => {
                    self.inflight = None;
                    self.core.store_outcome(Instant::now(), token, outcome);
                }
            }
        }
        // Gone: forget the session here and everywhere.
        self.local.forget(&sid);
        if let Some(identity) = self.core.identity().map(str::to_string) {
            self.local.unbind(&sid, &identity);
        }
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
    }

    async fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Poll(reply) => match self.core.handle_poll(now) {
                PollStart::Respond(r) => {
                    let _ = reply.send(r);
                }
                PollStart::Held => {
                    if let Some(old) = self.held.replace(reply) {
                        let _ = old.send(HttpReply::status_only(400));
                    }
                }
            },
            Input::Post(post) => {
                let PostInput { content_length, content_type, body, reply } = *post;
                let r = match self.core.begin_post(now, content_length, content_type.as_deref()) {
                    Err(r) => r,
                    Ok(()) => self.core.finish_post(now, &body),
                };
                let _ = reply.send(r);
            }
            Input::Upgrade(reply) => {
                let _ = reply.send(self.core.begin_upgrade(now));
            }
            Input::Adopt(adopt) => {
                let AdoptInput { ws, stream, read } = *adopt;
                self.adopt(now, ws, stream, read).await
            }
            Input::Deliver(d) => {
                if self.core.deliver(now, &d) {
                    self.local.metrics.live_delivery();
                }
            }
            Input::Close => self.core.close(now),
        }
    }

    /// Takes over a WebSocket stream hyper has upgraded (possibly with bytes already read).
    async fn adopt(&mut self, now: Instant, ws: WsId, stream: std::net::TcpStream, read: Bytes) {
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                if let (Some(old), Some(_)) = (self.core.adopted_ws(), self.ws.take()) {
                    self.core.ws_closed(now, old);
                }
                let cfg = ws_config(self.local.hub.config.engine.max_payload);
                let socket = if read.is_empty() {
                    WebSocketStream::from_raw_socket(stream, Role::Server, Some(cfg)).await
                } else {
                    WebSocketStream::from_partially_read(stream, read.to_vec(), Role::Server, Some(cfg)).await
                };
                self.ws = Some(socket);
                self.core.ws_adopted(ws);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot adopt a WebSocket");
                self.core.ws_closed(now, ws);
            }
        }
    }

    fn on_frame(&mut self, id: Option<WsId>, frame: Frame) {
        let Some(id) = id else { return };
        let now = Instant::now();
        match frame {
            Some(Ok(Message::Text(t))) => self.core.ws_text(now, id, t.as_str()),
            Some(Ok(Message::Binary(b))) => self.core.ws_binary(now, id, &b),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                self.ws = None;
                self.core.ws_closed(now, id);
            }
            Some(Err(WsError::Capacity(_))) => self.core.ws_too_big(now, id),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket failed");
                self.ws = None;
                self.core.ws_closed(now, id);
            }
        }
    }

    /// Writes what the core produced and runs its commands. Returns false once the
    /// connection is finished.
    async fn drain(&mut self, outgoing: &mut Vec<String>) -> bool {
        loop {
            let mut close_ws: Option<(WsId, Option<u16>)> = None;
            while let Some(t) = self.core.poll_transmit() {
                match t {
                    Transmit::PollResponse(r) => match self.held.take() {
                        Some(tx) => {
                            let _ = tx.send(r);
                        }
                        None => tracing::debug!("poll response without a held poll"),
                    },
                    // Always for the adopted socket: the core keeps the others back.
                    Transmit::WsText { text, .. } => outgoing.push(text),
                    Transmit::WsClose { ws, code } => close_ws = Some((ws, code)),
                }
            }
            if !outgoing.is_empty() {
                if let (Some(ws), Some(id)) = (self.ws.as_mut(), self.core.adopted_ws()) {
                    let write = async {
                        for text in outgoing.drain(..) {
                            ws.feed(Message::text(text)).await?;
                        }
                        ws.flush().await
                    };
                    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => {
                            tracing::debug!("WebSocket write failed or timed out; dropping it");
                            outgoing.clear();
                            self.ws = None;
                            self.core.ws_closed(Instant::now(), id);
                            continue;
                        }
                    }
                }
                outgoing.clear();
            }
            if let Some((id, code)) = close_ws {
                if self.core.adopted_ws() == Some(id) {
                    if let Some(mut ws) = self.ws.take() {
                        let frame = code.map(|c| CloseFrame { code: c.into(), reason: "".into() });
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(frame)).await;
                        self.core.ws_closed(Instant::now(), id);
                    }
                }
            }
            let mut finished = false;
            while let Some(c) = self.core.poll_command() {
                match c {
                    Command::Bind { identity } => {
                        self.local.metrics.handshake(crate::metrics::Transport::Live);
                        if !self.local.bind(self.core.sid(), &identity) {
                            tracing::debug!(sid = self.core.sid(), "live identity at its connection limit");
                            self.core.refuse_identity(Instant::now());
                        }
                    }
                    Command::RateLimited(scope) => self.local.metrics.rate_limited(scope),
                    Command::Unbind { identity } => self.local.unbind(self.core.sid(), &identity),
                    Command::Store(r) => self.inflight = Some(self.local.hub.store(r)),
                    Command::Deliver(d) => self.local.hub.route(d),
                    Command::Closed(cause) => {
                        tracing::debug!(sid = self.core.sid(), %cause, "live connection closed");
                        finished = true;
                    }
                }
            }
            if finished {
                // Pull the last transmits (a final poll answer, the WebSocket close).
                while let Some(t) = self.core.poll_transmit() {
                    if let Transmit::PollResponse(r) = t {
                        if let Some(tx) = self.held.take() {
                            let _ = tx.send(r);
                        }
                    }
                }
                if let Some(tx) = self.held.take() {
                    let _ = tx.send(ErrorCode::UnknownSid.http_reply());
                }
                return false;
            }
            return true;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn held_closed(held: &mut Option<Reply<HttpReply>>) {
    match held {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

type Frame = Option<Result<Message, WsError>>;

async fn next_frame(ws: &mut Option<WebSocketStream<TcpStream>>) -> Frame {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn inflight(f: &mut Option<StoreFuture>) -> (StoreToken, StoreOutcome) {
    match f {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}
