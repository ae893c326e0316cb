//! Helpers shared by the store's integration tests: run a test once per
//! backend, each time against a new, empty store. SQLite lives in a
//! temporary directory; PostgreSQL runs when `AIRLOCK_TEST_POSTGRES_URL`
//! names a database (each test in a fresh schema), and with
//! `AIRLOCK_REQUIRE_POSTGRES=1` a missing URL fails the tests.

// Each test binary uses some of these helpers only.
#![allow(dead_code)]

use std::future::Future;

use airlock_store::{Backend, Store};
use sqlx::Connection;

/// Where one test's store lives.
#[derive(Clone, Debug)]
pub struct Db {
    /// Which database.
    pub backend: Backend,
    /// The store URL to open.
    pub url: String,
}

impl Db {
    pub async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open the {} store: {e}", self.backend))
    }
}

pub fn postgres_base_url() -> Option<String> {
    match std::env::var("AIRLOCK_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            let how = "start one with: eval \"$(bash .ci/postgres.sh | tail -1)\"";
            if std::env::var("AIRLOCK_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "AIRLOCK_REQUIRE_POSTGRES=1 but AIRLOCK_TEST_POSTGRES_URL is not set: \
                     the PostgreSQL half of the store tests cannot run; {how}"
                );
            }
            eprintln!(
                "\n************************************************************\n\
                 NOTE: AIRLOCK_TEST_POSTGRES_URL is not set: the PostgreSQL half\n\
                 of this test was NOT run (only SQLite was). {how}\n\
                 ************************************************************\n"
            );
            None
        }
    }
}

pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("random");
    hex::encode(bytes)
}

pub async fn admin(base: &str) -> sqlx::AnyConnection {
    sqlx::AnyConnection::connect(base)
        .await
        .expect("connect to the test PostgreSQL")
}

/// Runs `test` once per backend, each time against a new, empty store.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    sqlx::any::install_default_drivers();
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.db");
        let url = format!("sqlite:{}", path.display());
        eprintln!("== sqlite: {url}");
        test(Db {
            backend: Backend::Sqlite,
            url,
        })
        .await;
    }
    if let Some(base) = postgres_base_url() {
        let schema = format!("store_test_{}", random_suffix());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin(&base).await)
            .await
            .expect("create a test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        eprintln!("== postgres: schema {schema}");
        test(Db {
            backend: Backend::Postgres,
            url,
        })
        .await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin(&base).await)
            .await
            .expect("drop the test schema");
    }
}

pub async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .expect("count")
}

pub async fn store_with_collab(db: &Db) -> Store {
    let store = db.open().await;
    store
        .create_collaboration("demo", "c-1", "name = 'demo'\n", "alice")
        .await
        .expect("create collaboration");
    store
}
