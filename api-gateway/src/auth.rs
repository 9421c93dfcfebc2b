//! Who may call: the API-key gate in front of every route but health, metrics and the documentation.
//!
//! A key is looked up by its SHA-256 digest and the answer (found or not) is kept for at most
//! [`KEY_CACHE_TTL`]: a revoked key stops working on every gateway instance within that time, with one
//! indexed read per key per instance and interval. Each key's request rate is held by its own GCRA
//! limiter (`governor`).

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
};
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use ordermesh_credentials::{LookupCache, Secret};
use ordermesh_messages::Channel;
use sqlx::PgPool;

use crate::{
    config::AuthMode,
    error::ApiError,
    keys::{self, ApiKey, KeyRecord, Role},
    sessions,
};

/// How long a key lookup (found or not) is trusted: the bound on how late a revocation takes effect.
pub const KEY_CACHE_TTL: Duration = Duration::from_millis(500);
/// The request header that carries a key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The same, as documented.
pub const API_KEY_HEADER_NAME: &str = "X-API-Key";
/// The dashboard's session cookie: a random session id (never the key), sent by the browser (HttpOnly,
/// SameSite=Strict, Secure over HTTPS, expiring with the session).
pub const SESSION_COOKIE: &str = "ordermesh_session";
/// Lookups kept at most; beyond it, expired ones are dropped, then all (a flood of made-up keys).
const CACHE_CAPACITY: usize = 10_000;
/// The longest key accepted for a lookup (real ones are 44 characters).
const MAX_KEY_CHARS: usize = 200;

/// Who is calling, as the handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id; `None` with authentication off.
    pub key_id: Option<String>,
    /// What it may do.
    pub role: Role,
    /// The channel its orders record, and the only one whose orders a shopper key may read.
    pub channel: Channel,
}

impl Caller {
    /// Anyone, with authentication off: everything allowed, orders recorded as `direct`.
    pub fn anonymous() -> Self {
        Self { key_id: None, role: Role::Operator, channel: Channel::direct() }
    }

    /// Whether this caller may see an order of `channel`.
    pub fn may_see(&self, channel: &str) -> bool {
        self.role == Role::Operator || self.channel.as_str() == channel
    }
}

/// The key store as the gate uses it: lookups with a short cache, and one rate limiter per key.
pub struct Auth {
    mode: AuthMode,
    pool: Option<PgPool>,
    default_rate: NonZeroU32,
    cache: LookupCache<KeyRecord>,
    /// Dashboard sessions by digest, each naming its live key; trusted as long as a key lookup.
    sessions: LookupCache<KeyRecord>,
    session_lifetime: Duration,
    /// Whether the gateway serves HTTPS itself (the session cookie is then `Secure`).
    over_tls: bool,
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("mode", &self.mode).field("default_rate", &self.default_rate).finish()
    }
}

