//! The store against both backends: SQLite in a temporary directory always,
//! PostgreSQL when `AIRLOCK_TEST_POSTGRES_URL` names a database (each test
//! in a fresh schema). Start one with `eval "$(bash .ci/postgres.sh | tail -1)"`;
//! with `AIRLOCK_REQUIRE_POSTGRES=1` a missing URL fails the tests.

mod common;

use std::sync::Arc;

use airlock_store::{
    export_jsonl, parse_jsonl, verify_chain, verify_chain_with_head, AuditEntry, Backend,
    QueryState, Store, StoreError, GENESIS_HASH, INTERRUPTED, RESULT_DELETED,
};
use common::{count, each_backend, store_with_collab};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_with_the_backend_and_durability_settings() {
    each_backend(|db| async move {
        let store = db.open().await;
        assert_eq!(store.backend(), db.backend);
        if db.backend == Backend::Sqlite {
            // Hold every pooled connection at once: each must have the pragmas.
            let mut conns = Vec::new();
            for _ in 0..4 {
                conns.push(store.pool().acquire().await.expect("acquire"));
            }
            for conn in &mut conns {
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("journal_mode");
                assert_eq!(mode, "wal");
                let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("synchronous");
                assert_eq!(sync, 2, "synchronous=FULL");
                let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("foreign_keys");
                assert_eq!(fk, 1);
                let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("busy_timeout");
                assert_eq!(busy, 5000);
            }
        }
        // `$n` placeholders work on both, also repeated and out of order.
        let (a, b): (i64, String) = sqlx::query_as("SELECT $2 + $2, $1")
            .bind("x")
            .bind(20i64)
            .fetch_one(store.pool())
            .await
            .expect("numbered placeholders");
        assert_eq!((a, b.as_str()), (40, "x"));
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn open_refuses_bad_urls_without_quoting_them() {
    let err = Store::open("mysql://root:hunter2@localhost/db")
        .await
        .expect_err("unsupported");
    assert!(matches!(err, StoreError::BadInput(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = Store::open("sqlite:").await.expect_err("no path");
    assert!(matches!(err, StoreError::BadInput(_)), "{err}");
    let err = Store::open("postgres://airlock:hunter2@127.0.0.1:1/nothing")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_rerun_migrations() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let token = store.create_token("alice", None).await.expect("token");
        let applied: Vec<(i64, i64)> =
            sqlx::query_as("SELECT version, applied_at_ms FROM schema_migrations ORDER BY version")
                .fetch_all(store.pool())
                .await
                .expect("schema_migrations");
        assert_eq!(applied.len(), 4, "versions 1 to 4");
        store.close().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;

        for _ in 0..2 {
            let store = db.open().await;
            let again: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT version, applied_at_ms FROM schema_migrations ORDER BY version",
            )
            .fetch_all(store.pool())
            .await
            .expect("schema_migrations");
            assert_eq!(again, applied, "migrations ran again");
            let collab = store
                .collaboration("demo")
                .await
                .expect("read")
                .expect("kept");
            assert_eq!(collab.version, 1);
            assert_eq!(
                store.authenticate(&token.token, 0).await.expect("auth"),
                Some("alice".to_owned())
            );
            verify_chain(&store.audit("demo").await.expect("audit")).expect("chain intact");
            store.close().await;
        }
    })
    .await;
}

#[tokio::test]
async fn tokens() {
    each_backend(|db| async move {
        let store = db.open().await;
        let now = 1_000_000;
        let t = store.create_token("alice", None).await.expect("token");
        assert!(t.token.starts_with(&format!("alk_{}_", t.id)));
        assert_eq!(t.token.len(), 4 + 16 + 1 + 64);
        assert!(
            !format!("{t:?}").contains(&t.token),
            "Debug leaks the token"
        );
        assert_eq!(
            store.authenticate(&t.token, now).await.expect("auth"),
            Some("alice".into())
        );

        // Wrong secret, unknown id.
        let secret = &t.token[t.token.len() - 64..];
        let wrong_secret = format!("alk_{}_{}", t.id, "0".repeat(64));
        assert_eq!(
            store.authenticate(&wrong_secret, now).await.expect("auth"),
            None
        );
        let unknown_id = format!("alk_{}_{secret}", "f".repeat(16));
        assert_eq!(
            store.authenticate(&unknown_id, now).await.expect("auth"),
            None
        );

        // Malformed: never an error.
        let long = "a".repeat(100_000);
        let upper = t.token.to_uppercase();
        let malformed = [
            "",
            "alk_",
            "alk__",
            "garbage",
            "alk_zz_zz",
            long.as_str(),
            upper.as_str(),
            &t.token[..t.token.len() - 1],
            "alk_0123456789abcdef_\u{e9}\u{e9}",
            "alk_' OR '1'='1",
        ];
        for bad in malformed {
            assert_eq!(
                store
                    .authenticate(bad, now)
                    .await
                    .expect("malformed is not an error"),
                None,
                "{bad:.40}"
            );
        }

        // The table holds neither the token nor its secret.
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT id, member, secret_sha256 FROM tokens")
                .fetch_all(store.pool())
                .await
                .expect("read tokens");
        assert_eq!(rows.len(), 1);
        let (id, member, stored) = &rows[0];
        assert_eq!((id, member.as_str()), (&t.id, "alice"));
        assert!(!stored.contains(secret) && stored != &t.token);
        assert_eq!(stored.len(), 64);

        // Expiry: valid before, not at or after.
        let e = store
            .create_token("bob", Some(now + 10))
            .await
            .expect("token");
        assert_eq!(
            store.authenticate(&e.token, now + 9).await.expect("auth"),
            Some("bob".into())
        );
        assert_eq!(
            store.authenticate(&e.token, now + 10).await.expect("auth"),
            None
        );
        assert_eq!(
            store.authenticate(&e.token, now + 11).await.expect("auth"),
            None
        );

        // Revocation: once.
        assert!(store.revoke_token(&t.id).await.expect("revoke"));
        assert!(!store.revoke_token(&t.id).await.expect("revoke again"));
        assert!(!store.revoke_token("nope").await.expect("revoke unknown"));
        assert_eq!(store.authenticate(&t.token, now).await.expect("auth"), None);
        // Other tokens unaffected.
        assert_eq!(
            store.authenticate(&e.token, now).await.expect("auth"),
            Some("bob".into())
        );
        assert!(matches!(
            store.create_token("", None).await,
            Err(StoreError::BadInput(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn collaborations_are_versioned() {
    each_backend(|db| async move {
        let store = db.open().await;
        let v1 = store
            .create_collaboration("zeta", "id-z", "v = 1\n", "alice")
            .await
            .expect("create");
        assert_eq!((v1.version, v1.id.as_str()), (1, "id-z"));
        assert_eq!(
            v1.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"v = 1\n"))
        );
        store
            .create_collaboration("alpha", "id-a", "a = 1\n", "bob")
            .await
            .expect("create");

        let err = store
            .create_collaboration("zeta", "other", "x", "bob")
            .await
            .expect_err("exists");
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");

        let v2 = store
            .apply_collaboration("zeta", "v = 2\n", "bob")
            .await
            .expect("apply");
        assert_eq!(
            (v2.version, v2.id.as_str(), v2.created_by.as_str()),
            (2, "id-z", "bob")
        );
        let v3 = store
            .apply_collaboration("zeta", "v = 3\n", "alice")
            .await
            .expect("apply");
        assert_eq!(v3.version, 3);

        let err = store
            .apply_collaboration("nope", "x", "bob")
            .await
            .expect_err("missing");
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");

        let current = store
            .collaboration("zeta")
            .await
            .expect("read")
            .expect("some");
        assert_eq!(current, v3);
        assert_eq!(store.collaboration("nope").await.expect("read"), None);

        let all = store.collaborations().await.expect("list");
        let names: Vec<_> = all.iter().map(|c| (c.name.as_str(), c.version)).collect();
        assert_eq!(names, [("alpha", 1), ("zeta", 3)]);

        let versions = store
            .collaboration_versions("zeta")
            .await
            .expect("versions");
        let texts: Vec<_> = versions
            .iter()
            .map(|c| (c.version, c.toml.as_str()))
            .collect();
        assert_eq!(texts, [(1, "v = 1\n"), (2, "v = 2\n"), (3, "v = 3\n")]);
        assert_eq!(versions[0], v1);
        assert!(store
            .collaboration_versions("nope")
            .await
            .expect("versions")
            .is_empty());

        let audit = store.audit("zeta").await.expect("audit");
        verify_chain(&audit).expect("chain");
        let kinds: Vec<_> = audit.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "collaboration.created",
                "collaboration.applied",
                "collaboration.applied"
            ]
        );
        let applied = audit[2].payload_json().expect("json");
        assert_eq!(applied["version"], json!(3));
        assert_eq!(applied["sha256"], json!(v3.sha256));
        assert_eq!(audit[2].actor, "alice");

        // Text PostgreSQL cannot hold is refused the same way on both.
        let err = store
            .apply_collaboration("zeta", "nul \0 here", "bob")
            .await
            .expect_err("NUL");
        assert!(matches!(err, StoreError::BadInput(_)), "{err}");
    })
    .await;
}

#[tokio::test]
async fn query_lifecycle_and_its_audit() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let err = store
            .submit_query("nope", "alice", "SELECT 1")
            .await
            .expect_err("no collab");
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");

        let q = store
            .submit_query("demo", "alice", "SELECT count(*) FROM t")
            .await
            .expect("submit");
        assert_eq!(q.state, QueryState::Submitted);
        assert_eq!(q.id.len(), 32);
        assert_eq!(store.query(&q.id).await.expect("read"), Some(q.clone()));
        assert_eq!(store.result(&q.id).await.expect("no result yet"), None);

        let c = store
            .transition(&q.id, QueryState::Checked, Some("policy ok"))
            .await
            .expect("check");
        assert_eq!(
            (c.state, c.detail.as_deref()),
            (QueryState::Checked, Some("policy ok"))
        );
        store
            .transition(&q.id, QueryState::Running, None)
            .await
            .expect("run");
        // A multi-megabyte result.
        let result: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let r = store.release(&q.id, &result, 42).await.expect("release");
        assert_eq!((r.state, r.rows), (QueryState::Released, Some(42)));
        assert_eq!(store.query(&q.id).await.expect("read"), Some(r.clone()));
        assert_eq!(
            store.result(&q.id).await.expect("result"),
            Some(result.clone())
        );
        assert!(r.updated_at_ms >= r.created_at_ms);

        // Terminal: nothing moves it again.
        for to in QueryState::ALL {
            let err = if to == QueryState::Released {
                store
                    .release(&q.id, b"again", 1)
                    .await
                    .expect_err("terminal")
            } else {
                store
                    .transition(&q.id, to, None)
                    .await
                    .expect_err("terminal")
            };
            assert!(
                matches!(&err, StoreError::BadTransition { from, .. } if from == "released"),
                "{to}: {err}"
            );
        }

        // Every transition in the chain, in order, by the member.
        let audit = store.audit("demo").await.expect("audit");
        verify_chain(&audit).expect("chain");
        let kinds: Vec<_> = audit.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "collaboration.created",
                "query.submitted",
                "query.checked",
                "query.running",
                "query.released"
            ]
        );
        assert!(audit[1..].iter().all(|e| e.actor == "alice"));
        let submitted = audit[1].payload_json().expect("json");
        assert_eq!(submitted["sql"], json!("SELECT count(*) FROM t"));
        assert_eq!(submitted["query"], json!(q.id));
        let checked = audit[2].payload_json().expect("json");
        assert_eq!(
            checked,
            json!({"query": q.id, "state": "checked", "detail": "policy ok"})
        );
        let released = audit[4].payload_json().expect("json");
        assert_eq!(released["rows"], json!(42));
        assert_eq!(
            released["result_sha256"],
            json!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&result)))
        );

        // Refusal and failure paths.
        let q2 = store
            .submit_query("demo", "bob", "SELECT *")
            .await
            .expect("submit");
        let refused = store
            .transition(&q2.id, QueryState::Refused, Some("raw rows"))
            .await
            .expect("refuse");
        assert_eq!(refused.state, QueryState::Refused);
        let q3 = store
            .submit_query("demo", "bob", "SELECT 2")
            .await
            .expect("submit");
        store
            .transition(&q3.id, QueryState::Checked, None)
            .await
            .expect("check");
        store
            .transition(&q3.id, QueryState::Running, None)
            .await
            .expect("run");
        store
            .transition(&q3.id, QueryState::Failed, Some("node gone"))
            .await
            .expect("fail");

        let listed: Vec<_> = store
            .queries("demo")
            .await
            .expect("list")
            .into_iter()
            .map(|q| q.id)
            .collect();
        assert_eq!(listed.len(), 3);
        assert!(listed.contains(&q.id) && listed.contains(&q2.id) && listed.contains(&q3.id));
        assert!(store.queries("nope").await.expect("list").is_empty());
        verify_chain(&store.audit("demo").await.expect("audit")).expect("chain");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_results_and_audits_each() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let mut ids = Vec::new();
        for i in 0..3u8 {
            let q = store
                .submit_query("demo", "alice", "SELECT 1")
                .await
                .expect("submit");
            for state in [QueryState::Checked, QueryState::Running] {
                store.transition(&q.id, state, None).await.expect("move");
            }
            store.release(&q.id, &[i; 10], 1).await.expect("release");
            ids.push(q.id);
        }
        let refused = store
            .submit_query("demo", "alice", "SELECT 2")
            .await
            .expect("submit");
        store
            .transition(&refused.id, QueryState::Refused, Some("no"))
            .await
            .expect("refuse");
        // A cutoff before every release deletes nothing.
        assert!(store
            .expire_results("demo", 0)
            .await
            .expect("expire")
            .is_empty());
        let cutoff = airlock_store::now_ms() + 1;
        let deleted = store.expire_results("demo", cutoff).await.expect("expire");
        assert_eq!(deleted.len(), 3);
        for id in &ids {
            assert!(deleted.contains(id));
            assert_eq!(store.result(id).await.expect("read"), None);
            let q = store.query(id).await.expect("read").expect("kept");
            assert_eq!(
                (q.state, q.rows, q.detail.as_deref()),
                (QueryState::Released, Some(1), Some(RESULT_DELETED))
            );
        }
        assert!(store
            .expire_results("demo", cutoff)
            .await
            .expect("again")
            .is_empty());
        let chain = store.audit("demo").await.expect("audit");
        verify_chain(&chain).expect("the chain still verifies");
        let audited: Vec<String> = chain
            .iter()
            .filter(|e| e.kind == "result.deleted")
            .map(|e| {
                let p: serde_json::Value = serde_json::from_str(&e.payload).expect("json");
                p["query"].as_str().expect("query").to_string()
            })
            .collect();
        assert_eq!(audited.len(), 3);
        assert!(ids.iter().all(|id| audited.contains(id)));
        assert!(store.expire_results("", cutoff).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn illegal_transitions_are_refused() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let q = store
            .submit_query("demo", "alice", "SELECT 1")
            .await
            .expect("submit");
        let bad = |from: &str, to: &str, err: StoreError| match err {
            StoreError::BadTransition { from: f, to: t } => {
                assert_eq!((f.as_str(), t.as_str()), (from, to))
            }
            other => panic!("expected BadTransition, got {other}"),
        };
        bad(
            "submitted",
            "running",
            store
                .transition(&q.id, QueryState::Running, None)
                .await
                .expect_err("skip"),
        );
        bad(
            "submitted",
            "submitted",
            store
                .transition(&q.id, QueryState::Submitted, None)
                .await
                .expect_err("same"),
        );
        bad(
            "submitted",
            "released",
            store
                .release(&q.id, b"r", 1)
                .await
                .expect_err("not running"),
        );
        let err = store
            .transition(&q.id, QueryState::Released, None)
            .await
            .expect_err("release needs a result");
        assert!(matches!(err, StoreError::BadInput(_)), "{err}");
        store
            .transition(&q.id, QueryState::Checked, None)
            .await
            .expect("check");
        bad(
            "checked",
            "submitted",
            store
                .transition(&q.id, QueryState::Submitted, None)
                .await
                .expect_err("back"),
        );
        bad(
            "checked",
            "released",
            store
                .release(&q.id, b"r", 1)
                .await
                .expect_err("not running"),
        );
        store
            .transition(&q.id, QueryState::Failed, Some("x"))
            .await
            .expect("fail");
        bad(
            "failed",
            "checked",
            store
                .transition(&q.id, QueryState::Checked, None)
                .await
                .expect_err("terminal"),
        );
        let err = store
            .transition("nope", QueryState::Checked, None)
            .await
            .expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
        let err = store.release("nope", b"", 0).await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");

        // Refused moves leave no trace in the chain.
        let kinds: Vec<_> = store
            .audit("demo")
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "collaboration.created",
                "query.submitted",
                "query.checked",
                "query.failed"
            ]
        );
        assert_eq!(store.result(&q.id).await.expect("result"), None);

        // The state table itself refuses other moves (unit check of the rules).
        use QueryState::*;
        let allowed: Vec<_> = QueryState::ALL
            .iter()
            .flat_map(|&a| QueryState::ALL.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a.can_become(b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Submitted, Checked),
                (Submitted, Refused),
                (Submitted, Failed),
                (Checked, Running),
                (Checked, Refused),
                (Checked, Failed),
                (Running, Released),
                (Running, Refused),
                (Running, Failed),
            ]
        );
        for s in QueryState::ALL {
            assert_eq!(s.as_str().parse::<QueryState>().expect("parse"), s);
            assert_eq!(s.is_terminal(), matches!(s, Released | Refused | Failed));
        }
        assert!("RUNNING".parse::<QueryState>().is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_releases_release_once() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        for round in 0..5 {
            let q = store
                .submit_query("demo", "alice", "SELECT 1")
                .await
                .expect("submit");
            store
                .transition(&q.id, QueryState::Checked, None)
                .await
                .expect("check");
            store
                .transition(&q.id, QueryState::Running, None)
                .await
                .expect("run");
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let mut tasks = Vec::new();
            for i in 0..2u8 {
                let (store, id, barrier) = (store.clone(), q.id.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    store.release(&id, &[i; 1000], i64::from(i)).await
                }));
            }
            let mut wins = Vec::new();
            for task in tasks {
                match task.await.expect("join") {
                    Ok(r) => wins.push(r),
                    Err(StoreError::BadTransition { to, .. }) => assert_eq!(to, "released"),
                    Err(other) => panic!("round {round}: {other}"),
                }
            }
            assert_eq!(wins.len(), 1, "round {round}: exactly one release wins");
            let winner = wins[0].rows.expect("rows") as u8;
            assert_eq!(
                store.result(&q.id).await.expect("result"),
                Some(vec![winner; 1000])
            );
        }
        let audit = store.audit("demo").await.expect("audit");
        verify_chain(&audit).expect("chain");
        assert_eq!(
            audit.iter().filter(|e| e.kind == "query.released").count(),
            5
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM query_results").await, 5);
    })
    .await;
}

