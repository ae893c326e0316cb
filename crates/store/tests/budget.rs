//! The privacy-budget ledger against both backends (see `common`): exact
//! arithmetic, scopes, refresh periods, concurrent debits, durability, bad
//! costs, and the upgrade of a schema-version-1 store.

mod common;

use std::sync::Arc;

use airlock_store::{now_ms, verify_chain, Budget, Cost, Remaining, Store, StoreError};
use common::{count, each_backend, store_with_collab};
use sqlx::Connection;

const HOUR_MS: i64 = 3_600_000;

fn budget(epsilon: f64, delta: f64, refresh_period_ms: Option<i64>) -> Budget {
    Budget {
        epsilon,
        delta,
        refresh_period_ms,
    }
}

fn cost(epsilon: f64, delta: f64) -> Cost {
    Cost { epsilon, delta }
}

/// The sum of the recorded debits' nano-epsilon in `collab`.
async fn debited_nano_epsilon(store: &Store, collab: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(nano_epsilon), 0) AS BIGINT) FROM privacy_debits \
         WHERE collab = $1",
    )
    .bind(collab)
    .fetch_one(store.pool())
    .await
    .expect("sum debits")
}

async fn audit_kinds(store: &Store, collab: &str) -> Vec<String> {
    let audit = store.audit(collab).await.expect("audit");
    verify_chain(&audit).expect("chain intact");
    audit.into_iter().map(|e| e.kind).collect()
}

fn expect_overspend(r: Result<Remaining, StoreError>) -> (f64, f64, f64, f64, &'static str) {
    match r {
        Err(StoreError::Overspend {
            needed_epsilon,
            left_epsilon,
            needed_delta,
            left_delta,
            scope,
        }) => (
            needed_epsilon,
            left_epsilon,
            needed_delta,
            left_delta,
            scope,
        ),
        other => panic!("expected Overspend, got {other:?}"),
    }
}

fn expect_bad_input<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::BadInput(m)) => m,
        other => panic!("expected BadInput, got {other:?}"),
    }
}

#[tokio::test]
async fn debits_are_exact_and_refused_when_spent() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let now = now_ms();
        let msg = expect_bad_input(store.debit("demo", "bob", "q0", &cost(1.0, 0.0), now).await);
        assert!(
            msg.contains("no privacy budget is set for collaboration"),
            "{msg}"
        );
        expect_bad_input(store.remaining("demo", None, now).await);

        store
            .set_budget("demo", None, &budget(3.0, 1e-5, None), "alice")
            .await
            .expect("set budget");
        for (i, left) in [2.0, 1.0, 0.0].into_iter().enumerate() {
            let r = store
                .debit("demo", "bob", &format!("q{i}"), &cost(1.0, 1e-6), now)
                .await
                .expect("debit fits");
            assert_eq!(r.epsilon, left);
            assert_eq!(r.period_ends_ms, None);
        }
        let r = store
            .debit("demo", "bob", "q3", &cost(1.0, 1e-6), now)
            .await;
        let err = r.clone().expect_err("spent");
        assert_eq!(
            err.to_string(),
            "the query needs epsilon 1.000 and the collaboration's budget has 0.000 left"
        );
        let (needed, left, needed_delta, left_delta, scope) = expect_overspend(r);
        assert_eq!((needed, left, scope), (1.0, 0.0, "collaboration"));
        assert_eq!(needed_delta, 1e-6);
        assert!((left_delta - 7e-6).abs() < 1e-18, "{left_delta}");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM privacy_debits").await,
            3
        );
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 3_000_000_000);
        let r = store.remaining("demo", None, now).await.expect("remaining");
        assert_eq!(r.epsilon, 0.0);

        // Ten debits of 0.1 spend exactly 1.0: no float drift.
        store
            .create_collaboration("tenths", "c-2", "name = 'tenths'\n", "alice")
            .await
            .expect("create");
        store
            .set_budget("tenths", None, &budget(1.0, 0.0, None), "alice")
            .await
            .expect("set budget");
        for i in 0..10 {
            store
                .debit("tenths", "bob", &format!("t{i}"), &cost(0.1, 0.0), now)
                .await
                .expect("a tenth fits");
        }
        let r = store
            .remaining("tenths", None, now)
            .await
            .expect("remaining");
        assert_eq!((r.epsilon, r.delta), (0.0, 0.0));
        expect_overspend(
            store
                .debit("tenths", "bob", "t10", &cost(1e-9, 0.0), now)
                .await,
        );

        let kinds = audit_kinds(&store, "demo").await;
        assert_eq!(
            kinds,
            [
                "collaboration.created",
                "budget.set",
                "budget.debited",
                "budget.debited",
                "budget.debited"
            ]
        );
        let audit = store.audit("demo").await.expect("audit");
        let payload: serde_json::Value = serde_json::from_str(&audit[2].payload).expect("payload");
        assert_eq!(payload["query"], "q0");
        assert_eq!(payload["nano_epsilon"], 1_000_000_000);
        assert_eq!(payload["atto_delta"], 1_000_000_000_000_i64);
        assert_eq!(audit[2].actor, "bob");
    })
    .await;
}

