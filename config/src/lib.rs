//! Configuration of every ordermesh process: one loader over environment variables (or a map, in
//! tests), the settings several services share, and a URL type whose password can never print.

use std::{fmt, str::FromStr, time::Duration};

pub use ordermesh_credentials::{
    Secret,
    tls::{self, ClientTls},
};

/// A URL that may carry a password: `Debug` and `Display` show it redacted; only [`SecretUrl::expose`]
/// gives the real value, so logging a config (`?config`) cannot leak a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real URL, for the one call that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// Hides the password of a `scheme://user:password@host/...` URL, or of each URL of a comma-separated list
/// (several broker addresses).
pub fn redact(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact).collect::<Vec<_>>().join(",");
    }
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    match (rest.rfind('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
        _ => url.to_owned(),
    }
}

/// Reads one variable by name.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Where configuration values come from: the process environment, or any lookup (a map in tests).
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env")
    }
}

impl Env<'static> {
    /// The process environment.
    pub fn process() -> Self {
        Self { lookup: Box::new(|key| std::env::var(key).ok()) }
    }
}

impl<'a> Env<'a> {
    /// Values from `lookup`.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self { lookup: Box::new(lookup) }
    }

    /// The raw value of `key`, if set.
    pub fn raw(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
    }

    /// `key` parsed as `T`, if set; a bad value is an error naming the variable.
    pub fn get<T: FromStr>(&self, key: &str) -> anyhow::Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        self.raw(key)
            .map(|raw| raw.trim().parse::<T>().map_err(|e| anyhow::anyhow!("{key}={raw:?} is not valid: {e}")))
            .transpose()
    }

    /// `key` parsed as `T`, or `default`.
    pub fn or<T: FromStr>(&self, key: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: fmt::Display,
    {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// `key` as a string, or `default`.
    pub fn string(&self, key: &str, default: &str) -> String {
        self.raw(key).unwrap_or_else(|| default.to_owned())
    }

    /// A secret's value: from the variable `key`, or read from the file that `<key>_FILE` names (the
    /// convention of Docker's and Kubernetes' secrets; one trailing line break is dropped). Both set, or a
    /// file that cannot be read or is empty, is an error naming the variable; the value never appears in it.
    pub fn secret_value(&self, key: &str) -> anyhow::Result<Option<String>> {
        let file_key = format!("{key}_FILE");
        match (self.raw(key), self.raw(&file_key)) {
            (Some(_), Some(_)) => anyhow::bail!("set {key} or {file_key}, not both"),
            (Some(value), None) => Ok(Some(value)),
            (None, None) => Ok(None),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("{file_key}={path:?} cannot be read: {e}"))?;
                let value = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
                anyhow::ensure!(!value.trim().is_empty(), "{file_key}={path:?} is empty");
                Ok(Some(value.to_owned()))
            }
        }
    }

    /// `key` (or `<key>_FILE`, see [`Env::secret_value`]) as a secret URL, or `default`.
    pub fn secret(&self, key: &str, default: &SecretUrl) -> anyhow::Result<SecretUrl> {
        Ok(self.secret_value(key)?.map_or_else(|| default.clone(), SecretUrl::new))
    }

    /// `key` in milliseconds, or `default`.
    pub fn millis(&self, key: &str, default: Duration) -> anyhow::Result<Duration> {
        Ok(self.get::<u64>(key)?.map_or(default, Duration::from_millis))
    }

    /// `key` in seconds, or `default`.
    pub fn secs(&self, key: &str, default: Duration) -> anyhow::Result<Duration> {
        Ok(self.get::<u64>(key)?.map_or(default, Duration::from_secs))
    }
}

/// A configuration read through the one loader: from the process environment in a binary, from a map in
/// tests. A service implements `load`; the two entry points come with it.
pub trait FromEnv: Sized {
    /// Reads every setting from `env`, refusing bad values with a message naming the variable.
    fn load(env: &Env<'_>) -> anyhow::Result<Self>;

    /// Reads the process environment.
    fn from_env() -> anyhow::Result<Self> {
        Self::load(&Env::process())
    }

    /// Reads through `lookup` (a map in tests; no process environment is touched).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        Self::load(&Env::from_fn(lookup))
    }
}

