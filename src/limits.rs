//! The resource limits of a public server: the newer upstream's resource profiles
//! (`MESSAGE_BOX_RESOURCE_PROFILE` = `small` | `standard` | `high-throughput`, `standard` by
//! default) and every `MESSAGE_BOX_*` limit, with its default per profile
//! (`../shared/spec/ts-next-ops.md` §1.2–§1.7), plus the few bounds of our own that the
//! newer server does not have (per-IP connections, the live authentication deadline,
//! database timeouts).
//!
//! [`ResourceLimits::for_profile`] gives a profile's defaults; `config` reads the
//! environment over them. A limit the operator disabled (`-1` / `unlimited`) is `None`.

use std::time::Duration;

/// A limit that `-1` / `unlimited` disables (`None`).
pub type Limit = Option<u64>;

/// The newer upstream's resource profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Small,
    Standard,
    HighThroughput,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Small => "small",
            Profile::Standard => "standard",
            Profile::HighThroughput => "high-throughput",
        }
    }

    /// Picks the profile's value.
    fn pick<T>(self, small: T, standard: T, high: T) -> T {
        match self {
            Profile::Small => small,
            Profile::Standard => standard,
            Profile::HighThroughput => high,
        }
    }
}

/// A fixed-window rate limit: at most `max` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u64,
    pub window: Duration,
}

/// The HTTP edge (§1.3, §1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// `MESSAGE_BOX_MAX_BODY_BYTES`: largest JSON request body (`-1` → no practical limit).
    pub max_body_bytes: u64,
    /// Largest body read before the request's BRC-104 session is known (ours: requests
    /// without a session, and handshakes, are small).
    pub max_unauthenticated_body_bytes: u64,
    /// `MESSAGE_BOX_MAX_RESPONSE_BYTES`: largest materialised response.
    pub max_response_bytes: Limit,
    /// `MESSAGE_BOX_MAX_CONCURRENT_REQUESTS`: in-flight requests per process (503 `ERR_SERVER_BUSY`).
    pub max_concurrent_requests: Limit,
    /// `MESSAGE_BOX_MAX_CONNECTIONS`: open TCP connections per process (WebSockets included).
    pub max_connections: Limit,
    /// Open TCP connections per client IP (ours; the newer server has no such cap).
    pub max_connections_per_ip: Limit,
    /// `MESSAGE_BOX_REQUEST_TIMEOUT_MS`.
    pub request_timeout: Duration,
    /// `MESSAGE_BOX_HEADERS_TIMEOUT_MS`.
    pub headers_timeout: Duration,
    /// `MESSAGE_BOX_KEEP_ALIVE_TIMEOUT_MS`.
    pub keep_alive_timeout: Duration,
    /// `MESSAGE_BOX_SOCKET_TIMEOUT_MS`: an idle connection is closed.
    pub socket_timeout: Duration,
    /// `MESSAGE_BOX_MAX_REQUESTS_PER_SOCKET`.
    pub max_requests_per_socket: u64,
    /// `MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX` / `_WINDOW_MS`: per client IP, every request.
    pub pre_auth_rate: RateLimit,
    /// `MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX` / `_WINDOW_MS`: per identity.
    pub authenticated_rate: RateLimit,
    /// JSON values (scalars and containers) one request body may hold (ours): a body is
    /// pre-scanned against it before it is materialised, which costs ~80 bytes a value.
    /// Bounds a body's parsed size at ~80 × this; a BEEF sent as a number array needs one
    /// value per byte.
    pub max_json_values: u64,
    /// Keys (client IPs, identities) each rate limiter tracks at most (ours): bounds the
    /// limiters' memory under an address spray.
    pub rate_limit_keys: u64,
}

