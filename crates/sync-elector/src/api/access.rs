//! Access: with `--token-file`, every lock request must carry `Authorization: Bearer <token>`;
//! anything else is `401 unauthorized` and changes nothing. Health and metrics stay open.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, App};

/// Lets a request through when no token is configured or it carries the right one.
pub async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match offered {
        Some(offered) if same(offered.trim().as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => unauthorized("the bearer token is wrong"),
        None => unauthorized("this elector requires a bearer token"),
    }
}

fn unauthorized(why: &str) -> Response {
    let mut response = ApiError::unauthorized(format!(
        "{why}: send Authorization: Bearer <token> with the token in the elector's --token-file \
         (sync-client reads it from the file named by SYNC_ELECTOR_TOKEN_FILE)"
    ))
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Compares in time that depends only on the lengths, so the answer's timing does not tell how
/// much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
    }
}
