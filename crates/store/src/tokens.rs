//! API tokens of members.

use sha2::{Digest, Sha256};

use crate::error::SqlContext;
use crate::{check_text, now_ms, random_hex, IssuedToken, Store, StoreError};

/// Every token starts with this.
const PREFIX: &str = "alk_";
/// Random bytes in a token's id (hex: twice as many characters).
const ID_BYTES: usize = 8;
/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;

/// Splits `alk_<id>_<secret>` if it has exactly the issued shape.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    if token.len() != PREFIX.len() + 2 * ID_BYTES + 1 + 2 * SECRET_BYTES {
        return None;
    }
    let (id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (id.len() == 2 * ID_BYTES
        && secret.len() == 2 * SECRET_BYTES
        && lower_hex(id)
        && lower_hex(secret))
    .then_some((id, secret))
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// Issues a token for `member`, valid until `expires_at_ms` (unix
    /// milliseconds; `None` for no expiry). The returned
    /// [`IssuedToken::token`] is the only copy: the store keeps SHA-256 of
    /// its secret.
    pub async fn create_token(
        &self,
        member: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<IssuedToken, StoreError> {
        check_text("member", member)?;
        let id = random_hex(ID_BYTES)?;
        let secret = random_hex(SECRET_BYTES)?;
        let digest = hex::encode(Sha256::digest(secret.as_bytes()));
        sqlx::query(
            "INSERT INTO tokens (id, member, secret_sha256, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(member)
        .bind(&digest)
        .bind(now_ms())
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await
        .ctx("store a token")?;
        Ok(IssuedToken {
            token: format!("{PREFIX}{id}_{secret}"),
            id,
            member: member.to_owned(),
            expires_at_ms,
        })
    }

    /// The member `token` authenticates: `Some` iff it is well formed,
    /// known, not revoked and not expired at `now_ms` (it expires at its
    /// `expires_at_ms`). A malformed token is `Ok(None)`, never an error.
    pub async fn authenticate(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(None);
        };
        let row: Option<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT member, secret_sha256, expires_at_ms, revoked_at_ms FROM tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .ctx("look up a token")?;
        let Some((member, stored, expires_at_ms, revoked_at_ms)) = row else {
            return Ok(None);
        };
        let presented = Sha256::digest(secret.as_bytes());
        let stored = hex::decode(stored).unwrap_or_default();
        let matches = constant_time_eq(&presented, &stored);
        let live = revoked_at_ms.is_none() && expires_at_ms.is_none_or(|at| now_ms < at);
        Ok((matches && live).then_some(member))
    }

    /// Revokes the token with this id. `true` if it was live until now;
    /// `false` if unknown or already revoked.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .ctx("revoke a token")?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        let token = format!("alk_{id}_{secret}");
        assert_eq!(parse_token(&token), Some((id, secret.as_str())));
        assert_eq!(parse_token(&token.to_uppercase()), None);
        assert_eq!(parse_token(&format!("alk_{id}x{secret}")), None);
        assert_eq!(parse_token(&format!("alk_{id}_{secret}0")), None);
        assert_eq!(parse_token(&format!("xlk_{id}_{secret}")), None);
        assert_eq!(
            parse_token(&format!("alk_{}_{}", &id[..15], &secret[..63])),
            None
        );
        assert_eq!(parse_token(""), None);
        assert_eq!(parse_token("alk_"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
