//! API keys on api-gateway's own database: create (the key is shown once), list, revoke, and look up by
//! digest; plus the `keys` command that operators run through either binary.

use chrono::{DateTime, Utc};
use ordermesh_config::DatabaseSettings;
use ordermesh_db::connect_and_migrate;
use ordermesh_messages::Channel;
use sqlx::{PgPool, migrate::Migrator};

/// api-gateway's migrations, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/gateway");

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Carts, checkout, orders of the key's channel, profiles, the catalogue.
    Shopper,
    /// Everything, including the dashboard and the admin API.
    Operator,
}

impl Role {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shopper => "shopper",
            Self::Operator => "operator",
        }
    }

    /// `shopper` or `operator`.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        match raw {
            "shopper" => Ok(Self::Shopper),
            "operator" => Ok(Self::Operator),
            other => anyhow::bail!("role must be shopper or operator, got {other:?}"),
        }
    }
}

/// An API key as presented by a caller or handed to its owner: a [`Secret`] (its `Debug` never shows it).
pub use ordermesh_credentials::Secret as ApiKey;

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's public prefix (`om_` and 8 hex digits): shown in listings, used to revoke.
    pub key_id: String,
    /// What it may do.
    pub role: Role,
    /// The channel its orders record.
    pub channel: Channel,
    /// Its own request rate, if it has one (else the gateway's default).
    pub rate_per_second: Option<u32>,
    /// A note for operators (who holds the key).
    pub note: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