/// How a service reaches its own database.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// PostgreSQL URL; may hold a password.
    pub url: SecretUrl,
    /// Create the database when missing, so a fresh machine needs no manual step.
    pub create: bool,
    /// Pool size.
    pub max_connections: u32,
    /// An idle pooled connection is closed after this long, so a burst does not hold the server's
    /// connections for good.
    pub idle_timeout: Duration,
    /// The server cancels a statement running longer (`statement_timeout`): nothing waits on the database for
    /// ever. The mesh's statements take milliseconds; migrations are exempt.
    pub statement_timeout: Duration,
    /// The server gives up waiting for a lock after this long (`lock_timeout`), so a row held by someone
    /// else (an operator's open transaction) costs a quick "unavailable, retry" instead of a hang.
    pub lock_timeout: Duration,
    /// The server ends a session that sits in an open transaction this long (`idle_in_transaction_session_timeout`):
    /// a stalled process (paused, partitioned) cannot hold its row locks for good.
    pub idle_in_transaction_timeout: Duration,
}

impl DatabaseSettings {
    /// A database at `url` with the defaults: created if missing, 10 connections, 30 s idle timeout, statements
    /// cut after 5 s, lock waits after 2 s, a session idle in a transaction ended after 10 s.
    pub fn new(url: impl Into<SecretUrl>) -> Self {
        Self {
            url: url.into(),
            create: true,
            max_connections: 10,
            idle_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            idle_in_transaction_timeout: Duration::from_secs(10),
        }
    }

    /// Reads `<PREFIX>_DATABASE_URL`, `_CREATE_DATABASE`, `_DB_MAX_CONNECTIONS`, `_DB_IDLE_TIMEOUT_MS`,
    /// `_DB_STATEMENT_TIMEOUT_MS`, `_DB_LOCK_TIMEOUT_MS` and `_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS` over `default`.
    pub fn from_env(env: &Env<'_>, prefix: &str, default: Self) -> anyhow::Result<Self> {
        let settings = Self {
            url: env.secret(&format!("{prefix}_DATABASE_URL"), &default.url)?,
            create: env.or(&format!("{prefix}_CREATE_DATABASE"), default.create)?,
            max_connections: env.or(&format!("{prefix}_DB_MAX_CONNECTIONS"), default.max_connections)?,
            idle_timeout: env.millis(&format!("{prefix}_DB_IDLE_TIMEOUT_MS"), default.idle_timeout)?,
            statement_timeout: env.millis(&format!("{prefix}_DB_STATEMENT_TIMEOUT_MS"), default.statement_timeout)?,
            lock_timeout: env.millis(&format!("{prefix}_DB_LOCK_TIMEOUT_MS"), default.lock_timeout)?,
            idle_in_transaction_timeout: env
                .millis(&format!("{prefix}_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS"), default.idle_in_transaction_timeout)?,
        };
        anyhow::ensure!(settings.max_connections > 0, "{prefix}_DB_MAX_CONNECTIONS must be at least 1");
        for (name, bound) in [
            ("IDLE_TIMEOUT_MS", settings.idle_timeout),
            ("STATEMENT_TIMEOUT_MS", settings.statement_timeout),
            ("LOCK_TIMEOUT_MS", settings.lock_timeout),
            ("IDLE_IN_TRANSACTION_TIMEOUT_MS", settings.idle_in_transaction_timeout),
        ] {
            // Zero means "no bound" to PostgreSQL: the very hang these settings exist to prevent.
            anyhow::ensure!(!bound.is_zero(), "{prefix}_DB_{name} must be at least 1");
        }
        Ok(settings)
    }
}

/// Whether a server asks its callers for a credential (`GATEWAY_AUTH`, `INVENTORY_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every call but health, metrics and the documentation needs a credential: the binaries' default.
    Required,
    /// Anyone may call anything: the all-in-one development mesh's default, which warns at start.
    Off,
}

impl FromStr for AuthMode {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "required" => Ok(Self::Required),
            "off" => Ok(Self::Off),
            other => Err(format!("must be required or off, got {other:?}")),
        }
    }
}

/// The default broker on this machine.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The default inventory-manager.
pub const DEFAULT_INVENTORY_URL: &str = "http://127.0.0.1:50051";