#[tokio::test]
async fn fail_interrupted_fails_unfinished_queries() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let submitted = store
            .submit_query("demo", "alice", "S")
            .await
            .expect("submit");
        let checked = store
            .submit_query("demo", "bob", "C")
            .await
            .expect("submit");
        store
            .transition(&checked.id, QueryState::Checked, None)
            .await
            .expect("check");
        let running = store
            .submit_query("demo", "carol", "R")
            .await
            .expect("submit");
        store
            .transition(&running.id, QueryState::Checked, None)
            .await
            .expect("check");
        store
            .transition(&running.id, QueryState::Running, None)
            .await
            .expect("run");
        let released = store
            .submit_query("demo", "alice", "D")
            .await
            .expect("submit");
        store
            .transition(&released.id, QueryState::Checked, None)
            .await
            .expect("check");
        store
            .transition(&released.id, QueryState::Running, None)
            .await
            .expect("run");
        store
            .release(&released.id, b"ok", 1)
            .await
            .expect("release");
        let refused = store
            .submit_query("demo", "alice", "X")
            .await
            .expect("submit");
        store
            .transition(&refused.id, QueryState::Refused, Some("no"))
            .await
            .expect("refuse");
        store.close().await;

        // "Restart".
        let store = db.open().await;
        let mut failed = store.fail_interrupted().await.expect("fail interrupted");
        failed.sort();
        let mut expected = vec![submitted.id.clone(), checked.id.clone(), running.id.clone()];
        expected.sort();
        assert_eq!(failed, expected);
        for id in &expected {
            let q = store.query(id).await.expect("read").expect("some");
            assert_eq!(
                (q.state, q.detail.as_deref()),
                (QueryState::Failed, Some(INTERRUPTED))
            );
        }
        let kept = store
            .query(&released.id)
            .await
            .expect("read")
            .expect("some");
        assert_eq!(kept.state, QueryState::Released);
        let kept = store.query(&refused.id).await.expect("read").expect("some");
        assert_eq!(
            (kept.state, kept.detail.as_deref()),
            (QueryState::Refused, Some("no"))
        );
        assert!(store.fail_interrupted().await.expect("again").is_empty());

        let audit = store.audit("demo").await.expect("audit");
        verify_chain(&audit).expect("chain");
        let fails: Vec<_> = audit.iter().filter(|e| e.kind == "query.failed").collect();
        assert_eq!(fails.len(), 3);
        for e in fails {
            let p = e.payload_json().expect("json");
            assert_eq!(p["detail"], json!(INTERRUPTED));
            assert_eq!(p["state"], json!("failed"));
        }
    })
    .await;
}