impl Auth {
    /// A gate; `pool` is the gateway's database (needed when `mode` is required); a dashboard session lasts
    /// `session_lifetime`.
    pub fn new(mode: AuthMode, pool: Option<PgPool>, default_rate: u32, session_lifetime: Duration) -> Self {
        Self {
            mode,
            pool,
            default_rate: NonZeroU32::new(default_rate).unwrap_or(NonZeroU32::MIN),
            cache: LookupCache::new(KEY_CACHE_TTL, CACHE_CAPACITY),
            sessions: LookupCache::new(KEY_CACHE_TTL, CACHE_CAPACITY),
            session_lifetime,
            over_tls: false,
            limiters: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// The same gate, told whether the gateway serves HTTPS itself.
    pub fn over_tls(mut self, over_tls: bool) -> Self {
        self.over_tls = over_tls;
        self
    }

    /// Whether keys are checked.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The live key behind a credential, from the cache if looked up within [`KEY_CACHE_TTL`].
    async fn lookup(&self, credential: &Credential) -> Result<Option<KeyRecord>, ApiError> {
        let (cache, digest) = match credential {
            Credential::Key(key) => (&self.cache, key.digest()),
            Credential::Session(session) => (&self.sessions, session.digest()),
        };
        if let Some(record) = cache.get(&digest) {
            return Ok(record);
        }
        let Some(pool) = &self.pool else { return Ok(None) };
        let found = match credential {
            Credential::Key(_) => keys::lookup(pool, &digest).await,
            Credential::Session(_) => keys::lookup_by_session(pool, &digest).await,
        };
        let record = found.map_err(|e| {
            tracing::warn!(error = %e, "API key lookup failed");
            ApiError::Unavailable("API keys cannot be checked right now; retry later".into())
        })?;
        cache.put(digest, record.clone());
        Ok(record)
    }

    /// Takes one request from the key's allowance; the error says how many seconds until the next one.
    fn admit(&self, record: &KeyRecord) -> Result<(), ApiError> {
        let limiter = {
            let mut limiters = self.limiters.lock().expect("rate limiter lock");
            limiters
                .entry(record.key_id.clone())
                .or_insert_with(|| {
                    let rate = record.rate_per_second.and_then(NonZeroU32::new).unwrap_or(self.default_rate);
                    Arc::new(RateLimiter::direct(Quota::per_second(rate)))
                })
                .clone()
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Whole seconds, rounded up, and never 0: `Retry-After: 0` would invite an immediate retry.
            ApiError::RateLimited((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
        })
    }

    /// The caller behind a presented credential, if it may use a route that needs `needs`.
    pub async fn authorize(&self, credential: Option<Credential>, needs: Role) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(Caller::anonymous());
        }
        let credential = credential
            .ok_or_else(|| ApiError::Unauthorized("this route needs an API key in the X-API-Key header".into()))?;
        let record = self.lookup(&credential).await?.ok_or_else(|| {
            ApiError::Unauthorized(match credential {
                Credential::Key(_) => "unknown or revoked API key".into(),
                Credential::Session(_) => "the dashboard session ended; sign in again".into(),
            })
        })?;
        if record.role < needs {
            return Err(ApiError::Forbidden(format!(
                "a {} key may not use this route; it needs an {} key",
                record.role.as_str(),
                needs.as_str()
            )));
        }
        self.admit(&record)?;
        Ok(Caller { key_id: Some(record.key_id), role: record.role, channel: record.channel })
    }
}

/// What a request presents: an API key, or a dashboard session.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The `X-API-Key` header.
    Key(ApiKey),
    /// The dashboard's session cookie.
    Session(Secret),
}

/// The credential a request presents: its `X-API-Key` header, or (for the operators' reads only, and only on
/// GET, so a forged form elsewhere cannot use it) the dashboard's session cookie.
fn presented(headers: &HeaderMap, method: &Method, cookie_allowed: bool) -> Result<Option<Credential>, ApiError> {
    if let Some(value) = headers.get(API_KEY_HEADER) {
        let text = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_CHARS)
            .ok_or_else(|| ApiError::Unauthorized("the X-API-Key header is not a key".into()))?;
        return Ok(Some(Credential::Key(ApiKey::new(text))));
    }
    if cookie_allowed && (method == Method::GET || method == Method::HEAD) {
        return Ok(session_cookie(headers).map(Credential::Session));
    }
    Ok(None)
}

fn session_cookie(headers: &HeaderMap) -> Option<Secret> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty() && value.len() <= MAX_KEY_CHARS)
        .map(|(_, value)| Secret::new(value))
}

/// What a gated group of routes needs.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The key store.
    pub auth: Arc<Auth>,
    /// The least role that may pass.
    pub needs: Role,
}

