//! Policy sync alone ([`Hub::sync`]), without sockets: an admin double
//! answers for each member's node (the schemas a real node reports, whether
//! it holds the secret, or a refusal) and records every call, and an audit
//! double records the chain.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use airlock_hub::{AuditLog, Hub, NodeAdmin, NodeFailure, SyncError, Version};
use airlock_node::Node;
use airlock_policy::QuerySpec;
use airlock_protocol::admin::{
    Hello, Install, Installed, SealedSecrets, SecretGenerate, SecretInstall,
};
use airlock_protocol::{AuditEvent, Message};
use futures::future::BoxFuture;

mod common;

use common::{collab, write_data, BY_CATEGORY};

/// The nodes as the admin port sees them.
struct Admin {
    /// Each member's tables' schemas, as its node reports them.
    schemas: BTreeMap<String, BTreeMap<String, Message>>,
    /// Members whose node already holds the secret.
    holding: HashSet<&'static str>,
    /// A node that refuses the version, with its (private) reason.
    refusing: Option<(&'static str, &'static str)>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Admin {
    fn push(&self, line: String) {
        self.log.lock().expect("log").push(line);
    }
}

impl NodeAdmin for Admin {
    fn hello<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Hello, NodeFailure>> {
        self.push(format!("hello {member}"));
        Box::pin(async move {
            Ok(Hello {
                member: member.to_string(),
                x25519: format!("x25519-of-{member}"),
                fingerprint: String::new(),
                member_key: None,
                collaborations: Vec::new(),
            })
        })
    }

    fn install<'a>(
        &'a self,
        member: &'a str,
        install: &'a Install,
    ) -> BoxFuture<'a, Result<Installed, NodeFailure>> {
        self.push(format!(
            "install {member} v{} signed by {:?}",
            install.version,
            install.approvals.keys().collect::<Vec<_>>()
        ));
        Box::pin(async move {
            if let Some((m, why)) = self.refusing {
                if m == member {
                    return Err(NodeFailure::Failed(why.to_string()));
                }
            }
            Ok(Installed {
                id: "c1".into(),
                version: install.version,
                schemas: self.schemas[member].clone(),
                has_secret: self.holding.contains(member),
            })
        })
    }

    fn seal_secret<'a>(
        &'a self,
        member: &'a str,
        request: &'a SecretGenerate,
    ) -> BoxFuture<'a, Result<SealedSecrets, NodeFailure>> {
        let to: Vec<String> = request
            .recipients
            .iter()
            .map(|r| format!("{}:{}", r.member, r.x25519))
            .collect();
        self.push(format!("seal by {member} to {to:?}"));
        let sealed = request
            .recipients
            .iter()
            .map(|r| (r.member.clone(), Message(r.member.as_bytes().to_vec())))
            .collect();
        Box::pin(async move { Ok(SealedSecrets { sealed }) })
    }

    fn open_secret<'a>(
        &'a self,
        member: &'a str,
        request: &'a SecretInstall,
    ) -> BoxFuture<'a, Result<(), NodeFailure>> {
        assert_eq!(
            request.sealed.0,
            member.as_bytes(),
            "each blob to its own node"
        );
        self.push(format!("open {member} from {}", request.from));
        Box::pin(async { Ok(()) })
    }
}

struct Chain {
    log: Arc<Mutex<Vec<String>>>,
}

impl AuditLog for Chain {
    fn audit<'a>(
        &'a self,
        collab: &'a str,
        event: AuditEvent,
    ) -> BoxFuture<'a, Result<(), String>> {
        let (kind, payload) = (event.kind(), event.payload());
        self.log
            .lock()
            .expect("log")
            .push(format!("audit {collab} {} {payload}", kind.as_str()));
        Box::pin(async { Ok(()) })
    }
}

