//! A bucket of its own for one test on the local S3-protocol server (`s3s-fs`, which
//! `cargo xtask test` starts), emptied and deleted afterwards.

use platform::s3::{ObjectStore, S3Config};

/// The S3 server tests use (`TEST_S3_ENDPOINT`, default the development endpoint).
pub fn s3_endpoint() -> String {
    std::env::var("TEST_S3_ENDPOINT").unwrap_or_else(|_| platform::s3::DEFAULT_ENDPOINT.to_owned())
}

/// A bucket that exists for one test.
pub struct TestBucket {
    config: S3Config,
    store: ObjectStore,
}

impl TestBucket {
    /// Create a fresh bucket `t-<12 hex digits>`.
    pub async fn new() -> Self {
        let name = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let config = S3Config::for_tests(&s3_endpoint(), &name);
        let store = ObjectStore::new(&config);
        if let Err(error) = store.ensure_bucket(true).await {
            panic!(
                "cannot create test bucket {name} at {}: {error} (is s3s-fs running? `cargo xtask test` starts it)",
                config.endpoint
            );
        }
        Self { config, store }
    }

    /// The settings a service needs to use this bucket (`S3_*`).
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.bucket
    }

    /// The bucket, through the same client code the services use.
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// The keys in the bucket, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let listed = self
            .store
            .client()
            .list_objects_v2()
            .bucket(self.name())
            .send()
            .await
            .unwrap();
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    /// The `S3_*` environment variables for a service process using this bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("S3_ENDPOINT", self.config.endpoint.clone()),
            ("S3_REGION", self.config.region.clone()),
            ("S3_ACCESS_KEY_ID", self.config.access_key_id.clone()),
            (
                "S3_SECRET_ACCESS_KEY",
                platform::s3::DEFAULT_SECRET_ACCESS_KEY.to_owned(),
            ),
            ("S3_BUCKET", self.config.bucket.clone()),
        ]
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let config = self.config.clone();
        let bucket = self.config.bucket.clone();
        // Like TestDb: a runtime of its own on its own thread, whatever state the test's is in,
        // and a client of its own: the test's client keeps its connections on the test's
        // runtime, which is blocked in this drop.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let store = ObjectStore::new(&config);
                let client = store.client();
                if let Ok(listed) = client.list_objects_v2().bucket(&bucket).send().await {
                    for object in listed.contents() {
                        if let Some(key) = object.key() {
                            let _ = client.delete_object().bucket(&bucket).key(key).send().await;
                        }
                    }
                }
                let _ = client.delete_bucket().bucket(&bucket).send().await;
            });
        })
        .join();
    }
}
