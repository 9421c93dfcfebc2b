//! Access tokens on inventory's own database: create (the token is shown once) or register one an operator
//! made, list, revoke, and look up by digest; plus the `tokens` command that operators run through the
//! inventory-manager binary.

use chrono::{DateTime, Utc};
use ordermesh_config::DatabaseSettings;
use ordermesh_credentials::Secret;
use ordermesh_db::connect_and_migrate;
use sqlx::PgPool;

use crate::startup::MIGRATOR;

/// What a token may do. Ordered: an operator may do everything a service may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The mesh's own calls: reads, reserve, commit, roll back.
    Service,
    /// That and the catalogue's writes (`UpsertProduct`).
    Operator,
}

impl Role {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Operator => "operator",
        }
    }

    /// `service` or `operator`.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        match raw {
            "service" => Ok(Self::Service),
            "operator" => Ok(Self::Operator),
            other => anyhow::bail!("role must be service or operator, got {other:?}"),
        }
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's public prefix (`inv_` and 8 hex digits): shown in listings, used to revoke.
    pub token_id: String,
    /// What it may do.
    pub role: Role,
    /// A note for operators (who holds the token).
    pub note: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

struct TokenRow {
    token_id: String,
    role: String,
    note: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = anyhow::Error;
    fn try_from(r: TokenRow) -> anyhow::Result<Self> {
        Ok(Self {
            token_id: r.token_id,
            role: Role::parse(&r.role)?,
            note: r.note,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// The fewest characters a token registered from a file may have: about 128 bits of randomness in hex.
pub const MIN_REGISTERED_CHARS: usize = 32;

/// Makes a token (a public id `inv_…` and 128 random bits). Returns the record and the token, which exists
/// nowhere else from then on.
pub async fn create(pool: &PgPool, role: Role, note: &str) -> anyhow::Result<(TokenRecord, Secret)> {
    let (token_id, token) = Secret::generate("inv");
    let record = insert(pool, &token_id, &token, role, note).await?.ok_or_else(|| anyhow::anyhow!("token exists"))?;
    Ok((record, token))
}

/// Registers a token an operator made (a deployment's secret, given to the services as `INVENTORY_TOKEN_FILE`).
/// Its id is derived from its digest, so registering the same token again changes nothing: returns the
/// record and whether it was new. A token registered before under another role is an error.
pub async fn register(pool: &PgPool, token: &Secret, role: Role, note: &str) -> anyhow::Result<(TokenRecord, bool)> {
    let chars = token.expose().trim().chars().count();
    anyhow::ensure!(
        chars >= MIN_REGISTERED_CHARS,
        "a registered token must have at least {MIN_REGISTERED_CHARS} characters (e.g. `openssl rand -hex 32`), this one has {chars}"
    );
    anyhow::ensure!(
        token.expose().chars().all(|c| c.is_ascii_graphic()),
        "a token must be printable ASCII without spaces"
    );
    let digest = token.digest();
    let token_id = format!("inv_{}", digest[..4].iter().map(|b| format!("{b:02x}")).collect::<String>());
    if let Some(record) = insert(pool, &token_id, token, role, note).await? {
        return Ok((record, true));
    }
    let row = sqlx::query_as!(
        TokenRow,
        "SELECT token_id, role, note, created_at, revoked_at FROM access_tokens WHERE digest = $1",
        digest.as_slice()
    )
    .fetch_one(pool)
    .await?;
    let record = TokenRecord::try_from(row)?;
    anyhow::ensure!(
        record.role == role,
        "this token is already registered as {} with role {}",
        record.token_id,
        record.role.as_str()
    );
    anyhow::ensure!(
        record.revoked_at.is_none(),
        "this token was registered as {} and revoked; make another",
        record.token_id
    );
    Ok((record, false))
}

/// Stores a token's digest; `None` when that digest is stored already.
async fn insert(
    pool: &PgPool,
    token_id: &str,
    token: &Secret,
    role: Role,
    note: &str,
) -> anyhow::Result<Option<TokenRecord>> {
    anyhow::ensure!(note.chars().count() <= 200, "the note must be at most 200 characters");
    let digest = token.digest();
    let row = sqlx::query_as!(
        TokenRow,
        "INSERT INTO access_tokens (token_id, digest, role, note) VALUES ($1, $2, $3, $4)
         ON CONFLICT (digest) DO NOTHING RETURNING token_id, role, note, created_at, revoked_at",
        token_id,
        digest.as_slice(),
        role.as_str(),
        note,
    )
    .fetch_optional(pool)
    .await?;
    row.map(TokenRecord::try_from).transpose()
}

/// Every token, newest first, revoked ones included.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<TokenRecord>> {
    let rows = sqlx::query_as!(
        TokenRow,
        "SELECT token_id, role, note, created_at, revoked_at FROM access_tokens ORDER BY created_at DESC"
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Revokes a token by its id; returns whether a live token was revoked (false: unknown or already revoked).
pub async fn revoke(pool: &PgPool, token_id: &str) -> anyhow::Result<bool> {
    let done = sqlx::query!(
        "UPDATE access_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL",
        token_id
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The live token with this digest, if any.
pub async fn lookup(pool: &PgPool, digest: &[u8; 32]) -> Result<Option<TokenRecord>, sqlx::Error> {
    let row = sqlx::query_as!(
        TokenRow,
        "SELECT token_id, role, note, created_at, revoked_at FROM access_tokens WHERE digest = $1 AND revoked_at IS NULL",
        digest.as_slice()
    )
    .fetch_optional(pool)
    .await?;
    // A row the schema's checks let in always converts; one that does not is treated as no token.
    Ok(row.and_then(|r| TokenRecord::try_from(r).ok()))
}

/// Usage of the `tokens` command.
pub const USAGE: &str = "usage: tokens create --role service|operator [--note TEXT]
       tokens register --role service|operator --token-file PATH [--note TEXT]
       tokens list
       tokens revoke TOKEN_ID";

/// Runs `tokens …` against inventory's database and returns what to print.
pub async fn command(args: &[String], database: &DatabaseSettings) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [verb @ ("create" | "register"), rest @ ..] => {
            let (mut role, mut note, mut file) = (None, String::new(), None);
            let mut rest = rest.iter();
            while let Some(flag) = rest.next() {
                let value = rest.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))?;
                match *flag {
                    "--role" => role = Some(Role::parse(value)?),
                    "--note" => note = (*value).to_owned(),
                    "--token-file" if *verb == "register" => file = Some(*value),
                    other => anyhow::bail!("unknown option {other}\n{USAGE}"),
                }
            }
            let role = role.ok_or_else(|| anyhow::anyhow!("--role is required\n{USAGE}"))?;
            if *verb == "create" {
                let pool = connect_and_migrate(database, &MIGRATOR).await?;
                let (record, token) = create(&pool, role, &note).await?;
                return Ok(format!(
                    "created {} ({}); the token is shown this once, keep it secret:\n{}\n",
                    record.token_id,
                    record.role.as_str(),
                    token.expose()
                ));
            }
            let path = file.ok_or_else(|| anyhow::anyhow!("--token-file is required\n{USAGE}"))?;
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
            let pool = connect_and_migrate(database, &MIGRATOR).await?;
            let (record, new) = register(&pool, &Secret::new(text.trim()), role, &note).await?;
            Ok(format!(
                "{} {} ({})\n",
                if new { "registered" } else { "already registered:" },
                record.token_id,
                record.role.as_str()
            ))
        }
        ["list"] => {
            let pool = connect_and_migrate(database, &MIGRATOR).await?;
            let mut out = format!("{:<13} {:<9} {:<25} {:<8} note\n", "token_id", "role", "created", "state");
            for t in list(&pool).await? {
                out.push_str(&format!(
                    "{:<13} {:<9} {:<25} {:<8} {}\n",
                    t.token_id,
                    t.role.as_str(),
                    t.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    if t.revoked_at.is_some() { "revoked" } else { "live" },
                    t.note
                ));
            }
            Ok(out)
        }
        ["revoke", token_id] => {
            let pool = connect_and_migrate(database, &MIGRATOR).await?;
            if revoke(&pool, token_id).await? {
                Ok(format!("revoked {token_id}; every inventory-manager refuses it within a second\n"))
            } else {
                anyhow::bail!("no live token {token_id}")
            }
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}