/// Ten entries in chain "a", three in chain "b".
async fn sample_chain(store: &Store) -> Vec<AuditEntry> {
    for i in 0..10 {
        store
            .append_audit(
                "a",
                "test.event",
                "hub",
                json!({"i": i, "z": [1, {"y": 2, "x": 1}]}),
            )
            .await
            .expect("append");
    }
    for i in 0..3 {
        store
            .append_audit("b", "test.event", "hub", json!({"i": i}))
            .await
            .expect("append");
    }
    store.audit("a").await.expect("audit")
}

fn broken_at(entries: &[AuditEntry]) -> (i64, String) {
    let err = verify_chain(entries).expect_err("must be detected");
    (err.seq, err.to_string())
}

#[tokio::test]
async fn audit_chain_detects_tampering() {
    each_backend(|db| async move {
        let store = db.open().await;
        let chain = sample_chain(&store).await;
        assert_eq!(chain.len(), 10);
        verify_chain(&chain).expect("intact");
        assert_eq!(chain[0].prev_hash, GENESIS_HASH);
        assert_eq!(chain[0].seq, 1);
        assert!(chain
            .windows(2)
            .all(|w| w[1].prev_hash == w[0].hash && w[1].at_ms >= w[0].at_ms));
        assert_eq!(
            chain[3].payload, r#"{"i":3,"z":[1,{"x":1,"y":2}]}"#,
            "canonical"
        );
        for e in &chain {
            assert_eq!(e.hash, e.expected_hash());
        }
        let head = chain[9].hash.clone();
        verify_chain_with_head(&chain, &head).expect("intact with head");
        verify_chain(&[]).expect("empty");
        verify_chain_with_head(&[], GENESIS_HASH).expect("empty with head");

        // Edited payload.
        let mut c = chain.clone();
        c[6].payload = r#"{"i":666}"#.into();
        let (seq, msg) = broken_at(&c);
        assert_eq!(seq, 7);
        assert_eq!(
            msg,
            "audit entry 7: hash does not match its contents (edited)"
        );

        // Edited actor, kind, time.
        for edit in 0..3 {
            let mut c = chain.clone();
            match edit {
                0 => c[2].actor = "mallory".into(),
                1 => c[2].kind = "other".into(),
                _ => c[2].at_ms += 1,
            }
            assert_eq!(broken_at(&c).0, 3);
        }

        // Edited hash.
        let mut c = chain.clone();
        c[4].hash = "f".repeat(64);
        assert_eq!(broken_at(&c).0, 5);

        // Edited contents with a recomputed hash: the next link breaks.
        let mut c = chain.clone();
        c[4].payload = r#"{"i":4}"#.into();
        c[4].hash = c[4].expected_hash();
        let (seq, msg) = broken_at(&c);
        assert_eq!(seq, 6, "{msg}");
        assert!(msg.contains("prev_hash"), "{msg}");

        // Two entries swapped.
        let mut c = chain.clone();
        c.swap(3, 4);
        let (seq, msg) = broken_at(&c);
        assert_eq!(seq, 4, "{msg}");

        // A middle entry removed.
        let mut c = chain.clone();
        c.remove(5);
        let (seq, msg) = broken_at(&c);
        assert_eq!(seq, 6, "{msg}");
        assert!(msg.contains("missing"), "{msg}");

        // Removed and the rest renumbered.
        let mut c = chain.clone();
        c.remove(5);
        for e in &mut c[5..] {
            e.seq -= 1;
        }
        assert_eq!(broken_at(&c).0, 6);

        // The first entry removed.
        assert_eq!(broken_at(&chain[1..]).0, 1);

        // Tail removed: the chain itself verifies, the head does not.
        let c = &chain[..8];
        verify_chain(c).expect("a prefix is a valid chain");
        let err = verify_chain_with_head(c, &head).expect_err("tail removal");
        assert_eq!(err.seq, 9, "{err}");
        assert!(err.to_string().contains("removed at the end"), "{err}");
        let err = verify_chain_with_head(&[], &head).expect_err("all removed");
        assert_eq!(err.seq, 1);

        // Entries of another collaboration mixed in.
        let other = store.audit("b").await.expect("audit");
        verify_chain(&other).expect("b intact");
        let mut c = chain.clone();
        c[2] = other[2].clone();
        let (seq, msg) = broken_at(&c);
        assert_eq!(seq, 3);
        assert!(msg.contains("mixed chains"), "{msg}");
        let mut c = other.clone();
        c.extend(chain[3..].iter().cloned());
        assert_eq!(broken_at(&c).0, 4);

        // Tampering in the database is caught when read back.
        sqlx::query("UPDATE audit_log SET payload = $1 WHERE collab = $2 AND seq = $3")
            .bind(r#"{"i":0}"#)
            .bind("a")
            .bind(8i64)
            .execute(store.pool())
            .await
            .expect("tamper");
        let (seq, _) = broken_at(&store.audit("a").await.expect("audit"));
        assert_eq!(seq, 8);
        sqlx::query("DELETE FROM audit_log WHERE collab = $1 AND seq = $2")
            .bind("a")
            .bind(10i64)
            .execute(store.pool())
            .await
            .expect("delete tail");
        let read = store.audit("a").await.expect("audit");
        assert_eq!(
            verify_chain_with_head(&read, &head).expect_err("tail").seq,
            8
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_never_fork_the_chain() {
    each_backend(|db| async move {
        let store = db.open().await;
        let mut tasks = Vec::new();
        for task in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    store
                        .append_audit(
                            "shared",
                            "test.append",
                            &format!("task{task}"),
                            json!({"i": i}),
                        )
                        .await
                        .expect("append");
                }
            }));
        }
        // And a second chain growing meanwhile.
        let other = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    store
                        .append_audit("other", "test.append", "hub", json!({"i": i}))
                        .await
                        .expect("append");
                }
            })
        };
        for t in tasks {
            t.await.expect("join");
        }
        other.await.expect("join");
        let chain = store.audit("shared").await.expect("audit");
        assert_eq!(chain.len(), 200);
        verify_chain(&chain).expect("one unforked chain");
        for task in 0..8 {
            let actor = format!("task{task}");
            let mine: Vec<_> = chain
                .iter()
                .filter(|e| e.actor == actor)
                .map(|e| e.payload_json().expect("json")["i"].as_i64().expect("i"))
                .collect();
            assert_eq!(
                mine,
                (0..25).collect::<Vec<_>>(),
                "{actor}'s appends in order"
            );
        }
        let other = store.audit("other").await.expect("audit");
        assert_eq!(other.len(), 10);
        verify_chain(&other).expect("other chain");
    })
    .await;
}