/// What the RabbitMQ workers and the gateway share: the broker, the names, and inventory's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSettings {
    /// RabbitMQ (`AMQP_URL`).
    pub amqp_url: SecretUrl,
    /// Prefix of every queue and exchange name (`ORDERMESH_NAMESPACE`).
    pub namespace: String,
    /// inventory-manager (`INVENTORY_URL`).
    pub inventory_url: String,
    /// The bearer token presented to inventory-manager (`INVENTORY_TOKEN` or `INVENTORY_TOKEN_FILE`), needed
    /// when it runs with `INVENTORY_AUTH=required`: a `service` token is all the mesh's services need.
    pub inventory_token: Option<Secret>,
    /// TLS to inventory-manager, for an `https://` `INVENTORY_URL`: the CA its certificate must chain to
    /// (`INVENTORY_CA_FILE`; else the public web's roots) and this service's own certificate, which an
    /// inventory with mutual TLS asks for (`INVENTORY_CLIENT_CERT_FILE`, `INVENTORY_CLIENT_KEY_FILE`).
    pub inventory_tls: ClientTls,
    /// Deadline of each gRPC call to inventory (`INVENTORY_TIMEOUT_MS`).
    pub inventory_timeout: Duration,
    /// Retries of one message before it is dead-lettered (`AMQP_MAX_RETRIES`).
    pub max_retries: u32,
    /// A message's handling still running after this long is stopped and retried (`AMQP_HANDLER_TIMEOUT_MS`).
    pub handler_timeout: Duration,
    /// The kind of the durable queues (`AMQP_QUEUE_TYPE`: `quorum` or `classic`).
    pub queue_type: QueueType,
    /// Redeliveries of a message that came back unanswered (its consumer crashed or timed out) before a quorum
    /// queue dead-letters it (`AMQP_DELIVERY_LIMIT`, the queues' `x-delivery-limit`).
    pub delivery_limit: u32,
}

/// Times a quorum work queue hands a message out again after it came back unanswered (its consumer crashed
/// or timed out) before the broker dead-letters it, unless configured otherwise: 6 deliveries in all.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

/// Which kind of RabbitMQ queue the durable queues are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Raft-replicated over a cluster's nodes, counting deliveries: what production runs.
    #[default]
    Quorum,
    /// One node's queue, counting no deliveries (the mesh's own retry header still bounds handled failures).
    Classic,
}

impl std::str::FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quorum" => Ok(Self::Quorum),
            "classic" => Ok(Self::Classic),
            other => Err(format!("must be quorum or classic, got {other:?}")),
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quorum => "quorum",
            Self::Classic => "classic",
        })
    }
}