#[tokio::test]
async fn delta_is_budgeted() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let now = now_ms();
        store
            .set_budget("demo", None, &budget(10.0, 1e-6, None), "alice")
            .await
            .expect("set budget");
        store
            .debit("demo", "bob", "q1", &cost(1.0, 6e-7), now)
            .await
            .expect("fits");
        let r = store
            .debit("demo", "bob", "q2", &cost(1.0, 6e-7), now)
            .await;
        let err = r.clone().expect_err("delta spent");
        assert!(err.to_string().contains("needs delta"), "{err}");
        let (needed, left, needed_delta, left_delta, scope) = expect_overspend(r);
        assert_eq!((needed, left, scope), (1.0, 9.0, "collaboration"));
        assert_eq!(needed_delta, 6e-7);
        assert!((left_delta - 4e-7).abs() < 1e-18, "{left_delta}");
        // A pure-epsilon query still fits.
        let r = store
            .debit("demo", "bob", "q3", &cost(1.0, 0.0), now)
            .await
            .expect("fits");
        assert_eq!(r.epsilon, 8.0);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM privacy_debits").await,
            2
        );
    })
    .await;
}

#[tokio::test]
async fn analyst_and_collaboration_scopes() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let now = now_ms();
        assert!(matches!(
            store
                .set_budget("nope", None, &budget(1.0, 0.0, None), "alice")
                .await,
            Err(StoreError::NotFound(_))
        ));
        store
            .set_budget("demo", None, &budget(10.0, 0.0, None), "alice")
            .await
            .expect("collaboration budget");
        store
            .set_budget("demo", Some("bob"), &budget(2.0, 0.0, None), "alice")
            .await
            .expect("bob's budget");
        let r = store
            .remaining("demo", Some("bob"), now)
            .await
            .expect("bob");
        assert_eq!(r.epsilon, 2.0);
        let r = store
            .remaining("demo", Some("carol"), now)
            .await
            .expect("carol");
        assert_eq!(r.epsilon, 10.0, "carol has no budget of her own");

        let r = store
            .debit("demo", "bob", "b1", &cost(1.5, 0.0), now)
            .await
            .expect("fits");
        assert_eq!(r.epsilon, 0.5, "bob's own budget is the tighter");
        let r = store.debit("demo", "bob", "b2", &cost(1.0, 0.0), now).await;
        assert_eq!(
            r.clone().expect_err("bob is spent").to_string(),
            "the query needs epsilon 1.000 and the analyst's budget has 0.500 left"
        );
        let (needed, left, _, _, scope) = expect_overspend(r);
        assert_eq!((needed, left, scope), (1.0, 0.5, "analyst"));

        // Carol spends the rest of the collaboration's budget: 8.5.
        let r = store
            .debit("demo", "carol", "c1", &cost(8.5, 0.0), now)
            .await
            .expect("fits");
        assert_eq!(r.epsilon, 0.0);
        let r = store.remaining("demo", None, now).await.expect("collab");
        assert_eq!(r.epsilon, 0.0);
        // Bob has 0.5 of his own, but the collaboration has nothing left.
        let (needed, left, _, _, scope) =
            expect_overspend(store.debit("demo", "bob", "b3", &cost(0.5, 0.0), now).await);
        assert_eq!((needed, left, scope), (0.5, 0.0, "collaboration"));
        let r = store
            .remaining("demo", Some("bob"), now)
            .await
            .expect("bob");
        assert_eq!(r.epsilon, 0.0);
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 10_000_000_000);

        let kinds = audit_kinds(&store, "demo").await;
        assert_eq!(kinds.iter().filter(|k| *k == "budget.set").count(), 2);
        assert_eq!(kinds.iter().filter(|k| *k == "budget.debited").count(), 2);
        let audit = store.audit("demo").await.expect("audit");
        let set: serde_json::Value = serde_json::from_str(&audit[2].payload).expect("payload");
        assert_eq!(set["analyst"], "bob");
        assert_eq!(set["nano_epsilon"], 2_000_000_000_i64);
    })
    .await;
}