/// Messages, lists and storage (§1.2, §1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLimits {
    /// `MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES`: UTF-8 bytes of `message.body` (HTTP and live).
    pub max_message_body_bytes: Limit,
    /// `MESSAGE_BOX_MAX_RECIPIENTS`.
    pub max_recipients: Limit,
    /// `MESSAGE_BOX_LIST_DEFAULT_LIMIT`.
    pub list_default_limit: Limit,
    /// `MESSAGE_BOX_LIST_MAX_LIMIT`.
    pub list_max_limit: Limit,
    /// `MESSAGE_BOX_LIST_MAX_OFFSET`.
    pub list_max_offset: Limit,
    /// `MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES`: the byte budget of one list page.
    pub list_max_response_bytes: Limit,
    /// `MESSAGE_BOX_MAX_INBOX_MESSAGES`: unexpired messages per recipient (all boxes).
    pub max_inbox_messages: Limit,
    /// `MESSAGE_BOX_MAX_INBOX_BYTES`: stored body bytes per recipient.
    pub max_inbox_bytes: Limit,
    /// `MESSAGE_BOX_MAX_SENDER_MESSAGES`: unexpired messages per sender.
    pub max_sender_messages: Limit,
    /// `MESSAGE_BOX_MAX_SENDER_BYTES`.
    pub max_sender_bytes: Limit,
    /// `MESSAGE_BOX_MAX_ACKNOWLEDGMENT_IDS`: ids per `/acknowledgeMessage`.
    pub max_acknowledgment_ids: Limit,
    /// `MESSAGE_BOX_DEVICE_LIST_DEFAULT_LIMIT` / `_MAX_LIMIT` / `_MAX_OFFSET`.
    pub device_list_default_limit: Limit,
    pub device_list_max_limit: Limit,
    pub device_list_max_offset: Limit,
    /// `MESSAGE_BOX_PERMISSION_LIST_DEFAULT_LIMIT` / `_MAX_LIMIT` / `_MAX_OFFSET`.
    pub permission_list_default_limit: Limit,
    pub permission_list_max_limit: Limit,
    pub permission_list_max_offset: Limit,
    /// `MESSAGE_BOX_MAX_NOTIFICATION_DEVICES`: FCM devices per recipient.
    pub max_notification_devices: Limit,
}

/// Retention of stored messages (§1.7, §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionLimits {
    /// `MESSAGE_BOX_RETENTION_DAYS`: `expires_at` of new messages; `None`: never expire.
    pub days: Limit,
    /// `MESSAGE_BOX_RETENTION_CLEANUP_INTERVAL_MS`; `None`: sweep once at start-up only.
    pub cleanup_interval: Option<Duration>,
    /// `MESSAGE_BOX_RETENTION_CLEANUP_BATCH_SIZE`: rows deleted per table per sweep.
    pub cleanup_batch: Limit,
}

/// The live channel (§1.6, §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketLimits {
    /// `MESSAGE_BOX_WEBSOCKET_MAX_BODY_BYTES`: largest Engine.IO payload (`maxHttpBufferSize`).
    pub max_body_bytes: u64,
    /// `MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS`: live sessions per process.
    pub max_connections: Limit,
    /// `MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS_PER_IDENTITY`: authenticated sockets per identity.
    pub max_connections_per_identity: Limit,
    /// `MESSAGE_BOX_WEBSOCKET_MAX_ROOMS_PER_CONNECTION`.
    pub max_rooms_per_connection: Limit,
    /// `MESSAGE_BOX_WEBSOCKET_CONTROL_RATE_LIMIT`: `joinRoom` + `leaveRoom` per socket per 60 s.
    pub control_rate_limit: Limit,
    /// `MESSAGE_BOX_WEBSOCKET_MAX_CONCURRENT_SENDS`: in-flight `sendMessage` per socket.
    pub max_concurrent_sends: Limit,
    /// `MESSAGE_BOX_WEBSOCKET_SEND_RATE_LIMIT`: `sendMessage` events per socket per 60 s.
    pub send_rate_limit: Limit,
    /// `MESSAGE_BOX_WEBSOCKET_MAX_RECIPIENT_CONNECTIONS`: sockets that receive one live push.
    pub max_recipient_connections: Limit,
    /// A socket that has not authenticated within this time is closed (ours).
    pub auth_timeout: Duration,
}

/// Database timeouts (ours: the newer server leaves them to knex's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseLimits {
    /// Establishing one connection.
    pub connect_timeout: Duration,
    /// Waiting for a pooled connection.
    pub acquire_timeout: Duration,
    /// One statement or transaction.
    pub query_timeout: Duration,
}

/// Every resource limit of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    pub profile: Profile,
    pub http: HttpLimits,
    pub messages: MessageLimits,
    pub retention: RetentionLimits,
    pub websocket: WebSocketLimits,
    pub database: DatabaseLimits,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits::for_profile(Profile::Standard)
    }
}

const MIB: u64 = 1024 * 1024;
const MINUTE: Duration = Duration::from_secs(60);

