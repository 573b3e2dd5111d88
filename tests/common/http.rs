//! Requests to the real PostgREST 12 that `make test` starts
//! (scripts/with-test-cluster.sh) against the integration database.
//!
//! The server exposes schema `http_api` (`db-schemas`), runs
//! `saas.pre_request` as `db-pre-request` and verifies HS256 JWTs signed with
//! the secret in [`SECRET_ENV`]; [`Http::token`] signs them the same way.
//!
//! **Schema cache.** PostgREST reads the database's tables and functions once
//! and serves from that cache. A test creates its objects in `http_api` in
//! one committed fixture, then calls [`Http::wait_until_served`] with one of
//! them: it sends `NOTIFY pgrst, 'reload schema'` and polls `OPTIONS <path>`,
//! which PostgREST answers from the cache alone (404 until the object is in
//! it; a GET on a table would be served before, by SQL, while a POST still
//! gets 404), repeating the NOTIFY now and then in case a reload started
//! before the fixture committed. A reload swaps the
//! whole cache, so every object of that fixture is served from then on. This
//! keeps each test's objects with the test instead of in a fixture that must
//! exist before PostgREST starts.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio_postgres::Client;

use super::ApiError;

/// The base URL of the PostgREST that `make test` started (`http://127.0.0.1:54340`).
pub const URL_ENV: &str = "PG_SAAS_HTTP_URL";
/// Its `jwt-secret` (the string's bytes are the HMAC key).
pub const SECRET_ENV: &str = "PG_SAAS_JWT_SECRET";
/// The schema PostgREST exposes in `make test`.
pub const SCHEMA: &str = "http_api";

/// A client of the real PostgREST.
#[derive(Clone)]
pub struct Http {
    pub base: String,
    secret: Vec<u8>,
    agent: ureq::Agent,
}

/// Signs `claims` as an HS256 JWT with `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

impl Http {
    /// The server `make test` started, or `None` (with a visible message)
    /// when the test runs without one. Like [`super::connect`], a test that
    /// has the URL but cannot reach the server fails instead of skipping.
    pub fn from_env(test: &str) -> Option<Http> {
        let base = std::env::var(URL_ENV).ok().filter(|s| !s.is_empty());
        let secret = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
        let (Some(base), Some(secret)) = (base, secret) else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {URL_ENV} or {SECRET_ENV} is not set; `make test` starts PostgREST for the HTTP tests"
            );
            return None;
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        Some(Http {
            base: base.trim_end_matches('/').to_string(),
            secret: secret.into_bytes(),
            agent,
        })
    }

    /// An HS256 token for `claims`, signed with the server's secret.
    pub fn token(&self, claims: &Value) -> String {
        sign_hs256(&self.secret, claims)
    }

    /// A request to `path` (with its query string), e.g. `/items?id=eq.3`.
    pub fn request(&self, method: &str, path: &str) -> HttpRequest {
        HttpRequest {
            http: self.clone(),
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(&self, path: &str) -> HttpRequest {
        self.request("GET", path)
    }

    pub fn head(&self, path: &str) -> HttpRequest {
        self.request("HEAD", path)
    }

    pub fn post(&self, path: &str, body: &Value) -> HttpRequest {
        self.request("POST", path).json(body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> HttpRequest {
        self.request("PATCH", path).json(body)
    }

    pub fn delete(&self, path: &str) -> HttpRequest {
        self.request("DELETE", path)
    }

    /// Makes PostgREST reload its schema cache and waits (at most 20 s)
    /// until `path` (a table, view or `/rpc/<function>`) is in it: `OPTIONS`
    /// answers something else than 404.
    pub async fn wait_until_served(&self, client: &Client, path: &str) {
        let start = Instant::now();
        for attempt in 0.. {
            if attempt % 20 == 0 {
                client
                    .batch_execute("NOTIFY pgrst, 'reload schema'")
                    .await
                    .expect("NOTIFY pgrst");
            }
            let r = self.request("OPTIONS", path).send().await;
            if r.status != 404 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "PostgREST did not serve {path} within 20 s after NOTIFY pgrst, 'reload schema': {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A request being built; [`HttpRequest::send`] sends it.
pub struct HttpRequest {
    http: Http,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

impl HttpRequest {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// A bearer token for `claims`, signed with the server's secret.
    pub fn claims(self, claims: &Value) -> Self {
        let token = self.http.token(claims);
        self.bearer(&token)
    }

    /// `X-Tenant-Id: <tenant>`.
    pub fn tenant(self, tenant: &str) -> Self {
        self.header("X-Tenant-Id", tenant)
    }

    /// `Prefer: <value>`.
    pub fn prefer(self, value: &str) -> Self {
        self.header("Prefer", value)
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string());
        self.header("Content-Type", "application/json")
    }

    /// Sends it on a blocking thread (the tests' tokio runtime keeps
    /// serving their database connections meanwhile).
    pub async fn send(self) -> HttpResponse {
        tokio::task::spawn_blocking(move || self.send_blocking())
            .await
            .expect("HTTP request thread")
    }

    pub fn send_blocking(self) -> HttpResponse {
        let url = format!("{}{}", self.http.base, self.path);
        let mut req = self.http.agent.request(&self.method, &url);
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        let result = match &self.body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!(
                "{} {url}: no HTTP answer (is the PostgREST of make test running?): {e}",
                self.method
            ),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .flat_map(|name| {
                resp.all(&name)
                    .into_iter()
                    .map(|v| (name.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let body = resp
            .into_string()
            .unwrap_or_else(|e| panic!("{} {url}: reading the body: {e}", self.method));
        HttpResponse {
            method: self.method,
            path: self.path,
            status,
            headers,
            body,
        }
    }
}

/// What PostgREST answered.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Names as received (ureq lower-cases them); one entry per value.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (panics with the body when it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} -> {}: body is not JSON ({e}): {}",
                self.method, self.path, self.status, self.body
            )
        })
    }

    /// The body as a JSON array of rows.
    #[track_caller]
    pub fn rows(&self) -> Vec<Value> {
        match self.json() {
            Value::Array(rows) => rows,
            other => panic!(
                "{} {} -> {}: expected a JSON array, got {other}",
                self.method, self.path, self.status
            ),
        }
    }

    /// PostgREST's error body: `{"code", "message", "details", "hint"}`.
    #[track_caller]
    pub fn error(&self) -> ApiError {
        let v = self.json();
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        ApiError {
            code: s("code").unwrap_or_else(|| panic!("error body without code: {v}")),
            message: s("message").unwrap_or_default(),
            details: s("details"),
            hint: s("hint"),
        }
    }

    /// Panics with the whole response unless the status is `status`.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "{} {}: expected {status}, got {} {}",
            self.method, self.path, self.status, self.body
        );
        self
    }
}