#[tokio::test]
async fn audit_jsonl_round_trip_and_errors() {
    each_backend(|db| async move {
        let store = db.open().await;
        let mut chain = sample_chain(&store).await;
        store
            .append_audit(
                "a",
                "odd \"text\"\n",
                "h\u{e9}",
                json!({"s": "line\nbreak \u{1F600}"}),
            )
            .await
            .expect("append");
        chain.push(store.audit("a").await.expect("audit").pop().expect("last"));
        let text = export_jsonl(&chain);
        assert_eq!(text.lines().count(), chain.len());
        assert!(text.ends_with('\n'));
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("line")).expect("a JSON object");
        assert_eq!(first["seq"], json!(1));
        let back = parse_jsonl(&text).expect("parse");
        assert_eq!(back, chain);
        verify_chain(&back).expect("still verifies");
        assert_eq!(
            parse_jsonl(&format!("{text}\n\n")).expect("blank lines"),
            chain
        );
        assert!(parse_jsonl("").expect("empty").is_empty());

        let lines: Vec<&str> = text.lines().collect();
        let mut bad = lines.clone();
        bad[2] = "{not json";
        let err = parse_jsonl(&bad.join("\n")).expect_err("bad json");
        assert!(matches!(err, StoreError::BadInput(_)), "{err}");
        assert!(err.to_string().contains("line 3"), "{err}");

        let mut extra: serde_json::Value = serde_json::from_str(lines[4]).expect("json");
        extra["signature"] = json!("x");
        let mut bad = lines.clone();
        let extra = extra.to_string();
        bad[4] = &extra;
        let err = parse_jsonl(&bad.join("\n")).expect_err("unknown field");
        assert!(err.to_string().contains("line 5"), "{err}");
        assert!(err.to_string().contains("signature"), "{err}");

        let mut missing: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
        missing.as_object_mut().expect("object").remove("hash");
        let mut bad = lines.clone();
        let missing = missing.to_string();
        bad[1] = &missing;
        let err = parse_jsonl(&bad.join("\n")).expect_err("missing field");
        assert!(err.to_string().contains("line 2"), "{err}");

        // A tampered export is caught after parsing.
        let tampered = text.replacen(r#"\"i\":2"#, r#"\"i\":9"#, 1);
        assert_ne!(tampered, text);
        let err = verify_chain(&parse_jsonl(&tampered).expect("parse")).expect_err("tampered");
        assert_eq!(err.seq, 3);
    })
    .await;
}

