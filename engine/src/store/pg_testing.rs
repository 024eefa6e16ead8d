//! Throwaway Postgres databases for tests and benches, in this crate and in others (cluster
//! tests run several nodes on one database).
//!
//! Each [`fresh_database`] is a new, empty database on the server that
//! `PARLEY_TEST_POSTGRES_URL` names (default `postgres://postgres@127.0.0.1:5432/test`,
//! falling back to the user `root`), dropped again by [`TestDatabase::drop_now`] or, if a
//! test panics first, when the [`TestDatabase`] drops. Without a reachable server it prints
//! `skipping: postgres unreachable` and answers None, so a test can return early; with
//! `PARLEY_REQUIRE_SERVICES=1` (CI, where a skipped test must not pass silently) it panics.
//!
//! ```no_run
//! # async fn example() {
//! use parley_engine::store::{pg_testing, PgStore, Store};
//! let Some(db) = pg_testing::fresh_database().await else { return };
//! let store = PgStore::connect(db.url()).await.unwrap();
//! store.migrate().await.unwrap();
//! // ...
//! store.close().await;
//! db.drop_now().await;
//! # }
//! ```

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// The driver, for tests and benches of crates that have no sqlx dependency of their own
/// and need raw SQL against a test database.
pub use sqlx;

/// The variable naming the server's admin URL, and its default.
pub const ADMIN_URL_VAR: &str = "PARLEY_TEST_POSTGRES_URL";
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Set to `1` to make an unreachable server fail tests instead of skipping them.
pub const REQUIRE_VAR: &str = "PARLEY_REQUIRE_SERVICES";

/// How long opening an admin connection may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A database of its own for one test.
pub struct TestDatabase {
    admin: PgConnectOptions,
    name: String,
    url: String,
    dropped: bool,
}

impl TestDatabase {
    /// The URL to connect a store to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ends every connection to the database, as a server restart or failover would, and
    /// answers how many there were.
    pub async fn terminate_connections(&self) -> Result<i64, sqlx::Error> {
        let mut admin = admin_connection(&self.admin).await?;
        let n = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&mut admin)
        .await?;
        admin.close().await?;
        Ok(n)
    }

    /// Drops the database, ending any connection still open to it. Close the stores on it
    /// first so they do not log the lost connections.
    pub async fn drop_now(mut self) {
        self.dropped = true;
        if let Err(e) = drop_database(&self.admin, &self.name).await {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // A test that panicked before drop_now. Drop cannot await, so the database is dropped
        // on a thread with a runtime of its own (waiting on the current runtime could
        // deadlock it).
        let (admin, name) = (self.admin.clone(), std::mem::take(&mut self.name));
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)?;
            rt.block_on(drop_database(&admin, &name))
        });
        if let Ok(Err(e)) = dropper.join() {
            eprintln!("could not drop a test database: {e}");
        }
    }
}

/// A new, empty database, or None if the server cannot be reached (see the module docs).
pub async fn fresh_database() -> Option<TestDatabase> {
    let url = std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
    let options = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("{ADMIN_URL_VAR} is not a Postgres URL: {e}"));
    match create_database(options).await {
        Ok(db) => Some(db),
        Err(e) if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") => {
            panic!("postgres unreachable and {REQUIRE_VAR}=1: {e}")
        }
        Err(e) => {
            eprintln!("skipping: postgres unreachable ({e})");
            None
        }
    }
}

async fn create_database(options: PgConnectOptions) -> Result<TestDatabase, sqlx::Error> {
    // Trust auth on development machines lets in the user as named; some have no role
    // `postgres`, only one for the login user `root`.
    let (admin, mut conn) = match admin_connection(&options).await {
        Ok(conn) => (options, conn),
        Err(first) => {
            let root = options.username("root");
            match admin_connection(&root).await {
                Ok(conn) => (root, conn),
                Err(_) => return Err(first),
            }
        }
    };
    let name = format!("parley_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let url = admin.clone().database(&name).to_url_lossy().to_string();
    Ok(TestDatabase {
        admin,
        name,
        url,
        dropped: false,
    })
}

async fn drop_database(admin: &PgConnectOptions, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = admin_connection(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

async fn admin_connection(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting timed out",
            ))
        })?
}
