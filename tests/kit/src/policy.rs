//! Policy files for tests, built as TOML documents.

use toml_edit::{value, DocumentMut, Item, Table, Value};

/// A policy under construction.
#[derive(Clone)]
pub struct Policy(DocumentMut);

impl Policy {
    /// RabbitMQ `queue` into `app_url`, dedup in local Redis under `namespace`, with quick
    /// backoffs so tests finish fast.
    pub fn amqp(queue: &str, app_url: &str, namespace: &str) -> Self {
        Policy(DocumentMut::new())
            .set("source.amqp.url", "amqp://guest:guest@127.0.0.1:5672/%2f")
            .set("source.amqp.queue", queue)
            .common(app_url, namespace)
            .set("dedup.key", "{header:idempotency-key}")
    }

    /// Kafka `topic` (group `group`) into `app_url`, dedup in local Redis under `namespace`,
    /// dedup key from the payload's `id`.
    pub fn kafka(
        bootstrap: &str,
        topic: &str,
        group: &str,
        app_url: &str,
        namespace: &str,
    ) -> Self {
        let topics = toml_edit::Array::from_iter([topic]);
        Policy(DocumentMut::new())
            .set("source.kafka.bootstrap_servers", bootstrap)
            .set("source.kafka.topics", topics)
            .set("source.kafka.group_id", group)
            .set("source.kafka.commit_interval", "100ms")
            .set("source.kafka.revoke_timeout", "2s")
            .common(app_url, namespace)
            .set("dedup.key", "{json:/id}")
    }

    /// What every test policy shares: the app, Redis dedup, quick backoffs.
    fn common(self, app_url: &str, namespace: &str) -> Self {
        self.set("delivery.url", app_url)
            .set("delivery.timeout", "5s")
            .set("dedup.store", "redis")
            .set("dedup.redis.url", "redis://127.0.0.1:6379")
            .set("dedup.redis.namespace", namespace)
            .set("dedup.lease", "10s")
            .set("retry.initial", "20ms")
            .set("retry.max", "200ms")
            .set("retry.jitter", 0.0)
            .set("log.level", "info")
    }

    /// Sets a dotted key, creating tables on the way.
    pub fn set(mut self, path: &str, v: impl Into<Value>) -> Self {
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().unwrap();
        let mut table: &mut Table = self.0.as_table_mut();
        for part in parts {
            let entry = table
                .entry(part)
                .or_insert_with(|| Item::Table(Table::new()));
            table = entry.as_table_mut().expect("a table on the path");
        }
        table.insert(last, value(v));
        self
    }

    /// Sets a librdkafka property (its name has dots, so it is not a path).
    pub fn kafka_property(mut self, name: &str, v: &str) -> Self {
        let source = self.0["source"]["kafka"]
            .as_table_mut()
            .expect("a kafka policy");
        let props = source
            .entry("properties")
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .expect("properties is a table");
        props.insert(name, value(v));
        self
    }

    /// Adds TOML the dotted setters cannot write (`[[routes]]` arrays of tables), after what
    /// is there.
    pub fn with_toml(self, extra: &str) -> Self {
        let text = format!("{}\n{extra}", self.text());
        Policy(
            text.parse()
                .expect("the policy and the extra TOML make one document"),
        )
    }

    /// The TOML text.
    pub fn text(&self) -> String {
        self.0.to_string()
    }
}
