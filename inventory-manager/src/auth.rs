//! Who may call which RPC: the bearer token in a call's `authorization` metadata, looked up by digest and
//! trusted for at most [`TOKEN_CACHE_TTL`] (so a revoked token stops working within that time, with one
//! indexed read per token per instance and interval), or under mutual TLS a verified client certificate,
//! which is a service's credential. Health and reflection are not behind it.

use std::time::Duration;

use ordermesh_config::AuthMode;
use ordermesh_credentials::{LookupCache, Secret};
use sqlx::PgPool;
use tonic::Request;

use crate::{
    error::InventoryError,
    tokens::{self, Role, TokenRecord},
};

/// How long a token lookup (found or not) is trusted: the bound on how late a revocation takes effect.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_millis(500);
/// Lookups kept at most (a flood of made-up tokens cannot grow the cache beyond it).
const CACHE_CAPACITY: usize = 10_000;
/// The longest token accepted for a lookup (generated ones are 45 characters).
const MAX_TOKEN_CHARS: usize = 200;

/// The token gate of inventory's RPCs.
#[derive(Debug)]
pub struct Gate {
    mode: AuthMode,
    pool: PgPool,
    cache: LookupCache<TokenRecord>,
}

impl Gate {
    /// A gate over the tokens in `pool`; with `mode` off, every call passes.
    pub fn new(mode: AuthMode, pool: PgPool) -> Self {
        Self { mode, pool, cache: LookupCache::new(TOKEN_CACHE_TTL, CACHE_CAPACITY) }
    }

    /// Passes a call whose token has at least the role `needs`: `UNAUTHENTICATED` without a live token,
    /// `PERMISSION_DENIED` with one of too small a role, `UNAVAILABLE` when tokens cannot be read now.
    pub async fn check<T>(&self, request: &Request<T>, needs: Role) -> Result<(), InventoryError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        // Under mutual TLS, a client certificate the handshake verified against INVENTORY_TLS_CLIENT_CA_FILE
        // is a service's credential; a token, when one is presented too, decides instead.
        let certified = request.peer_certs().is_some_and(|certs| !certs.is_empty());
        if certified && request.metadata().get("authorization").is_none() {
            return match needs {
                Role::Service => Ok(()),
                Role::Operator => Err(InventoryError::PermissionDenied(
                    "a service's certificate may not make this call; it needs an operator token".into(),
                )),
            };
        }
        let token = presented(request)?;
        let digest = token.digest();
        let record = match self.cache.get(&digest) {
            Some(found) => found,
            None => {
                let found = tokens::lookup(&self.pool, &digest).await.map_err(InventoryError::from)?;
                self.cache.put(digest, found.clone());
                found
            }
        };
        let record = record.ok_or_else(|| InventoryError::Unauthenticated("unknown or revoked token".into()))?;
        if record.role < needs {
            return Err(InventoryError::PermissionDenied(format!(
                "a {} token may not make this call; it needs an {} token",
                record.role.as_str(),
                needs.as_str()
            )));
        }
        Ok(())
    }
}

/// The token of `authorization: Bearer <token>`.
fn presented<T>(request: &Request<T>) -> Result<Secret, InventoryError> {
    let missing = || InventoryError::Unauthenticated("this call needs `authorization: Bearer <token>` metadata".into());
    let value = request.metadata().get("authorization").ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| missing())?.trim();
    let (scheme, token) = text.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Err(missing());
    }
    Ok(Secret::new(token))
}
