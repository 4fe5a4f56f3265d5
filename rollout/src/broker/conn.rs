//! Connections to the Redis server. Every failure is one line naming the server; a server that
//! goes away mid-run is retried with backoff for a bounded time, and every read has a timeout,
//! so nothing waits forever on a dead socket.

use std::time::{Duration, Instant};

use redis::{Connection, RedisError, RedisResult};

/// Where the server is and how to log in.
#[derive(Clone)]
pub struct Endpoint {
    /// `redis://HOST:PORT/DB` as the user gave it (never with a password in it).
    pub url: String,
    pub password: Option<String>,
    /// Where a missing password may be put, for the error message (e.g. `NOREGRET_REDIS_PASSWORD`).
    pub password_hint: String,
    /// How long to keep retrying when the server goes away mid-run.
    pub retry_for: Duration,
}

impl std::fmt::Debug for Endpoint {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("url", &self.url).field("password", &self.password.as_ref().map(|_| "***")).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(pub String);

pub type Result<T> = std::result::Result<T, BrokerError>;

impl From<BrokerError> for crate::transport::TransportError {
    fn from(e: BrokerError) -> Self {
        crate::transport::TransportError::Failed(e.0)
    }
}

/// Connecting may take this long (an unreachable host fails here, not later).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a reply may take; blocking reads ask the server for well under this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One connection, reopened when it drops.
pub struct Conn {
    endpoint: Endpoint,
    client: redis::Client,
    con: Option<Connection>,
}

impl Conn {
    /// Connect and log in now, so that an unreachable server or a wrong password is reported
    /// at once, not retried.
    pub fn open(endpoint: &Endpoint) -> Result<Conn> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(endpoint.url.as_str())
            .map_err(|e| BrokerError(format!("{}: not a Redis URL: {e}", redact(&endpoint.url))))?;
        if info.redis_settings().password().is_some() {
            return Err(BrokerError(format!(
                "{}: the URL holds a password; put it in redis_password or the variable {} instead",
                redact(&endpoint.url),
                endpoint.password_hint
            )));
        }
        if let Some(password) = &endpoint.password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|e| BrokerError(format!("{}: {e}", endpoint.url)))?;
        let mut conn = Conn { endpoint: endpoint.clone(), client, con: None };
        let mut con = conn.connect()?;
        // The server asks for a password only at the first command.
        redis::cmd("PING").query::<()>(&mut con).map_err(|e| conn.describe(&e))?;
        conn.con = Some(con);
        Ok(conn)
    }

    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn connect(&self) -> Result<Connection> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(|e| self.describe(&e))?;
        let timeouts = con.set_read_timeout(Some(REPLY_TIMEOUT)).and_then(|_| con.set_write_timeout(Some(REPLY_TIMEOUT)));
        timeouts.map_err(|e| self.describe(&e))?;
        Ok(con)
    }

    /// Run `f` on the connection. If the connection is lost, reconnect with backoff and run it
    /// again, for at most the endpoint's `retry_for`; any other error is returned at once.
    /// Everything run here is safe to repeat: acks and deletes are idempotent, and a group
    /// appended twice is dropped by the learner by id.
    pub fn run<T>(&mut self, mut f: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T> {
        let mut lost_since: Option<Instant> = None;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let error = match self.con.as_mut() {
                Some(con) => match f(con) {
                    Ok(value) => return Ok(value),
                    Err(e) if is_connection_loss(&e) => {
                        self.con = None;
                        self.describe(&e)
                    }
                    Err(e) => return Err(self.describe(&e)),
                },
                None => match self.connect() {
                    Ok(con) => {
                        self.con = Some(con);
                        continue;
                    }
                    Err(e) => e,
                },
            };
            let since = *lost_since.get_or_insert_with(|| {
                tracing::warn!(server = %self.endpoint.url, "lost the connection ({error}); retrying for up to {:?}", self.endpoint.retry_for);
                Instant::now()
            });
            if since.elapsed() >= self.endpoint.retry_for {
                return Err(BrokerError(format!("{} (gave up after {:.0} s of retries)", error, self.endpoint.retry_for.as_secs_f64())));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One line: the server, then what went wrong in words a user can act on.
    fn describe(&self, e: &RedisError) -> BrokerError {
        let url = &self.endpoint.url;
        let hint = &self.endpoint.password_hint;
        BrokerError(match (e.kind(), e.code()) {
            (redis::ErrorKind::AuthenticationFailed, _) => {
                format!("{url}: the server refused the password (wrong password, or the server has none set)")
            }
            (_, Some("NOAUTH")) => format!("{url}: the server needs a password: set redis_password in [rollout] or the variable {hint}"),
            (_, Some("WRONGPASS")) => format!("{url}: the server refused the password"),
            _ if e.is_connection_refusal() => format!("{url}: cannot connect: {}", one_line(e)),
            _ if e.is_timeout() => format!("{url}: no answer in time: {}", one_line(e)),
            _ if is_connection_loss(e) => format!("{url}: the server went away: {}", one_line(e)),
            _ => format!("{url}: {}", one_line(e)),
        })
    }
}

fn is_connection_loss(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn one_line(e: &RedisError) -> String {
    e.to_string().replace('\n', " ")
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("redis://:hunter2@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact("redis://me:hunter2@host/1"), "redis://me:***@host/1");
        assert_eq!(redact("redis://host:6379/0"), "redis://host:6379/0");
        let e = Endpoint { url: "redis://h".into(), password: Some("hunter2".into()), password_hint: "X".into(), retry_for: Duration::ZERO };
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[test]
    fn a_url_with_a_password_is_refused_without_echoing_it() {
        let e = Endpoint { url: "redis://:hunter2@127.0.0.1:1/0".into(), password: None, password_hint: "NOREGRET_REDIS_PASSWORD".into(), retry_for: Duration::ZERO };
        let err = Conn::open(&e).err().expect("refused");
        assert!(err.0.contains("NOREGRET_REDIS_PASSWORD") && !err.0.contains("hunter2"), "{err}");
    }
}