#[tokio::test]
async fn budgets_refresh_every_period() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        store
            .set_budget("demo", None, &budget(2.0, 0.0, Some(HOUR_MS)), "alice")
            .await
            .expect("set budget");
        let t0 = now_ms();
        let r = store.remaining("demo", None, t0).await.expect("remaining");
        assert_eq!(r.epsilon, 2.0);
        let end = r.period_ends_ms.expect("a period end");
        assert!(end > t0 && end <= t0 + HOUR_MS, "{end} vs {t0}");

        // Spend it all in the first period.
        let r = store
            .debit("demo", "bob", "q1", &cost(2.0, 0.0), end - 1)
            .await
            .expect("fits");
        assert_eq!((r.epsilon, r.period_ends_ms), (0.0, Some(end)));
        expect_overspend(
            store
                .debit("demo", "bob", "q2", &cost(1.0, 0.0), end - 1)
                .await,
        );

        // The next period starts fresh: the old debit no longer counts.
        let r = store.remaining("demo", None, end).await.expect("remaining");
        assert_eq!((r.epsilon, r.period_ends_ms), (2.0, Some(end + HOUR_MS)));
        let r = store
            .debit("demo", "bob", "q3", &cost(1.5, 0.0), end + 10)
            .await
            .expect("fits the new period");
        assert_eq!((r.epsilon, r.period_ends_ms), (0.5, Some(end + HOUR_MS)));
        expect_overspend(
            store
                .debit("demo", "bob", "q4", &cost(1.0, 0.0), end + HOUR_MS - 1)
                .await,
        );
        // Many periods later, all fresh again.
        let later = end + 5 * HOUR_MS + 7;
        let r = store
            .remaining("demo", None, later)
            .await
            .expect("remaining");
        assert_eq!(
            (r.epsilon, r.period_ends_ms),
            (2.0, Some(end + 6 * HOUR_MS))
        );
        // Looking back, the old periods still show what they spent.
        let r = store
            .remaining("demo", None, end - 1)
            .await
            .expect("remaining");
        assert_eq!(r.epsilon, 0.0, "debits in later periods count too");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM privacy_debits").await,
            2
        );

        // An analyst's budget refreshes on its own period; the
        // collaboration's (here without a period) does not.
        store
            .create_collaboration("mixed", "c-2", "name = 'mixed'\n", "alice")
            .await
            .expect("create");
        store
            .set_budget("mixed", None, &budget(3.0, 0.0, None), "alice")
            .await
            .expect("set");
        store
            .set_budget(
                "mixed",
                Some("bob"),
                &budget(1.0, 0.0, Some(HOUR_MS)),
                "alice",
            )
            .await
            .expect("set");
        let t = now_ms();
        let end = store
            .remaining("mixed", Some("bob"), t)
            .await
            .expect("remaining")
            .period_ends_ms
            .expect("bob's period end");
        for (i, at) in [t, end, end + HOUR_MS].into_iter().enumerate() {
            store
                .debit("mixed", "bob", &format!("m{i}"), &cost(1.0, 0.0), at)
                .await
                .expect("one per period");
            let (_, _, _, _, scope) = expect_overspend(
                store
                    .debit("mixed", "bob", &format!("x{i}"), &cost(1.0, 0.0), at)
                    .await,
            );
            let expected = if i < 2 { "analyst" } else { "collaboration" };
            assert_eq!(scope, expected, "period {i}");
        }
        let r = store
            .remaining("mixed", None, end + 9 * HOUR_MS)
            .await
            .expect("remaining");
        assert_eq!((r.epsilon, r.period_ends_ms), (0.0, None));
    })
    .await;
}

