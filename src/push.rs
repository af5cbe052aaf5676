//! Firebase Cloud Messaging for the `notifications` box, as the original sends it: one FCM
//! HTTP v1 message per active device of the recipient, authorised with an OAuth2 token
//! obtained from a service account (RS256 JWT bearer grant) or, without one, from the
//! Google metadata server. Pushes run in the background and never delay a response; a
//! token FCM reports as unregistered or invalid is deactivated. A configuration that cannot
//! work is an [`FcmConfigError`] naming the variable at fault.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::Firebase;
use crate::domain::Notifier;
use crate::metrics::{PushCounters, PushOutcome};
use crate::outbound::{Reply, RequestError, UrlError};
use crate::store::Store;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";
/// Pushes in flight at once; more are dropped with a warning rather than queued without bound.
const MAX_IN_FLIGHT: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(20);

/// The Firebase configuration cannot be used; as the original, the server then refuses to
/// start. Each text starts with the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum FcmConfigError {
    #[error("FIREBASE_PROJECT_ID: required when ENABLE_FIREBASE=true")]
    NoProjectId,
    #[error("{var}: cannot read {}: {source}", .path.display())]
    Read { var: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{var}: invalid JSON: {source}")]
    Json { var: &'static str, source: serde_json::Error },
    #[error("{var}: missing {field}")]
    Missing { var: &'static str, field: &'static str },
    #[error("{var}: {source}")]
    Key { var: &'static str, source: RsaKeyError },
    #[error("FIREBASE_FCM_ENDPOINT: {0}")]
    Endpoint(#[source] UrlError),
}

/// The `private_key` of a service account is unusable. (ring's errors are kept as fields:
/// without its `std` feature they are not `std::error::Error`s.)
#[derive(Debug, thiserror::Error)]
pub enum RsaKeyError {
    #[error("private_key: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("private_key is not a PKCS#8 RSA key: {0}")]
    NotPkcs8Rsa(ring::error::KeyRejected),
}

/// No access token: logged, and the push is dropped.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("signing the OAuth2 assertion failed")]
    Sign(ring::error::Unspecified),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("token endpoint answered HTTP {status}: {body}")]
    Refused { status: u16, body: String },
}

/// Where access tokens come from.
enum Credentials {
    ServiceAccount {
        client_email: String,
        token_uri: String,
        key: Box<ring::signature::RsaKeyPair>,
    },
    /// Google application-default credentials on GCP: the metadata server.
    Metadata {
        url: String,
    },
}

struct Inner {
    store: Store,
    project_id: String,
    endpoint: String,
    credentials: Credentials,
    token: Mutex<Option<(String, Instant)>>,
    in_flight: Semaphore,
    /// Outcomes per device, for the metrics.
    outcomes: Arc<PushCounters>,
    /// `MESSAGE_BOX_MAX_NOTIFICATION_DEVICES`: the recipient's newest active devices notified
    /// (`None`: every active device the store lists).
    max_devices: Option<usize>,
}

/// The FCM sender; cheap to clone.
#[derive(Clone)]
pub struct Fcm(Arc<Inner>);

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a PKCS#8 PEM RSA key (the `private_key` of a service account).
fn rsa_key(pem: &str) -> Result<ring::signature::RsaKeyPair, RsaKeyError> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(RsaKeyError::Base64)?;
    ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(RsaKeyError::NotPkcs8Rsa)
}

/// Reads the service-account file named by `var`.
fn read_account(var: &'static str, path: PathBuf) -> Result<(&'static str, String), FcmConfigError> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((var, text)),
        Err(source) => Err(FcmConfigError::Read { var, path, source }),
    }
}