impl ResourceLimits {
    /// The defaults of `profile`, as the newer upstream has them.
    pub fn for_profile(p: Profile) -> ResourceLimits {
        let s = Some;
        ResourceLimits {
            profile: p,
            http: HttpLimits {
                max_body_bytes: p.pick(MIB, 4 * MIB, 16 * MIB),
                max_unauthenticated_body_bytes: 64 * 1024,
                max_response_bytes: s(p.pick(4 * MIB, 8 * MIB, 32 * MIB)),
                max_concurrent_requests: s(p.pick(8, 24, 96)),
                max_connections: s(1000),
                max_connections_per_ip: s(p.pick(64, 256, 1024)),
                request_timeout: Duration::from_millis(60_000),
                headers_timeout: Duration::from_millis(15_000),
                keep_alive_timeout: Duration::from_millis(5_000),
                socket_timeout: Duration::from_millis(60_000),
                max_requests_per_socket: 1000,
                pre_auth_rate: RateLimit { max: 300, window: MINUTE },
                authenticated_rate: RateLimit { max: 1000, window: MINUTE },
                max_json_values: p.pick(65_536, 262_144, 1_048_576),
                rate_limit_keys: 100_000,
            },
            messages: MessageLimits {
                max_message_body_bytes: s(p.pick(256 * 1024, MIB, 4 * MIB)),
                max_recipients: s(p.pick(25, 100, 250)),
                list_default_limit: s(p.pick(250, 1000, 1000)),
                list_max_limit: s(p.pick(500, 1000, 5000)),
                list_max_offset: s(p.pick(25_000, 100_000, 1_000_000)),
                list_max_response_bytes: s(p.pick(4 * MIB, 8 * MIB, 32 * MIB)),
                max_inbox_messages: s(p.pick(5000, 10_000, 100_000)),
                max_inbox_bytes: s(p.pick(256 * MIB, 1024 * MIB, 16 * 1024 * MIB)),
                max_sender_messages: s(p.pick(5000, 10_000, 100_000)),
                max_sender_bytes: s(p.pick(256 * MIB, 1024 * MIB, 16 * 1024 * MIB)),
                max_acknowledgment_ids: s(p.pick(500, 1000, 5000)),
                device_list_default_limit: s(p.pick(50, 100, 500)),
                device_list_max_limit: s(p.pick(100, 100, 1000)),
                device_list_max_offset: s(p.pick(10_000, 100_000, 1_000_000)),
                permission_list_default_limit: s(p.pick(50, 100, 500)),
                permission_list_max_limit: s(p.pick(100, 100, 1000)),
                permission_list_max_offset: s(p.pick(10_000, 100_000, 1_000_000)),
                max_notification_devices: s(p.pick(25, 100, 500)),
            },
            retention: RetentionLimits {
                days: s(p.pick(14, 30, 90)),
                cleanup_interval: Some(Duration::from_millis(900_000)),
                cleanup_batch: s(1000),
            },
            websocket: WebSocketLimits {
                max_body_bytes: MIB,
                max_connections: s(p.pick(250, 1000, 10_000)),
                max_connections_per_identity: s(p.pick(5, 25, 100)),
                max_rooms_per_connection: s(p.pick(32, 128, 512)),
                control_rate_limit: s(p.pick(120, 600, 2400)),
                max_concurrent_sends: s(p.pick(2, 4, 16)),
                send_rate_limit: s(p.pick(60, 300, 1200)),
                max_recipient_connections: s(p.pick(10, 25, 100)),
                auth_timeout: Duration::from_secs(10),
            },
            database: DatabaseLimits {
                connect_timeout: Duration::from_secs(5),
                acquire_timeout: Duration::from_secs(5),
                query_timeout: Duration::from_secs(10),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_as_the_spec_tabulates_them() {
        let standard = ResourceLimits::default();
        assert_eq!(standard.profile, Profile::Standard);
        assert_eq!(standard.messages.max_recipients, Some(100));
        assert_eq!(standard.messages.list_max_response_bytes, Some(8_388_608));
        assert_eq!(standard.http.max_body_bytes, 4_194_304);
        assert_eq!(standard.retention.days, Some(30));
        let small = ResourceLimits::for_profile(Profile::Small);
        assert_eq!(small.messages.max_message_body_bytes, Some(262_144));
        assert_eq!(small.http.max_concurrent_requests, Some(8));
        let high = ResourceLimits::for_profile(Profile::HighThroughput);
        assert_eq!(high.messages.max_inbox_bytes, Some(17_179_869_184));
        assert_eq!(high.websocket.send_rate_limit, Some(1200));
        assert_eq!(high.retention.days, Some(90));
    }
}