#[tokio::test]
async fn replacing_a_budget_keeps_what_was_spent() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        store
            .set_budget("demo", None, &budget(1.0, 0.0, None), "alice")
            .await
            .expect("set");
        let t = now_ms();
        store
            .debit("demo", "bob", "q1", &cost(1.0, 0.0), t)
            .await
            .expect("fits");
        expect_overspend(store.debit("demo", "bob", "q2", &cost(1.0, 0.0), t).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store
            .set_budget("demo", None, &budget(4.0, 0.0, None), "alice")
            .await
            .expect("replace");
        let r = store.remaining("demo", None, now_ms()).await.expect("left");
        // The period still starts when the budget was first set: raising
        // the budget adds to it, and never refunds what was spent.
        assert_eq!(r.epsilon, 3.0);
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 1_000_000_000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_debits_never_overspend() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        store
            .set_budget("demo", None, &budget(5.0, 0.0, None), "alice")
            .await
            .expect("set budget");
        let now = now_ms();
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .debit(
                        "demo",
                        &format!("analyst{}", i % 3),
                        &format!("q{i}"),
                        &cost(1.0, 0.0),
                        now,
                    )
                    .await
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for task in tasks {
            match task.await.expect("join") {
                Ok(_) => ok += 1,
                Err(StoreError::Overspend {
                    needed_epsilon,
                    left_epsilon,
                    scope,
                    ..
                }) => {
                    assert_eq!(
                        (needed_epsilon, left_epsilon, scope),
                        (1.0, 0.0, "collaboration")
                    );
                    refused += 1;
                }
                Err(other) => panic!("unexpected: {other}"),
            }
        }
        assert_eq!((ok, refused), (5, 11));
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM privacy_debits").await,
            5
        );
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 5_000_000_000);
        let r = store.remaining("demo", None, now).await.expect("remaining");
        assert_eq!(r.epsilon, 0.0);
        let kinds = audit_kinds(&store, "demo").await;
        assert_eq!(kinds.iter().filter(|k| *k == "budget.debited").count(), 5);
    })
    .await;
}

#[tokio::test]
async fn debits_survive_reopening() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        store
            .set_budget("demo", None, &budget(3.0, 0.0, None), "alice")
            .await
            .expect("set budget");
        let now = now_ms();
        store
            .debit("demo", "bob", "q1", &cost(2.5, 0.0), now)
            .await
            .expect("fits");
        store.close().await;
        drop(store);

        let store = db.open().await;
        let r = store.remaining("demo", None, now).await.expect("remaining");
        assert_eq!(r.epsilon, 0.5);
        expect_overspend(store.debit("demo", "bob", "q2", &cost(1.0, 0.0), now).await);
        store
            .debit("demo", "bob", "q3", &cost(0.5, 0.0), now)
            .await
            .expect("the rest fits");
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 3_000_000_000);
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn bad_costs_and_budgets_are_refused_and_record_nothing() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        store
            .set_budget("demo", None, &budget(100.0, 0.5, None), "alice")
            .await
            .expect("set budget");
        let now = now_ms();
        let bad_costs = [
            cost(f64::NAN, 0.0),
            cost(-1.0, 0.0),
            cost(f64::INFINITY, 0.0),
            cost(0.0, 0.0),
            cost(-0.0, 0.0),
            cost(1e-12, 0.0),
            cost(1.0, f64::NAN),
            cost(1.0, -1e-9),
            cost(1.0, f64::INFINITY),
            cost(1.0, 1.5),
        ];
        for c in &bad_costs {
            let msg = expect_bad_input(store.debit("demo", "bob", "q", c, now).await);
            assert!(!msg.contains("NaN") && !msg.contains("inf"), "{msg}");
        }
        expect_bad_input(store.debit("demo", "", "q", &cost(1.0, 0.0), now).await);
        expect_bad_input(store.debit("demo", "bob", "", &cost(1.0, 0.0), now).await);
        expect_bad_input(store.debit("demo", "b\0b", "q", &cost(1.0, 0.0), now).await);
        for b in [
            budget(f64::NAN, 0.0, None),
            budget(-1.0, 0.0, None),
            budget(f64::INFINITY, 0.0, None),
            budget(1.0, 2.0, None),
            budget(1.0, 0.0, Some(0)),
            budget(1.0, 0.0, Some(-5)),
        ] {
            expect_bad_input(store.set_budget("demo", None, &b, "alice").await);
        }
        expect_bad_input(
            store
                .set_budget("demo", Some(""), &budget(1.0, 0.0, None), "alice")
                .await,
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM privacy_debits").await,
            0
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM privacy_budgets").await,
            1
        );
        assert_eq!(
            audit_kinds(&store, "demo").await,
            ["collaboration.created", "budget.set"]
        );
        let r = store.remaining("demo", None, now).await.expect("remaining");
        assert_eq!((r.epsilon, r.delta), (100.0, 0.5));
    })
    .await;
}

/// The statements of a migration file, split the way the store does.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_owned());
            current.clear();
        }
    }
    out
}