#[tokio::test]
async fn bad_inputs_are_refused_alike() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let refuse = |r: Result<_, StoreError>| match r {
            Err(StoreError::BadInput(_)) => {}
            Err(other) => panic!("expected BadInput, got {other}"),
            Ok(_) => panic!("expected BadInput, got Ok"),
        };
        refuse(
            store
                .submit_query("demo", "alice", "SELECT '\0'")
                .await
                .map(|_| ()),
        );
        refuse(store.submit_query("demo", "", "SELECT 1").await.map(|_| ()));
        refuse(
            store
                .create_collaboration("", "id", "", "a")
                .await
                .map(|_| ()),
        );
        refuse(
            store
                .append_audit("demo", "k\0", "a", json!({}))
                .await
                .map(|_| ()),
        );
        let q = store
            .submit_query("demo", "alice", "SELECT 1")
            .await
            .expect("submit");
        refuse(
            store
                .transition(&q.id, QueryState::Failed, Some("\0"))
                .await
                .map(|_| ()),
        );
        store
            .transition(&q.id, QueryState::Checked, None)
            .await
            .expect("check");
        store
            .transition(&q.id, QueryState::Running, None)
            .await
            .expect("run");
        refuse(store.release(&q.id, b"", -1).await.map(|_| ()));
        // An empty result is a result.
        store.release(&q.id, b"", 0).await.expect("release empty");
        assert_eq!(store.result(&q.id).await.expect("result"), Some(Vec::new()));
        // A payload with NUL is fine: JSON escapes it.
        store
            .append_audit("demo", "k", "a", json!({"s": "\0"}))
            .await
            .expect("escaped NUL");
        verify_chain(&store.audit("demo").await.expect("audit")).expect("chain");
    })
    .await;
}