struct KeyRow {
    key_id: String,
    role: String,
    channel: String,
    rate_per_second: Option<i32>,
    note: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = anyhow::Error;
    fn try_from(r: KeyRow) -> anyhow::Result<Self> {
        Ok(Self {
            key_id: r.key_id,
            role: Role::parse(&r.role)?,
            channel: Channel::parse(r.channel).map_err(|e| anyhow::anyhow!("stored channel: {e}"))?,
            rate_per_second: r.rate_per_second.and_then(|r| u32::try_from(r).ok()),
            note: r.note,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// Makes a key ([`ApiKey::generate`]: a public id `om_…` and 128 random bits). Returns the record and the
/// key, which exists nowhere else from then on.
pub async fn create(
    pool: &PgPool,
    role: Role,
    channel: &Channel,
    rate_per_second: Option<u32>,
    note: &str,
) -> anyhow::Result<(KeyRecord, ApiKey)> {
    anyhow::ensure!(note.chars().count() <= 200, "the note must be at most 200 characters");
    let rate = rate_per_second.map(i32::try_from).transpose().map_err(|_| anyhow::anyhow!("rate is too large"))?;
    anyhow::ensure!(rate.is_none_or(|r| r > 0), "rate must be at least 1 request per second");
    let (key_id, key) = ApiKey::generate("om");
    let digest = key.digest();
    let row = sqlx::query_as!(
        KeyRow,
        "INSERT INTO api_keys (key_id, digest, role, channel, rate_per_second, note)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING key_id, role, channel, rate_per_second, note, created_at, revoked_at",
        key_id,
        digest.as_slice(),
        role.as_str(),
        channel.as_str(),
        rate,
        note,
    )
    .fetch_one(pool)
    .await?;
    Ok((row.try_into()?, key))
}

/// Every key, newest first, revoked ones included.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<KeyRecord>> {
    let rows = sqlx::query_as!(KeyRow, "SELECT key_id, role, channel, rate_per_second, note, created_at, revoked_at FROM api_keys ORDER BY created_at DESC")
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Revokes a key by its id; returns whether a live key was revoked (false: unknown or already revoked).
pub async fn revoke(pool: &PgPool, key_id: &str) -> anyhow::Result<bool> {
    let done = sqlx::query!("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The live key with this digest, if any.
pub async fn lookup(pool: &PgPool, digest: &[u8; 32]) -> Result<Option<KeyRecord>, sqlx::Error> {
    let row = sqlx::query_as!(
        KeyRow,
        "SELECT key_id, role, channel, rate_per_second, note, created_at, revoked_at FROM api_keys WHERE digest = $1 AND revoked_at IS NULL",
        digest.as_slice()
    )
    .fetch_optional(pool)
    .await?;
    // A row the schema's checks let in always converts; one that does not is treated as no key.
    Ok(row.and_then(|r| KeyRecord::try_from(r).ok()))
}

/// The live key behind a live dashboard session with this digest, if any: one statement over the session
/// and its key, so a key revoked ends its sessions with it.
pub async fn lookup_by_session(pool: &PgPool, session_digest: &[u8; 32]) -> Result<Option<KeyRecord>, sqlx::Error> {
    let row = sqlx::query_as!(
        KeyRow,
        "SELECT key_id, role, channel, rate_per_second, note, created_at, revoked_at FROM api_keys
         WHERE key_id = (SELECT key_id FROM dashboard_sessions WHERE digest = $1 AND expires_at > now())
           AND revoked_at IS NULL",
        session_digest.as_slice()
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| KeyRecord::try_from(r).ok()))
}

/// Usage of the `keys` command.
pub const USAGE: &str = "usage: keys create --role shopper|operator --channel NAME [--rate N] [--note TEXT]
       keys list
       keys revoke KEY_ID";

/// Runs `keys …` against the gateway's database and returns what to print. The channel must be one of
/// `channels` (`ORDERMESH_CHANNELS`).
pub async fn command(args: &[String], database: &DatabaseSettings, channels: &[Channel]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["create", rest @ ..] => {
            let (mut role, mut channel, mut rate, mut note) = (None, None, None, String::new());
            let mut rest = rest.iter();
            while let Some(flag) = rest.next() {
                let value = rest.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))?;
                match *flag {
                    "--role" => role = Some(Role::parse(value)?),
                    "--channel" => channel = Some(Channel::parse(*value).map_err(|e| anyhow::anyhow!("{e}"))?),
                    "--rate" => {
                        rate = Some(value.parse::<u32>().map_err(|_| anyhow::anyhow!("--rate must be a whole number"))?)
                    }
                    "--note" => note = (*value).to_owned(),
                    other => anyhow::bail!("unknown option {other}\n{USAGE}"),
                }
            }
            let role = role.ok_or_else(|| anyhow::anyhow!("--role is required\n{USAGE}"))?;
            let channel = channel.ok_or_else(|| anyhow::anyhow!("--channel is required\n{USAGE}"))?;
            anyhow::ensure!(
                channels.contains(&channel),
                "channel {channel} is not configured; ORDERMESH_CHANNELS lists {}",
                channels.iter().map(Channel::as_str).collect::<Vec<_>>().join(", ")
            );
            let pool = connect_and_migrate(database, &MIGRATOR).await?;
            let (record, key) = create(&pool, role, &channel, rate, &note).await?;
            Ok(format!(
                "created {} ({}, channel {}); the key is shown this once, keep it secret:\n{}\n",
                record.key_id,
                record.role.as_str(),
                record.channel,
                key.expose()
            ))
        }
        ["list"] => {
            let pool = connect_and_migrate(database, &MIGRATOR).await?;
            let mut out = format!(
                "{:<12} {:<9} {:<12} {:>6} {:<25} {:<10} note\n",
                "key_id", "role", "channel", "rate", "created", "state"
            );
            for k in list(&pool).await? {
                out.push_str(&format!(
                    "{:<12} {:<9} {:<12} {:>6} {:<25} {:<10} {}\n",
                    k.key_id,
                    k.role.as_str(),
                    k.channel.as_str(),
                    k.rate_per_second.map_or_else(|| "-".into(), |r| r.to_string()),
                    k.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    if k.revoked_at.is_some() { "revoked" } else { "live" },
                    k.note
                ));
            }
            Ok(out)
        }
        ["revoke", key_id] => {
            let pool = connect_and_migrate(database, &MIGRATOR).await?;
            if revoke(&pool, key_id).await? {
                Ok(format!("revoked {key_id}; every gateway refuses it within a second\n"))
            } else {
                anyhow::bail!("no live key {key_id}")
            }
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}