#[tokio::test]
async fn a_version_1_store_upgrades_and_keeps_its_data() {
    each_backend(|db| async move {
        // Build a store as a schema-version-1 hub left it, by hand.
        let url = if db.url.starts_with("sqlite:") {
            format!("{}?mode=rwc", db.url)
        } else {
            db.url.clone()
        };
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
        let mut stmts = vec![
            "CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, \
             name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)"
                .to_owned(),
        ];
        stmts.extend(statements(include_str!("../migrations/0001_initial.sql")));
        stmts.extend([
            "INSERT INTO schema_migrations VALUES (1, 'initial schema', 1000)".to_owned(),
            "INSERT INTO collaborations VALUES ('demo', 'c-1', 1, 1000)".to_owned(),
            "INSERT INTO collaboration_versions VALUES \
             ('demo', 1, 'name = ''demo''', 'abc', 'alice', 1000)"
                .to_owned(),
            "INSERT INTO queries (id, collab, member, sql_text, state, created_at_ms, \
             updated_at_ms) VALUES ('q-old', 'demo', 'bob', 'SELECT 1', 'checked', 1000, 1000)"
                .to_owned(),
        ]);
        for stmt in &stmts {
            sqlx::query(stmt)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
        conn.close().await.expect("close");

        let store = db.open().await;
        let applied: Vec<(i64, i64)> =
            sqlx::query_as("SELECT version, applied_at_ms FROM schema_migrations ORDER BY version")
                .fetch_all(store.pool())
                .await
                .expect("schema_migrations");
        assert_eq!(applied.len(), 4);
        assert_eq!(applied[0], (1, 1000), "version 1 kept, not rerun");
        assert_eq!(applied[1].0, 2);
        assert_eq!(applied[2].0, 3);
        assert_eq!(applied[3].0, 4);
        let collab = store
            .collaboration("demo")
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(
            (collab.id.as_str(), collab.toml.as_str()),
            ("c-1", "name = 'demo'")
        );
        let q = store.query("q-old").await.expect("read").expect("kept");
        assert_eq!((q.member.as_str(), q.sql.as_str()), ("bob", "SELECT 1"));

        store
            .set_budget("demo", None, &budget(1.0, 0.0, None), "alice")
            .await
            .expect("budgets work after the upgrade");
        store
            .debit("demo", "bob", "q-old", &cost(1.0, 0.0), now_ms())
            .await
            .expect("debit");
        store.close().await;

        // Reopening again runs nothing.
        let store = db.open().await;
        let again: Vec<(i64, i64)> =
            sqlx::query_as("SELECT version, applied_at_ms FROM schema_migrations ORDER BY version")
                .fetch_all(store.pool())
                .await
                .expect("schema_migrations");
        assert_eq!(again, applied);
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 1_000_000_000);
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_nodes_fragment_debits_charge_a_query_once_and_refuse_a_replay() {
    each_backend(|db| async move {
        let store = store_with_collab(&db).await;
        let now = now_ms();
        store
            .set_budget("demo", None, &budget(2.0, 0.0, None), "alice")
            .await
            .expect("set budget");
        // Two tables of one query on this ledger: one debit.
        assert!(store
            .debit_fragment("demo", "bob", "q1", "audience", &cost(1.0, 0.0), now)
            .await
            .expect("first"));
        assert!(!store
            .debit_fragment("demo", "bob", "q1", "visits", &cost(1.0, 0.0), now)
            .await
            .expect("second table"));
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 1_000_000_000);
        // The same table again under the same query: a replay, refused.
        match store
            .debit_fragment("demo", "bob", "q1", "audience", &cost(1.0, 0.0), now)
            .await
        {
            Err(StoreError::Conflict(_)) => {}
            other => panic!("expected a replay refusal, got {other:?}"),
        }
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 1_000_000_000);
        // A new query is charged, and the budget refuses the third.
        store
            .debit_fragment("demo", "bob", "q2", "audience", &cost(1.0, 0.0), now)
            .await
            .expect("q2");
        match store
            .debit_fragment("demo", "bob", "q3", "audience", &cost(1.0, 0.0), now)
            .await
        {
            Err(StoreError::Overspend { .. }) => {}
            other => panic!("expected an overspend refusal, got {other:?}"),
        }
        assert_eq!(debited_nano_epsilon(&store, "demo").await, 2_000_000_000);
        assert_eq!(
            store
                .remaining("demo", None, now)
                .await
                .expect("left")
                .epsilon,
            0.0
        );
        expect_bad_input(
            store
                .debit_fragment("demo", "bob", "q4", "", &cost(1.0, 0.0), now)
                .await,
        );
    })
    .await;
}