impl Fcm {
    /// Builds the sender from the configuration; errors name what is missing, as the
    /// original fails its startup on them.
    pub fn from_config(cfg: &Firebase, store: Store, outcomes: Arc<PushCounters>) -> Result<Fcm, FcmConfigError> {
        let project_id = cfg.project_id.clone().ok_or(FcmConfigError::NoProjectId)?;
        let account = match (&cfg.service_account_json, &cfg.service_account_path) {
            (Some(json), _) => Some(("FIREBASE_SERVICE_ACCOUNT_JSON", json.clone())),
            (None, Some(path)) => Some(read_account("FIREBASE_SERVICE_ACCOUNT_PATH", path.clone())?),
            (None, None) => match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
                Ok(p) if !p.is_empty() => Some(read_account("GOOGLE_APPLICATION_CREDENTIALS", PathBuf::from(p))?),
                _ => None,
            },
        };
        let credentials = match account {
            Some((var, text)) => {
                let v: Value = serde_json::from_str(&text).map_err(|source| FcmConfigError::Json { var, source })?;
                let field = |field: &'static str| {
                    v.get(field)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or(FcmConfigError::Missing { var, field })
                };
                field("project_id")?;
                Credentials::ServiceAccount {
                    client_email: field("client_email")?,
                    token_uri: v.get("token_uri").and_then(Value::as_str).unwrap_or(DEFAULT_TOKEN_URI).to_string(),
                    key: Box::new(
                        rsa_key(&field("private_key")?).map_err(|source| FcmConfigError::Key { var, source })?,
                    ),
                }
            }
            None => Credentials::Metadata { url: METADATA_TOKEN_URL.to_string() },
        };
        let endpoint = cfg.fcm_endpoint.clone().unwrap_or_else(|| "https://fcm.googleapis.com".into());
        crate::outbound::validate_url(&endpoint).map_err(FcmConfigError::Endpoint)?;
        Ok(Fcm(Arc::new(Inner {
            store,
            project_id,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            credentials,
            token: Mutex::new(None),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            outcomes,
            max_devices: cfg.max_devices,
        })))
    }

    pub fn describe(&self) -> String {
        match &self.0.credentials {
            Credentials::ServiceAccount { client_email, .. } => format!("FCM as {client_email}"),
            Credentials::Metadata { .. } => "FCM with application-default credentials".into(),
        }
    }

    /// A valid access token, refreshed a minute before it expires.
    async fn access_token(&self) -> Result<String, TokenError> {
        if let Some((t, until)) = self.0.token.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let (token, expires_in) = match &self.0.credentials {
            Credentials::ServiceAccount { client_email, token_uri, key } => {
                let now = crate::store::now();
                let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
                let claims = b64url(
                    json!({"iss": client_email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600})
                        .to_string()
                        .as_bytes(),
                );
                let signing_input = format!("{header}.{claims}");
                let mut sig = vec![0u8; key.public().modulus_len()];
                key.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .map_err(TokenError::Sign)?;
                let assertion = format!("{signing_input}.{}", b64url(&sig));
                let form: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                    .append_pair("assertion", &assertion)
                    .finish();
                let r = crate::outbound::request(
                    "POST",
                    token_uri,
                    &[("content-type", "application/x-www-form-urlencoded")],
                    form.into_bytes(),
                    TIMEOUT,
                )
                .await?;
                parse_token(r)?
            }
            Credentials::Metadata { url } => {
                let r = crate::outbound::request(
                    "GET",
                    &format!("{url}?scopes={SCOPE}"),
                    &[("metadata-flavor", "Google")],
                    Vec::new(),
                    TIMEOUT,
                )
                .await?;
                parse_token(r)?
            }
        };
        let until = Instant::now() + Duration::from_secs(expires_in.saturating_sub(60).max(1));
        *self.0.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), until));
        Ok(token)
    }

    /// Sends one notification to every active device of `recipient`.
    pub async fn push(&self, recipient: &str, message_id: &str) {
        let devices = match self.0.store.active_devices(recipient).await {
            Ok(d) => d,
            Err(e) => {
                self.0.outcomes.count(PushOutcome::Error);
                return tracing::warn!(error = %e, "push: listing devices failed");
            }
        };
        if devices.is_empty() {
            return;
        }
        // Newest first (the store's order): a recipient with many devices gets the cap's worth.
        let mut devices = devices;
        if let Some(max) = self.0.max_devices {
            devices.truncate(max);
        }
        let token = match self.access_token().await {
            Ok(t) => t,
            Err(e) => {
                self.0.outcomes.count(PushOutcome::Error);
                return tracing::warn!(error = %e, "push: no FCM access token");
            }
        };
        let url = format!("{}/v1/projects/{}/messages:send", self.0.endpoint, self.0.project_id);
        let auth = format!("Bearer {token}");
        // All devices at once, as the original does.
        let sends = devices.iter().map(|d| {
            let body = json!({"message": payload(&d.fcm_token, message_id)}).to_string();
            let (url, auth) = (&url, &auth);
            async move {
                let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
                match crate::outbound::request("POST", url, &headers, body.into_bytes(), TIMEOUT).await {
                    Ok(r) if (200..300).contains(&r.status) => (true, false),
                    Ok(r) => {
                        let dead = is_dead_token(&r.json());
                        tracing::warn!(
                            status = r.status,
                            device = d.id,
                            deactivate = dead,
                            "push: FCM refused the message"
                        );
                        (false, dead)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, device = d.id, "push: FCM unreachable");
                        (false, false)
                    }
                }
            }
        });
        let results = futures_util::future::join_all(sends).await;
        for (d, (ok, deactivate)) in devices.iter().zip(results) {
            self.0.outcomes.count(match (ok, deactivate) {
                (true, _) => PushOutcome::Sent,
                (false, true) => PushOutcome::Deactivated,
                (false, false) => PushOutcome::Failed,
            });
            if ok || deactivate {
                if let Err(e) = self.0.store.record_push(&d.fcm_token, ok, deactivate).await {
                    tracing::warn!(error = %e, "push: recording the result failed");
                }
            }
        }
    }
}

