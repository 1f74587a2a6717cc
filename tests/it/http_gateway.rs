//! The source client behind a gateway (LGSP) that wants its own OAuth2 token, with the source's token
//! moved to another header; a 401 makes the client take a new token and repeat the call once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tthc_sync::config::Settings;
use tthc_sync::http::RetryPolicy;
use tthc_sync::source::client::SourceClient;

#[derive(Default)]
struct Seen {
    gateway_tokens: AtomicUsize,
    source_tokens: AtomicUsize,
    searches: AtomicUsize,
}

async fn gateway_token(State(seen): State<Arc<Seen>>) -> impl IntoResponse {
    seen.gateway_tokens.fetch_add(1, Ordering::SeqCst);
    axum::Json(serde_json::json!({"access_token": "gw-token", "expires_in": 300}))
}

async fn source_token(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> impl IntoResponse {
    if headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        != Some("Bearer gw-token")
    {
        return (StatusCode::FORBIDDEN, "gateway token missing").into_response();
    }
    let issued = seen.source_tokens.fetch_add(1, Ordering::SeqCst);
    axum::Json(serde_json::json!({"access_token": format!("src-{issued}"), "expires_in": 300}))
        .into_response()
}

async fn search(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> impl IntoResponse {
    let gateway = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    let source = headers
        .get("x-access-token")
        .and_then(|value| value.to_str().ok());
    if gateway != Some("Bearer gw-token") {
        return (StatusCode::FORBIDDEN, "gateway token missing").into_response();
    }
    let call = seen.searches.fetch_add(1, Ordering::SeqCst);
    // The first source token is treated as expired.
    if call == 0 || source != Some("Bearer src-1") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(serde_json::json!({
        "content": [{"id": "d1", "updatedDate": "2024-01-15T08:30:00.000+0700"}],
        "number": 0, "size": 500, "totalElements": 1, "totalPages": 1, "last": true
    }))
    .into_response()
}

#[tokio::test]
async fn the_gateway_token_and_the_source_token_travel_in_their_own_headers() {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/token", post(gateway_token))
        .route("/oauth/token", post(source_token))
        .route("/pa/dossier/search", get(search))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let settings = Settings::from_toml(&format!(
        r#"
[source]
base_url = "http://{address}"
client_id = "c"
client_secret = "s"
auth_header = "X-Access-Token"
[source.gateway]
token_url = "http://{address}/token"
client_id = "g"
client_secret = "gs"
[portal]
base_url = "http://{address}"
dstcode = "D"
username = "u"
password = "p"
madonvi = "000.00.00.H60"
"#
    ))
    .unwrap();
    let retry = RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_times: 1,
    };
    let client = SourceClient::new(&settings.source, retry).unwrap();
    let page = client
        .search(jiff::Timestamp::UNIX_EPOCH, 0, 500)
        .await
        .expect("the search goes through the gateway");
    assert_eq!(page.content.len(), 1);
    assert_eq!(
        seen.source_tokens.load(Ordering::SeqCst),
        2,
        "a 401 takes a new source token"
    );
    assert_eq!(
        seen.gateway_tokens.load(Ordering::SeqCst),
        2,
        "the gateway token is renewed with it"
    );
    assert_eq!(
        seen.searches.load(Ordering::SeqCst),
        2,
        "the call is repeated once"
    );
}
