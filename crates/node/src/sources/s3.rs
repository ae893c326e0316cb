//! Objects in S3 or an S3-compatible store (`object_store`'s S3 client,
//! the version DataFusion uses): one object or every object under a prefix,
//! read in place in Parquet, CSV or JSON, with the same pushdown as local
//! files (Parquet fetches only the byte ranges of the projected columns and
//! of the row groups the filters keep).
//!
//! Each dataset gets a store of its own, registered under a URL that names
//! the dataset's place in the catalog, not its bucket, so two datasets in
//! buckets of the same name at two endpoints (or with two accounts) do not
//! share a client, and no engine message carries the bucket.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use object_store::aws::AmazonS3Builder;

use super::{listing_table, OpenError, Source};
use crate::catalog::{DatasetFormat, S3Credentials};

/// A dataset of objects in an S3-compatible store.
#[derive(Debug, Clone)]
pub struct S3Source {
    /// The store's registration key (`s3://airlock-N`): unique per dataset
    /// within one node's session.
    key: String,
    prefix: String,
    format: DatasetFormat,
    store: S3Store,
}

/// The fields of an `s3` catalog entry.
#[derive(Debug, Clone)]
pub struct S3Settings<'a> {
    /// The bucket.
    pub bucket: &'a str,
    /// Object key or prefix.
    pub prefix: &'a str,
    /// The objects' format.
    pub format: DatasetFormat,
    /// Service URL.
    pub endpoint: Option<&'a str>,
    /// Region.
    pub region: Option<&'a str>,
    /// Whether `http://` may be used.
    pub allow_http: bool,
    /// Where the credentials come from.
    pub credentials: &'a S3Credentials,
}

/// How to reach one bucket: the client settings an `s3` entry and a
/// `delta` entry in object storage share.
#[derive(Debug, Clone)]
pub(crate) struct S3Store {
    bucket: String,
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: bool,
    credentials: S3Credentials,
    /// Credential files are read against this directory.
    config_dir: std::path::PathBuf,
}

/// The registration key of dataset `index`'s store: it names the
/// dataset's place in the catalog, not its bucket.
pub(crate) fn store_key(index: usize) -> String {
    format!("s3://airlock-dataset-{index}")
}

impl S3Source {
    /// The source of one catalog entry; `index` makes its store's key
    /// unique in the node's session.
    pub fn new(index: usize, s: S3Settings<'_>, config_dir: &std::path::Path) -> Self {
        S3Source {
            key: store_key(index),
            prefix: s.prefix.trim_start_matches('/').to_string(),
            format: s.format,
            store: S3Store::new(&s, config_dir),
        }
    }

    async fn listing(&self, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>, OpenError> {
        let store = self.store.build()?;
        let key = ObjectStoreUrl::parse(&self.key)
            .map_err(|e| OpenError::new("its S3 settings are not valid", e.to_string()))?;
        ctx.register_object_store(key.as_ref(), Arc::new(store));
        let url = ListingTableUrl::parse(format!("{}/{}", self.key, self.prefix))
            .map_err(|e| OpenError::new("its prefix is not a valid object key", e.to_string()))?;
        listing_table(ctx, url, self.format).await
    }
}

impl S3Store {
    /// The client settings of `s`.
    pub(crate) fn new(s: &S3Settings<'_>, config_dir: &std::path::Path) -> Self {
        S3Store {
            bucket: s.bucket.to_string(),
            endpoint: s.endpoint.map(str::to_string),
            region: s.region.map(str::to_string),
            allow_http: s.allow_http,
            credentials: s.credentials.clone(),
            config_dir: config_dir.to_path_buf(),
        }
    }

    /// The client, or why it cannot be made.
    pub(crate) fn build(&self) -> Result<object_store::aws::AmazonS3, OpenError> {
        self.builder()?
            .build()
            .map_err(|e| OpenError::new("its S3 settings are not valid", e.to_string()))
    }