fn parse_token(r: Reply) -> Result<(String, u64), TokenError> {
    let v = r.json();
    match v.get("access_token").and_then(Value::as_str) {
        Some(t) if (200..300).contains(&r.status) => {
            Ok((t.to_string(), v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600)))
        }
        _ => Err(TokenError::Refused { status: r.status, body: String::from_utf8_lossy(&r.body).into_owned() }),
    }
}

/// The message the original builds (spec ts-server.md §7).
pub fn payload(token: &str, message_id: &str) -> Value {
    json!({
        "token": token,
        "notification": {"title": "New Message", "body": message_id},
        "android": {"priority": "high", "data": {"messageId": message_id, "originator": "unknown"}},
        "apns": {
            "headers": {"apns-push-type": "alert", "apns-priority": "10"},
            "payload": {
                "aps": {"mutable-content": 1, "alert": {"title": "New Message", "body": message_id}},
                "messageId": message_id,
                "originator": "unknown"
            }
        }
    })
}

/// FCM's answer for a token that will never work again: `UNREGISTERED`, or an invalid
/// registration token (`INVALID_ARGUMENT` naming the token).
fn is_dead_token(err: &Value) -> bool {
    let e = &err["error"];
    let codes: Vec<&str> =
        e["details"].as_array().map(|d| d.iter().filter_map(|x| x["errorCode"].as_str()).collect()).unwrap_or_default();
    codes.contains(&"UNREGISTERED")
        || e["status"] == "NOT_FOUND"
        || (codes.contains(&"INVALID_ARGUMENT") || e["status"] == "INVALID_ARGUMENT")
            && e["message"].as_str().is_some_and(|m| m.to_ascii_lowercase().contains("registration token"))
}

impl Notifier for Fcm {
    fn notify(&self, recipient: &str, message_id: &str) {
        let Ok(permit) = self.0.in_flight.try_acquire() else {
            self.0.outcomes.count(PushOutcome::Dropped);
            return tracing::warn!(recipient, "push dropped: too many notifications in flight");
        };
        permit.forget();
        let (me, recipient, message_id) = (self.clone(), recipient.to_string(), message_id.to_string());
        tokio::spawn(async move {
            me.push(&recipient, &message_id).await;
            me.0.in_flight.add_permits(1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_tokens() {
        let unregistered = json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
        assert!(is_dead_token(&unregistered));
        let invalid = json!({"error": {"code": 400, "message": "The registration token is not a valid FCM registration token", "status": "INVALID_ARGUMENT",
            "details": [{"errorCode": "INVALID_ARGUMENT"}]}});
        assert!(is_dead_token(&invalid));
        let quota = json!({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}});
        assert!(!is_dead_token(&quota));
        let other_invalid =
            json!({"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}});
        assert!(!is_dead_token(&other_invalid));
    }

    #[test]
    fn token_answers() {
        let ok = Reply {
            status: 200,
            headers: Vec::new(),
            body: br#"{"access_token":"t","expires_in":60}"#.to_vec().into(),
        };
        assert_eq!(parse_token(ok).unwrap(), ("t".to_string(), 60));
        let refused = Reply { status: 401, headers: Vec::new(), body: br#"{"error":"invalid_grant"}"#.to_vec().into() };
        let e = parse_token(refused).unwrap_err();
        assert!(matches!(e, TokenError::Refused { status: 401, .. }));
        assert_eq!(e.to_string(), r#"token endpoint answered HTTP 401: {"error":"invalid_grant"}"#);
    }

    #[test]
    fn config_errors_name_the_variable() {
        let read = FcmConfigError::Read {
            var: "FIREBASE_SERVICE_ACCOUNT_PATH",
            path: "/nonexistent/sa.json".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(read.to_string().starts_with("FIREBASE_SERVICE_ACCOUNT_PATH: cannot read /nonexistent/sa.json: "));
        let missing = FcmConfigError::Missing { var: "FIREBASE_SERVICE_ACCOUNT_JSON", field: "client_email" };
        assert_eq!(missing.to_string(), "FIREBASE_SERVICE_ACCOUNT_JSON: missing client_email");
        let key =
            FcmConfigError::Key { var: "FIREBASE_SERVICE_ACCOUNT_JSON", source: rsa_key("not base64!").unwrap_err() };
        assert!(key.to_string().starts_with("FIREBASE_SERVICE_ACCOUNT_JSON: private_key: "), "{key}");
        let endpoint = FcmConfigError::Endpoint(crate::outbound::validate_url("ftp://x").unwrap_err());
        assert_eq!(endpoint.to_string(), "FIREBASE_FCM_ENDPOINT: expected an http:// or https:// URL, got ftp://x");
    }

    #[test]
    fn payload_shape() {
        let p = payload("tok", "m1");
        assert_eq!(p["apns"]["payload"]["aps"]["mutable-content"], 1);
        assert_eq!(p["android"]["data"]["originator"], "unknown");
        assert_eq!(p["notification"]["body"], "m1");
    }
}
