//! A real server started in-process on loopback, authenticated clients that talk to it over
//! real sockets, and the assertions on its answers.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use messagebox::auth::{ClientIdentity, PrivateKey};
use messagebox::client::AuthClient;
use messagebox::config::Config;
use messagebox::http::App;
use messagebox::server::Running;
use messagebox::startup::{self, Parts};

pub struct TestServer {
    pub addr: SocketAddr,
    pub identity: String,
    pub app: Arc<App>,
    running: Option<Running>,
}

impl TestServer {
    /// A server on `database_url` with extra environment `env` (e.g. ROUTING_PREFIX).
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> TestServer {
        Self::start_with(database_url, env, |_| {}).await
    }

    /// As [`start`], letting the test replace subsystems (payments, push, live).
    /// `SERVER_PRIVATE_KEY` in `env` gives the server that key (e.g. to restart "the same"
    /// server); else it gets a random one.
    pub async fn start_with(database_url: &str, env: &[(&str, &str)], tweak: impl FnOnce(&mut Parts)) -> TestServer {
        let key = match env.iter().find(|(k, _)| *k == "SERVER_PRIVATE_KEY") {
            Some((_, hex)) => PrivateKey::from_hex(hex).expect("SERVER_PRIVATE_KEY is a key"),
            None => PrivateKey::random(),
        };
        let mut map: HashMap<String, String> = [
            ("MESSAGEBOX_PORT", "0"),
            ("MESSAGEBOX_BIND", "127.0.0.1"),
            ("MESSAGEBOX_THREADS", "2"),
            ("LOGGING_ENABLED", "false"),
            ("ENABLE_WEBSOCKETS", "false"),
            // No test talks to the public wallet storage; the payment tests set their own.
            ("WALLET_STORAGE_URL", "none"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        map.insert("SERVER_PRIVATE_KEY".into(), key.to_hex());
        map.insert("DATABASE_URL".into(), database_url.into());
        for (k, v) in env {
            map.insert(k.to_string(), v.to_string());
        }
        let mut config = Config::from_map(&map).expect("test config");
        // Tests drive one server hard from one loopback address: the per-process edge limits
        // (rates, concurrency, connections) are lifted unless a test sets them; `tests/edge.rs`
        // tests them with their defaults and with its own values.
        let http = &mut config.resources.http;
        if !map.contains_key("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX") {
            http.pre_auth_rate.max = u64::MAX / 2;
        }
        if !map.contains_key("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX") {
            http.authenticated_rate.max = u64::MAX / 2;
        }
        if !map.contains_key("MESSAGE_BOX_MAX_CONCURRENT_REQUESTS") {
            http.max_concurrent_requests = None;
        }
        if !map.contains_key("MESSAGE_BOX_MAX_CONNECTIONS") {
            http.max_connections = None;
            http.max_connections_per_ip = None;
        }
        let store = startup::open_store(&config, Duration::from_secs(10)).await.expect("store opens");
        let mut parts = Parts::from_config(&config, &store).expect("parts");
        tweak(&mut parts);
        let app = startup::app(&config, key, store, parts);
        let running = startup::start(&config, app.clone()).expect("server starts");
        TestServer { addr: running.addr, identity: key.public_key().to_hex(), app, running: Some(running) }
    }

    pub fn client(&self) -> AuthClient {
        AuthClient::new(ClientIdentity::random(), self.addr)
    }

    pub fn client_for(&self, identity: ClientIdentity) -> AuthClient {
        AuthClient::new(identity, self.addr)
    }

    /// Graceful shutdown (also done on drop).
    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// A port that was free a moment ago, for a server in a child process (the child binds it;
/// the race is harmless here).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// A fresh identity's compressed key.
pub fn key() -> String {
    PrivateKey::random().public_key().to_hex()
}

/// Asserts an error body: status, code and description.
#[track_caller]
pub fn assert_error(got: &(u16, serde_json::Value), status: u16, code: &str, description: &str) {
    assert_eq!(got.0, status, "status of {}", got.1);
    assert_eq!(got.1["status"], "error", "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert_eq!(got.1["description"], description, "{}", got.1);
}
