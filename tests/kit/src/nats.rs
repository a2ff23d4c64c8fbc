//! NATS JetStream for tests: the machine's server (127.0.0.1:4222, or
//! `OUTRIGGER_TEST_NATS_URL`), streams of a test's own, confirmed publishes, reading streams
//! back, and a nats-server process of the test's own for auth, TLS and kills.
//!
//! A test's streams are named after it with [`unique`] and deleted by
//! [`Streams::clean_up`]; they have no subjects in common with any other test's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::consumer::AckPolicy;
use async_nats::jetstream::stream::{self, DiscardPolicy};
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use outrigger_core::{Coordinates, Message};
use outrigger_nats::NatsConfig;
use toml_edit::{InlineTable, Value};

use crate::names::{free_port, unique};
use crate::policy::Policy;
use crate::proxy::Proxy;
use crate::wait::wait_until;

/// Upper bound for anything the server is expected to do; tests pass far below it.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The server the tests use: `OUTRIGGER_TEST_NATS_URL`, or the local one.
pub fn url() -> String {
    std::env::var("OUTRIGGER_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The server's address, for a [`Proxy`] in front of it.
pub async fn address() -> SocketAddr {
    let url = url();
    let host_port = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .to_owned();
    tokio::net::lookup_host(host_port)
        .await
        .expect("the NATS host resolves")
        .next()
        .expect("the NATS host has an address")
}

/// A connection with its JetStream context.
#[derive(Clone)]
pub struct Nats {
    /// The client.
    pub client: async_nats::Client,
    /// Its JetStream context.
    pub js: Context,
}

impl Nats {
    /// Connects to the server at [`url`].
    pub async fn connect() -> Self {
        Self::connect_to(&url()).await
    }

    /// Connects to the server at `url`.
    pub async fn connect_to(url: &str) -> Self {
        let client = async_nats::connect(url)
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must run at {url}: {e}"));
        let js = jetstream::new(client.clone());
        Self { client, js }
    }

    /// Creates a stream capturing `subjects`.
    pub async fn create_stream(&self, name: &str, subjects: &[String]) {
        self.js
            .create_stream(stream::Config {
                name: name.to_owned(),
                subjects: subjects.to_vec(),
                ..stream::Config::default()
            })
            .await
            .unwrap_or_else(|e| panic!("creating stream {name}: {e}"));
    }

    /// Deletes a stream (nothing happens when it does not exist).
    pub async fn delete_stream(&self, name: &str) {
        let _ = self.js.delete_stream(name).await;
    }

    /// Publishes and waits for JetStream's ack; returns the stream sequence.
    pub async fn publish(
        &self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: impl Into<Bytes>,
    ) -> u64 {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, *value);
        }
        self.publish_map(subject, map, payload.into()).await
    }

    /// Publishes with a header map and waits for JetStream's ack.
    pub async fn publish_map(&self, subject: &str, headers: HeaderMap, payload: Bytes) -> u64 {
        self.js
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .unwrap_or_else(|e| panic!("publishing to {subject}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("JetStream did not take the publish to {subject}: {e}"))
            .sequence
    }

    /// Every message of `stream`, in order, as core messages (key: none; headers sorted by
    /// name, every value of a repeated one; message id: the `Nats-Msg-Id` header).
    pub async fn read(&self, stream: &str) -> Vec<Message> {
        let Ok(s) = self.js.get_stream(stream).await else {
            return Vec::new();
        };
        let last = s.cached_info().state.last_sequence;
        let mut out = Vec::new();
        let mut seq = s.cached_info().state.first_sequence.max(1);
        while seq <= last {
            let found = outrigger_nats::stored_message(&self.client, stream, seq, ">")
                .await
                .unwrap_or_else(|e| panic!("reading {stream}: {e}"));
            match found {
                Some(raw) if raw.sequence <= last => {
                    seq = raw.sequence + 1;
                    out.push(to_message(stream, raw));
                }
                _ => break,
            }
        }
        out
    }

    /// Messages in `stream` now.
    pub async fn count(&self, stream: &str) -> u64 {
        match self.js.get_stream(stream).await {
            Ok(s) => s.cached_info().state.messages,
            Err(_) => 0,
        }
    }

    /// The durable consumer `consumer` of `stream`, as the server describes it.
    pub async fn consumer_info(
        &self,
        stream: &str,
        consumer: &str,
    ) -> async_nats::jetstream::consumer::Info {
        self.js
            .get_stream(stream)
            .await
            .unwrap()
            .consumer_info(consumer)
            .await
            .unwrap_or_else(|e| panic!("consumer {consumer} of {stream}: {e}"))
    }

    /// Creates a durable pull consumer with explicit acks and this `ack_wait`.
    pub async fn create_consumer(&self, stream: &str, consumer: &str, ack_wait: Duration) {
        self.js
            .get_stream(stream)
            .await
            .unwrap()
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(consumer.to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("creating consumer {consumer}: {e}"));
    }
}

/// A stored JetStream message as a core one.
fn to_message(stream: &str, raw: outrigger_nats::StoredMessage) -> Message {
    let mut m = Message::new(
        raw.payload,
        Coordinates::Nats {
            stream: stream.to_owned(),
            sequence: raw.sequence,
        },
    );
    m.message_id = raw
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Nats-Msg-Id"))
        .map(|h| String::from_utf8_lossy(&h.value).into_owned());
    m.headers = raw.headers;
    m
}

/// A test's own stream (capturing `<stream>.in` and `<stream>.in.>`), its durable consumer's
/// name, and a dead-letter stream `<stream>_dlq` capturing `<stream>.dlq`.
pub struct Streams {
    nats: Nats,
    /// The source stream.
    pub stream: String,
    /// The subject the tests publish to.
    pub subject: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// `<stream>.dlq`, where dead letters go by default.
    pub dead_letter_subject: String,
    /// `<stream>_dlq`, which captures them.
    pub dead_letter_stream: String,
}

impl Streams {
    /// Creates `outrigger-test-<test>-<unique>` and its dead-letter stream on [`url`].
    pub async fn new(test: &str) -> Self {
        Self::on(Nats::connect().await, test).await
    }

    /// Creates them on the server `nats` is connected to.
    pub async fn on(nats: Nats, test: &str) -> Self {
        let stream = unique(&format!("outrigger-test-{test}"));
        let subject = format!("{stream}.in");
        nats.create_stream(&stream, &[subject.clone(), format!("{subject}.>")])
            .await;
        let dead_letter_subject = format!("{stream}.dlq");
        let dead_letter_stream = format!("{stream}_dlq");
        nats.create_stream(
            &dead_letter_stream,
            std::slice::from_ref(&dead_letter_subject),
        )
        .await;
        Self {
            nats,
            consumer: format!("{stream}-consumer"),
            stream,
            subject,
            dead_letter_subject,
            dead_letter_stream,
        }
    }

    /// The `[source.nats]` table of the stream at `server`, the consumer created by the
    /// source, every other key at its default.
    pub fn config(&self, server: &str) -> NatsConfig {
        NatsConfig::new(server, &self.stream, &self.consumer)
    }

    /// Publishes to the source subject and waits for the ack.
    pub async fn publish(&self, headers: &[(&str, &str)], payload: impl Into<Bytes>) -> u64 {
        self.nats.publish(&self.subject, headers, payload).await
    }

    /// Publishes `payload` with an `idempotency-key` header (the dedup key of [`policy`]).
    pub async fn publish_keyed(&self, key: &str, payload: impl Into<Bytes>) -> u64 {
        self.publish(&[("idempotency-key", key)], payload).await
    }

    /// Publishes to the dead-letter subject as the sidecar would, with these headers.
    pub async fn publish_dead_letter(&self, headers: HeaderMap, payload: Bytes) -> u64 {
        self.nats
            .publish_map(&self.dead_letter_subject, headers, payload)
            .await
    }

    /// The dead letters, in order.
    pub async fn dead_letters(&self) -> Vec<Message> {
        self.nats.read(&self.dead_letter_stream).await
    }

    /// Makes dead-letter writes fail: the dead-letter stream goes away, so a publish to its
    /// subject finds no stream to ack it.
    pub async fn break_dead_letters(&self) {
        self.nats.delete_stream(&self.dead_letter_stream).await;
    }

    /// Brings the dead-letter stream back, empty.
    pub async fn heal_dead_letters(&self) {
        self.nats
            .create_stream(
                &self.dead_letter_stream,
                std::slice::from_ref(&self.dead_letter_subject),
            )
            .await;
    }

    /// The consumer's unacked messages, as the server counts them (0 before it exists).
    pub async fn ack_pending(&self) -> usize {
        match self.nats.js.get_stream(&self.stream).await {
            Ok(s) => s
                .consumer_info(&self.consumer)
                .await
                .map_or(0, |i| i.num_ack_pending),
            Err(_) => 0,
        }
    }

    /// Waits until every message of the stream is acked by the consumer.
    pub async fn wait_all_acked(&self) {
        wait_until("every message acked", DEADLINE, || async {
            match self.nats.js.get_stream(&self.stream).await {
                Ok(s) => s
                    .consumer_info(&self.consumer)
                    .await
                    .is_ok_and(|i| i.num_ack_pending == 0 && i.num_pending == 0),
                Err(_) => false,
            }
        })
        .await;
    }

    /// Deletes both streams.
    pub async fn clean_up(self) {
        self.nats.delete_stream(&self.stream).await;
        self.nats.delete_stream(&self.dead_letter_stream).await;
    }
}

impl std::ops::Deref for Streams {
    type Target = Nats;

    fn deref(&self) -> &Nats {
        &self.nats
    }
}

/// A policy consuming `streams` into `app_url` through the server at `server`, dedup in local
/// Redis under `namespace` keyed by the `idempotency-key` header, with quick backoffs, and
/// `extra` keys in `[source.nats]` (`ack_wait`, ...).
pub fn policy(
    streams: &Streams,
    server: &str,
    app_url: &str,
    namespace: &str,
    extra: &[(&str, Value)],
) -> Policy {
    let mut nats = InlineTable::new();
    nats.insert(
        "servers",
        Value::from(toml_edit::Array::from_iter([server])),
    );
    nats.insert("stream", Value::from(streams.stream.as_str()));
    nats.insert("consumer", Value::from(streams.consumer.as_str()));
    for (key, value) in extra {
        nats.insert(*key, value.clone());
    }
    let mut source = InlineTable::new();
    source.insert("nats", Value::InlineTable(nats));
    // Policy builds on a source it knows; the whole `source` table is replaced by ours.
    Policy::amqp("unused", app_url, namespace).set("source", Value::InlineTable(source))
}

/// A nats-server process of the test's own, with JetStream, on a free port, killed on drop.
pub struct NatsServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    config: String,
}

impl NatsServer {
    /// Starts `nats-server` (or `OUTRIGGER_TEST_NATS_SERVER`) with JetStream and `extra`
    /// lines of configuration (`authorization { ... }`, `tls { ... }`), and waits until it
    /// takes connections.
    pub async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_port();
        Self::spawn(dir, addr, extra).await
    }

    async fn spawn(dir: tempfile::TempDir, addr: SocketAddr, extra: &str) -> Self {
        let store = dir.path().join("jetstream");
        let config = format!(
            "listen: {addr}\njetstream {{\n  store_dir: {:?}\n}}\n{extra}\n",
            store.display().to_string()
        );
        let file = dir.path().join("nats.conf");
        std::fs::write(&file, &config).unwrap();
        let binary = std::env::var("OUTRIGGER_TEST_NATS_SERVER").unwrap_or_else(|_| {
            if Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server".into()
            } else {
                "nats-server".into()
            }
        });
        let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary} (apt-get install nats-server): {e}"));
        wait_until("nats-server to listen", DEADLINE, || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        Self {
            child,
            addr,
            dir,
            config: extra.to_owned(),
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// A file in the server's scratch directory (certificates, credentials).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Kills the server with SIGKILL, keeping its store.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(mut self) -> Self {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let (addr, config) = (self.addr, self.config.clone());
        drop(self);
        Self::spawn(dir, addr, &config).await
    }

    /// A proxy in front of it.
    pub async fn proxy(&self) -> Proxy {
        Proxy::start(self.addr).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stream that takes no more messages: at most one, new ones refused (for failing writes
/// while the stream exists).
pub fn full_stream(name: &str, subject: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        max_messages: 1,
        discard: DiscardPolicy::New,
        ..stream::Config::default()
    }
}