    fn builder(&self) -> Result<AmazonS3Builder, OpenError> {
        if self.bucket.is_empty() {
            return Err(OpenError::new("its bucket is empty", "bucket = \"\""));
        }
        // The one TLS provider of the whole tree (ring), as the services
        // install it; the S3 client's HTTP stack needs a process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // `instance` starts from the AWS environment (web identity and
        // container settings), then the metadata service; the others from
        // nothing but the catalog.
        let base = match self.credentials {
            S3Credentials::Instance => AmazonS3Builder::from_env(),
            _ => AmazonS3Builder::new(),
        };
        let mut b = base
            .with_bucket_name(&self.bucket)
            .with_region(self.region.as_deref().unwrap_or("us-east-1"))
            // A place the node cannot reach is reported within seconds, not
            // after object_store's default three minutes of retries.
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(20),
                ..Default::default()
            })
            // The client options first: they hold allow_http too.
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(std::time::Duration::from_secs(5)),
            )
            .with_allow_http(self.allow_http);
        if let Some(e) = &self.endpoint {
            if e.starts_with("http://") && !self.allow_http {
                return Err(OpenError::new(
                    "its endpoint is http:// and allow_http is not set",
                    "set allow_http = true to use a store without TLS",
                ));
            }
            b = b.with_endpoint(e);
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing = |what: String| {
            OpenError::new(
                "its credentials are missing",
                format!("{what} (see docs/sources.md)"),
            )
        };
        let (id, secret, token) = match &self.credentials {
            S3Credentials::Instance => return Ok(b),
            S3Credentials::Environment => (
                env("AWS_ACCESS_KEY_ID")
                    .ok_or_else(|| missing("AWS_ACCESS_KEY_ID is not set".into()))?,
                env("AWS_SECRET_ACCESS_KEY")
                    .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY is not set".into()))?,
                env("AWS_SESSION_TOKEN"),
            ),
            S3Credentials::Variables {
                access_key_id,
                secret_access_key,
                session_token,
            } => (
                env(access_key_id).ok_or_else(|| missing(format!("{access_key_id} is not set")))?,
                env(secret_access_key)
                    .ok_or_else(|| missing(format!("{secret_access_key} is not set")))?,
                session_token.as_deref().and_then(env),
            ),
            S3Credentials::File { path, profile } => {
                let path = self.config_dir.join(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    missing(format!(
                        "cannot read the credentials file {}: {e}",
                        path.display()
                    ))
                })?;
                let profile = profile.as_deref().unwrap_or("default");
                let keys = credentials_section(&text, profile);
                let get = |k: &str| {
                    keys.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                (
                    get("aws_access_key_id").ok_or_else(|| {
                        missing(format!(
                            "no aws_access_key_id in [{profile}] of {}",
                            path.display()
                        ))
                    })?,
                    get("aws_secret_access_key").ok_or_else(|| {
                        missing(format!(
                            "no aws_secret_access_key in [{profile}] of {}",
                            path.display()
                        ))
                    })?,
                    get("aws_session_token"),
                )
            }
        };
        b = b.with_access_key_id(id).with_secret_access_key(secret);
        if let Some(t) = token {
            b = b.with_token(t);
        }
        Ok(b)
    }
}

/// Writes `bytes` as the object `name` under the prefix of `s`, once (an
/// object already there is an error, never overwritten), reads it back and
/// returns the SHA-256 of what the store holds: how a node delivers a
/// result to object storage.
pub async fn put_once(
    s: &S3Settings<'_>,
    config_dir: &std::path::Path,
    name: &str,
    bytes: Vec<u8>,
) -> Result<String, OpenError> {
    use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
    use sha2::Digest;
    let store = S3Store::new(s, config_dir).build()?;
    let prefix = s.prefix.trim_matches('/');
    let key = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    };
    let path = object_store::path::Path::parse(&key)
        .map_err(|e| OpenError::new("its prefix is not a valid object key", e.to_string()))?;
    let unreachable =
        |e: object_store::Error| OpenError::new("the store cannot be reached", e.to_string());
    // Refused before the write where the store does not honour a
    // conditional put; `PutMode::Create` closes the race where it does.
    match store.head(&path).await {
        Ok(_) => {
            return Err(OpenError::new(
                "an object of that name exists already; a result is delivered once",
                key,
            ))
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(unreachable(e)),
    }
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(&path, bytes.into(), opts).await {
        Ok(_) => {}
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {
            return Err(OpenError::new(
                "an object of that name exists already; a result is delivered once",
                key,
            ))
        }
        Err(e) => return Err(unreachable(e)),
    }
    let stored = store
        .get(&path)
        .await
        .map_err(unreachable)?
        .bytes()
        .await
        .map_err(unreachable)?;
    Ok(hex::encode(sha2::Sha256::digest(&stored)))
}

impl Source for S3Source {
    fn open<'a>(
        &'a self,
        ctx: &'a SessionContext,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>, OpenError>> {
        Box::pin(self.listing(ctx))
    }
}

/// The `key = value` lines of section `[profile]` of an AWS
/// shared-credentials file (comments and other sections skipped).
fn credentials_section(text: &str, profile: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            inside = name == profile || name == format!("profile {profile}");
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::credentials_section;

    #[test]
    fn credentials_files_are_read_by_profile() {
        let text = "# mine\n[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[profile shop]\nAWS_ACCESS_KEY_ID = C\n; note\naws_secret_access_key = D\naws_session_token = T\n";
        let d = credentials_section(text, "default");
        assert_eq!(
            d,
            vec![
                ("aws_access_key_id".to_string(), "A".to_string()),
                ("aws_secret_access_key".to_string(), "B".to_string())
            ]
        );
        let s = credentials_section(text, "shop");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], ("aws_access_key_id".into(), "C".into()));
        assert!(credentials_section(text, "nobody").is_empty());
    }
}