impl Default for SharedSettings {
    fn default() -> Self {
        Self {
            amqp_url: SecretUrl::new(DEFAULT_AMQP_URL),
            namespace: String::new(),
            inventory_url: DEFAULT_INVENTORY_URL.to_owned(),
            inventory_token: None,
            inventory_tls: ClientTls::default(),
            inventory_timeout: Duration::from_secs(2),
            max_retries: 8,
            handler_timeout: Duration::from_secs(30),
            queue_type: QueueType::Quorum,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }
}

impl SharedSettings {
    /// Reads the shared variables.
    pub fn from_env(env: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let settings = Self {
            amqp_url: env.secret("AMQP_URL", &d.amqp_url)?,
            namespace: env.string("ORDERMESH_NAMESPACE", &d.namespace),
            inventory_url: env.string("INVENTORY_URL", &d.inventory_url),
            inventory_token: env.secret_value("INVENTORY_TOKEN")?.map(Secret::new),
            inventory_tls: ClientTls {
                ca: tls::ca_from("INVENTORY_CA_FILE", |k| env.raw(k))?,
                identity: tls::identity_from("INVENTORY_CLIENT", |k| env.raw(k))?,
            },
            inventory_timeout: env.millis("INVENTORY_TIMEOUT_MS", d.inventory_timeout)?,
            max_retries: env.or("AMQP_MAX_RETRIES", d.max_retries)?,
            handler_timeout: env.millis("AMQP_HANDLER_TIMEOUT_MS", d.handler_timeout)?,
            queue_type: env.or("AMQP_QUEUE_TYPE", d.queue_type)?,
            delivery_limit: env.or("AMQP_DELIVERY_LIMIT", d.delivery_limit)?,
        };
        anyhow::ensure!(!settings.inventory_timeout.is_zero(), "INVENTORY_TIMEOUT_MS must be at least 1");
        anyhow::ensure!(!settings.handler_timeout.is_zero(), "AMQP_HANDLER_TIMEOUT_MS must be at least 1");
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_secret_comes_from_its_variable_or_from_the_file_its_file_variable_names() {
        let dir = std::env::temp_dir().join(format!("om-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("amqp_url");
        std::fs::write(&file, "amqp://u:from-file@h/%2f\n").unwrap();
        let path = file.to_str().unwrap().to_owned();

        let env = HashMap::from([("AMQP_URL_FILE", path.clone())]);
        let shared = SharedSettings::from_env(&Env::from_fn(|k| env.get(k).cloned())).unwrap();
        assert_eq!(shared.amqp_url.expose(), "amqp://u:from-file@h/%2f", "the line break is dropped");

        let env = HashMap::from([("INVENTORY_TOKEN_FILE", path.clone()), ("INVENTORY_TOKEN", "x".to_owned())]);
        let err = SharedSettings::from_env(&Env::from_fn(|k| env.get(k).cloned())).unwrap_err().to_string();
        assert!(err.contains("INVENTORY_TOKEN or INVENTORY_TOKEN_FILE"), "{err}");

        let missing = dir.join("missing").to_str().unwrap().to_owned();
        let env = HashMap::from([("CART_DATABASE_URL_FILE", missing)]);
        let err =
            DatabaseSettings::from_env(&Env::from_fn(|k| env.get(k).cloned()), "CART", DatabaseSettings::new("x"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("CART_DATABASE_URL_FILE") && err.contains("cannot be read"), "{err}");

        std::fs::write(&file, "\n").unwrap();
        let env = HashMap::from([("INVENTORY_TOKEN_FILE", path)]);
        let err = SharedSettings::from_env(&Env::from_fn(|k| env.get(k).cloned())).unwrap_err().to_string();
        assert!(err.contains("is empty") && !err.contains("from-file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("amqp://guest:p@ss@h/%2f"), "amqp://guest:***@h/%2f");
        assert_eq!(
            redact("amqp://u:s1@h1:5672/%2f,amqp://u:s2@h2/%2f,h3:5673"),
            "amqp://u:***@h1:5672/%2f,amqp://u:***@h2/%2f,h3:5673"
        );
        let settings = DatabaseSettings::new("postgres://u:secret@h/db");
        assert!(!format!("{settings:?}").contains("secret"));
        let shared = SharedSettings { amqp_url: "amqp://u:hunter2@h/%2f".into(), ..Default::default() };
        assert!(!format!("{shared:?}").contains("hunter2"));
        assert!(!format!("{}", shared.amqp_url).contains("hunter2"));
        assert_eq!(shared.amqp_url.expose(), "amqp://u:hunter2@h/%2f");
    }

    #[test]
    fn values_come_from_the_lookup_and_bad_ones_name_their_variable() {
        let vars =
            HashMap::from([("X_DB_MAX_CONNECTIONS", "3"), ("X_DB_IDLE_TIMEOUT_MS", "1500"), ("AMQP_MAX_RETRIES", "2")]);
        let env = Env::from_fn(|k| vars.get(k).map(|v| (*v).to_owned()));
        let db = DatabaseSettings::from_env(&env, "X", DatabaseSettings::new("postgres://h/x")).unwrap();
        assert_eq!((db.max_connections, db.idle_timeout), (3, Duration::from_millis(1500)));
        assert_eq!(SharedSettings::from_env(&env).unwrap().max_retries, 2);

        let bad = Env::from_fn(|k| (k == "X_DB_MAX_CONNECTIONS").then(|| "lots".to_owned()));
        let err = DatabaseSettings::from_env(&bad, "X", DatabaseSettings::new("postgres://h/x")).unwrap_err();
        assert!(err.to_string().contains("X_DB_MAX_CONNECTIONS"), "{err}");
    }

    #[test]
    fn the_database_bounds_have_defaults_are_read_and_are_never_zero() {
        let db = DatabaseSettings::new("postgres://h/x");
        assert_eq!(
            (db.statement_timeout, db.lock_timeout, db.idle_in_transaction_timeout),
            (Duration::from_secs(5), Duration::from_secs(2), Duration::from_secs(10))
        );
        let vars = HashMap::from([
            ("X_DB_STATEMENT_TIMEOUT_MS", "800"),
            ("X_DB_LOCK_TIMEOUT_MS", "300"),
            ("X_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "4000"),
        ]);
        let env = Env::from_fn(|k| vars.get(k).map(|v| (*v).to_owned()));
        let db = DatabaseSettings::from_env(&env, "X", DatabaseSettings::new("postgres://h/x")).unwrap();
        assert_eq!(
            (db.statement_timeout, db.lock_timeout, db.idle_in_transaction_timeout),
            (Duration::from_millis(800), Duration::from_millis(300), Duration::from_secs(4))
        );
        let zero = Env::from_fn(|k| (k == "X_DB_LOCK_TIMEOUT_MS").then(|| "0".to_owned()));
        let err = DatabaseSettings::from_env(&zero, "X", DatabaseSettings::new("postgres://h/x")).unwrap_err();
        assert!(err.to_string().contains("X_DB_LOCK_TIMEOUT_MS must be at least 1"), "{err}");
    }
}