/// An admin double over real nodes' schemas.
async fn admin(holding: &[&'static str], refusing: Option<(&'static str, &'static str)>) -> Admin {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_data(tmp.path());
    let mut schemas = BTreeMap::new();
    for member in ["publisher", "advertiser"] {
        let node = Node::open(&collab(3, false), tmp.path(), member)
            .await
            .expect("node");
        let mut frames = BTreeMap::new();
        for (table, schema) in node.table_schemas() {
            let bytes = airlock_protocol::wire::encode_batches(schema, &[]).expect("frame");
            frames.insert(table.clone(), Message(bytes));
        }
        schemas.insert(member.to_string(), frames);
    }
    Admin {
        schemas,
        holding: holding.iter().copied().collect(),
        refusing,
        log: Arc::new(Mutex::new(Vec::new())),
    }
}

async fn sync(admin: &Admin) -> Result<Hub, Vec<SyncError>> {
    let version = Version {
        name: "hubtest",
        version: 4,
        toml: "(the approved text)",
        applied_by: "advertiser",
        approvals: BTreeMap::from([
            ("advertiser".to_string(), "sig-a".to_string()),
            ("publisher".to_string(), "sig-p".to_string()),
        ]),
    };
    let chain = Chain {
        log: admin.log.clone(),
    };
    Hub::sync(
        collab(3, false),
        version,
        admin,
        &chain,
        airlock_guard::Limits::default(),
        64 << 20,
    )
    .await
}

fn logged(a: &Admin) -> Vec<String> {
    let mut log = a.log.lock().expect("log").clone();
    // The installs go out in parallel.
    let installs = log.iter().take_while(|l| l.starts_with("install ")).count();
    log[..installs].sort();
    log
}

#[tokio::test]
async fn every_node_takes_the_signed_version_then_the_secret_is_sealed_from_a_holder_to_the_rest() {
    let a = admin(&["publisher"], None).await;
    let hub = sync(&a).await.expect("synced");
    assert_eq!(
        logged(&a),
        vec![
            r#"install advertiser v4 signed by ["advertiser", "publisher"]"#,
            r#"install publisher v4 signed by ["advertiser", "publisher"]"#,
            r#"audit hubtest policy.synced {"version":4,"nodes":["publisher","advertiser"]}"#,
            "hello advertiser",
            r#"seal by publisher to ["advertiser:x25519-of-advertiser"]"#,
            "open advertiser from publisher",
            r#"audit hubtest secret.distributed {"generated_by":"publisher","sealed_to":["advertiser"]}"#,
        ]
    );
    // The hub is built over the schemas the nodes reported.
    hub.prepare("advertiser", &QuerySpec::sql(BY_CATEGORY))
        .await
        .expect("a query over both tables is accepted");
}

#[tokio::test]
async fn with_no_holder_the_first_provider_makes_the_secret_and_with_every_holder_nothing_is_relayed(
) {
    let a = admin(&[], None).await;
    sync(&a).await.expect("synced");
    let log = logged(&a);
    assert_eq!(
        log[3..],
        [
            "hello advertiser".to_string(),
            r#"seal by publisher to ["advertiser:x25519-of-advertiser"]"#.to_string(),
            "open advertiser from publisher".to_string(),
            r#"audit hubtest secret.distributed {"generated_by":"publisher","sealed_to":["advertiser"]}"#
                .to_string(),
        ]
    );

    let a = admin(&["publisher", "advertiser"], None).await;
    sync(&a).await.expect("synced");
    assert_eq!(logged(&a).len(), 3, "{:?}", logged(&a));
}

#[tokio::test]
async fn a_refusing_node_stops_the_version_and_only_its_member_reads_why() {
    let a = admin(
        &["publisher"],
        Some(("publisher", "/data/crm.csv: no such file")),
    )
    .await;
    let Err(errors) = sync(&a).await else {
        panic!("synced")
    };
    let log = logged(&a);
    assert_eq!(
        log[2],
        r#"audit hubtest policy.sync_failed {"version":4,"errors":["the node of 'publisher' did not take version 4 (its member is shown why)"]}"#
    );
    assert_eq!(log.len(), 3, "no secret is relayed: {log:?}");
    assert_eq!(
        SyncError::visible(&errors, "publisher"),
        vec!["the node of 'publisher' did not take version 4: /data/crm.csv: no such file"]
    );
    let others = SyncError::visible(&errors, "advertiser");
    assert_eq!(
        others,
        vec!["the node of 'publisher' did not take version 4 (its member is shown why)"]
    );
    assert!(!others[0].contains("crm.csv"));
}

#[tokio::test]
async fn an_unreadable_schema_stops_the_version() {
    let mut a = admin(&["publisher"], None).await;
    a.schemas
        .get_mut("publisher")
        .expect("publisher")
        .values_mut()
        .for_each(|m| *m = Message(b"not arrow".to_vec()));
    let Err(errors) = sync(&a).await else {
        panic!("synced")
    };
    assert_eq!(
        SyncError::visible(&errors, "advertiser"),
        vec!["the node of 'publisher' sent an unreadable schema"]
    );
}