/// The gate itself: 401 without a known key, 403 for a key of too small a role, 429 beyond its rate;
/// otherwise the request goes on with its [`Caller`].
pub async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let cookie_allowed = gate.needs == Role::Operator;
    let caller = match presented(request.headers(), request.method(), cookie_allowed) {
        Ok(credential) => gate.auth.authorize(credential, gate.needs).await,
        Err(e) => Err(e),
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        // A person opening the dashboard gets a sign-in page instead of JSON.
        Err(ApiError::Unauthorized(_)) if request.uri().path() == "/dashboard" && wants_html(request.headers()) => {
            sign_in_page(StatusCode::UNAUTHORIZED, "")
        }
        Err(e) => e.into_response(),
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

fn sign_in_page(status: StatusCode, message: &str) -> Response {
    let page = SIGN_IN_PAGE.replace("{message}", message);
    let mut response = (status, Html(page)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The dashboard's sign-in form.
const SIGN_IN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ordermesh · sign in</title>
<style>body{font:15px system-ui,sans-serif;max-width:28rem;margin:4rem auto;color:#222}
input{width:100%;padding:.5rem;font:inherit;margin:.5rem 0}button{padding:.5rem 1rem;font:inherit}
.error{color:#b00020}</style></head>
<body><h1>ordermesh dashboard</h1>
<p>The dashboard needs an <b>operator</b> API key (<code>cargo run -- keys create --role operator --channel web</code>).</p>
<p class="error">{message}</p>
<form method="post" action="/dashboard/session">
<label>API key <input name="key" type="password" autocomplete="off" required></label>
<button type="submit">Sign in</button></form></body></html>"#;

/// `POST /dashboard/session` (form field `key`): checks an operator key and starts a session (a random id in
/// an HttpOnly, SameSite=Strict cookie that expires with it, Secure when the browser came over HTTPS), then
/// goes to the dashboard. The key itself never goes back to the browser.
pub async fn sign_in(State(auth): State<Arc<Auth>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Form {
        key: String,
    }
    let key = serde_urlencoded::from_bytes::<Form>(&body).ok().map(|f| f.key.trim().to_owned());
    let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= MAX_KEY_CHARS) else {
        return sign_in_page(StatusCode::BAD_REQUEST, "Enter a key.");
    };
    let caller = match auth.authorize(Some(Credential::Key(ApiKey::new(key))), Role::Operator).await {
        Ok(caller) => caller,
        Err(ApiError::Forbidden(_)) => return sign_in_page(StatusCode::FORBIDDEN, "That key is not an operator key."),
        Err(ApiError::Unauthorized(_)) => return sign_in_page(StatusCode::UNAUTHORIZED, "Unknown or revoked key."),
        Err(e) => return e.into_response(),
    };
    let mut response = Redirect::to("/dashboard").into_response();
    // With keys off there is nothing to remember: the dashboard is open.
    let (Some(pool), Some(key_id)) = (&auth.pool, caller.key_id) else { return response };
    let session = match sessions::start(pool, &key_id, auth.session_lifetime).await {
        Ok(session) => session,
        Err(e) => {
            tracing::warn!(error = %e, "starting a dashboard session failed");
            return ApiError::Unavailable("sign-in is not possible right now; retry later".into()).into_response();
        }
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        session.expose(),
        auth.session_lifetime.as_secs(),
        if auth.over_tls || over_https(&headers) { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /dashboard/session/end`: ends the browser's session (at once on this gateway; within
/// [`KEY_CACHE_TTL`] on the others), clears its cookie and goes back to the sign-in page.
pub async fn sign_out(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    if let (Some(session), Some(pool)) = (session_cookie(&headers), &auth.pool) {
        let digest = session.digest();
        if let Err(e) = sessions::end(pool, &digest).await {
            tracing::warn!(error = %e, "ending a dashboard session failed");
            return ApiError::Unavailable("sign-out is not possible right now; retry later".into()).into_response();
        }
        auth.sessions.forget(&digest);
    }
    let mut response = Redirect::to("/dashboard").into_response();
    let cleared = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Whether the browser reached the gateway over HTTPS: a TLS-terminating ingress or proxy in front says so
/// with `X-Forwarded-Proto` (the only thing this decides is the cookie's `Secure` flag).
fn over_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}
