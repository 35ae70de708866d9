//! Who may do what: bearer tokens, each with a role.
//!
//! A server with no tokens lets every request through. With tokens, every route but
//! the health probes and the console's page needs `Authorization: Bearer <token>`:
//! no token or an unknown one is `401 unauthorized`, and a token whose role is below
//! the route's is `403 forbidden`, which names the role needed.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a token may do; each role may do what the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every read: streams, partitions (and so replication: a follower needs only
    /// this on its leader), groups, dead letters, metrics.
    Read,
    /// Reads and appends.
    Write,
    /// Everything, including what changes consumers' positions: group reset, pause
    /// and resume, dead-letter retry and skip.
    Admin,
}

impl Role {
    /// The role's name: `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokensError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(TokensError(format!(
                "unknown role {other:?}: expected read, write or admin"
            ))),
        }
    }
}

/// A list of tokens that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokensError(String);

/// The tokens a server accepts, each with its role. Empty: no token is needed.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<(Box<[u8]>, Role)>>);

impl Tokens {
    /// No tokens: the server is open.
    pub fn none() -> Self {
        Tokens::default()
    }

    /// These tokens and `token` with `role`. An empty or blank token is refused: it
    /// would look like protection and be none.
    pub fn with(self, token: impl Into<String>, role: Role) -> Result<Self, TokensError> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(TokensError("a token must not be empty".into()));
        }
        let mut tokens = Arc::unwrap_or_clone(self.0);
        tokens.push((token.into_bytes().into_boxed_slice(), role));
        Ok(Tokens(Arc::new(tokens)))
    }

    /// Reads tokens written one per line as `ROLE TOKEN` (or `ROLE:TOKEN`, or several
    /// of those separated by commas, as an environment variable holds them). Blank
    /// lines and lines starting with `#` are skipped.
    ///
    /// ```
    /// use annals_server::{Role, Tokens};
    /// let tokens = Tokens::parse("# the dashboard\nread 3f9a\nadmin:77c1,write:d00d")?;
    /// assert_eq!(tokens.role_of("d00d"), Some(Role::Write));
    /// assert_eq!(tokens.role_of("nope"), None);
    /// # Ok::<(), annals_server::TokensError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut tokens = Tokens::none();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for entry in entries {
            let Some((role, token)) = entry.split_once([' ', ':']) else {
                return Err(TokensError(format!(
                    "expected ROLE TOKEN or ROLE:TOKEN, found an entry of {} characters",
                    entry.len()
                )));
            };
            tokens = tokens.with(token.trim(), role.trim().parse()?)?;
        }
        Ok(tokens)
    }

    /// These tokens and `other`'s.
    pub fn merge(self, other: Tokens) -> Self {
        let mut tokens = Arc::unwrap_or_clone(self.0);
        tokens.extend(other.0.iter().cloned());
        Tokens(Arc::new(tokens))
    }

    /// Whether the server is open (no tokens).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The role of `presented`, if it is one of the tokens. Every token is compared,
    /// each without stopping at the first differing byte, so the time taken does not
    /// tell how much of a guess was right.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.0.iter().fold(None, |found, (token, role)| {
            let same = constant_time_eq(presented.as_bytes(), token);
            found.or(same.then_some(*role))
        })
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<Role> = self.0.iter().map(|(_, role)| *role).collect();
        f.debug_struct("Tokens").field("roles", &roles).finish_non_exhaustive()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: lets the request through if its token's role is at least `needed`.
pub(crate) async fn require(
    State((tokens, needed)): State<(Tokens, Role)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // A server without tokens lets everyone do everything.
    let mut role = Role::Admin;
    if !tokens.is_empty() {
        let presented = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        role = match presented.and_then(|presented| tokens.role_of(presented)) {
            None => return Err(ApiError::unauthorized()),
            Some(role) if role < needed => return Err(ApiError::forbidden(needed, role)),
            Some(role) => role,
        };
    }
    // The route may ask what the caller may do (`GET /v1/whoami`).
    request.extensions_mut().insert(role);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        for role in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn token_lists_refuse_what_they_cannot_read() {
        assert!(Tokens::parse("admin").is_err(), "a line without a token");
        assert!(Tokens::parse("owner s3cret").is_err(), "an unknown role");
        assert!(Tokens::parse("read:   ").is_err(), "an empty token");
        assert!(Tokens::parse("\n# nothing\n").expect("parse").is_empty());
        let error = Tokens::parse("reader-s3cret").expect_err("no separator").to_string();
        assert!(!error.contains("s3cret"), "the error shows the token: {error}");
    }

    #[test]
    fn the_first_matching_token_decides_and_others_do_not() {
        let tokens = Tokens::none()
            .with("aaaa", Role::Read)
            .and_then(|t| t.with("bbbb", Role::Admin))
            .expect("tokens");
        assert_eq!(tokens.role_of("aaaa"), Some(Role::Read));
        assert_eq!(tokens.role_of("bbbb"), Some(Role::Admin));
        assert_eq!(tokens.role_of("aaa"), None);
        assert_eq!(tokens.role_of(""), None);
        assert!(!format!("{tokens:?}").contains("aaaa"));
    }
}