/// The hub awaits these in spawned tasks and axum handlers: they must be `Send`.
#[allow(dead_code)]
fn futures_are_send(store: &Store) {
    fn send<T: Send>(_: T) {}
    send(Store::open("sqlite:x"));
    send(store.create_token("m", None));
    send(store.authenticate("t", 0));
    send(store.revoke_token("i"));
    send(store.create_collaboration("n", "i", "t", "m"));
    send(store.apply_collaboration("n", "t", "m"));
    send(store.collaboration("n"));
    send(store.collaborations());
    send(store.collaboration_versions("n"));
    send(store.submit_query("c", "m", "s"));
    send(store.transition("i", QueryState::Checked, None));
    send(store.release("i", b"", 0));
    send(store.query("i"));
    send(store.queries("c"));
    send(store.result("i"));
    send(store.fail_interrupted());
    send(store.append_audit("c", "k", "a", json!({})));
    send(store.audit("c"));
    let budget = airlock_store::Budget {
        epsilon: 1.0,
        delta: 0.0,
        refresh_period_ms: None,
    };
    send(store.set_budget("c", None, &budget, "m"));
    let cost = airlock_store::Cost {
        epsilon: 1.0,
        delta: 0.0,
    };
    send(store.debit("c", "a", "q", &cost, 0));
    send(store.remaining("c", None, 0));
}

#[tokio::test]
async fn approvals_are_kept_per_text_replaced_by_a_later_decision_and_audited() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let rec = store
            .collaboration("demo")
            .await
            .expect("read")
            .expect("demo");
        let mut a = airlock_store::ApprovalRecord {
            collab: "demo".into(),
            sha256: rec.sha256.clone(),
            member: "alice".into(),
            version: 1,
            approved: false,
            signature: String::new(),
            reason: "k too low".into(),
            at_ms: 1,
        };
        store.record_approval(&a).await.expect("refuse");
        a.approved = true;
        a.signature = "ab".repeat(64);
        a.reason = String::new();
        a.at_ms = 2;
        store.record_approval(&a).await.expect("approve");
        let kept = store.approvals("demo").await.expect("list");
        assert_eq!(kept, vec![a.clone()], "one decision per member and text");
        let kinds: Vec<String> = store
            .audit("demo")
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(kinds.contains(&"collaboration.refused".to_string()));
        assert!(kinds.contains(&"collaboration.approved".to_string()));
        a.reason = "nul\0".into();
        assert!(store.record_approval(&a).await.is_err(), "NUL refused");
        verify_chain(&store.audit("demo").await.expect("audit")).expect("chain intact");
    })
    .await;
}
