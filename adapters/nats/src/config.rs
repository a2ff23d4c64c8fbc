//! `[source.nats]`: what to connect to and consume, checked before anything connects; and the
//! settings a source runs with, derived from it and the policy's shared sections.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use outrigger_core::config::{checks, de};
use outrigger_core::{KeyPath, Limits, Problem, Problems, SourceContext, SourceName};
use serde::Deserialize;

/// `[source.nats]`: consume one JetStream stream through a durable pull consumer. A message is
/// acked (and the ack confirmed by the server) only once its outcome is durable; while it is
/// being delivered the sidecar tells JetStream it is still working on it, so `ack_wait` never
/// hands it to another consumer behind its back.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The servers to connect to, `nats://host:port` (`tls://host:port` for TLS), as a list
    /// or one string separated by commas (`OUTRIGGER__SOURCE__NATS__SERVERS=nats://a,nats://b`).
    /// The client learns the rest of a cluster from the first one that answers. A URL may
    /// carry `user:password@` (or `token@`) when no other authentication is set.
    #[serde(default = "default_servers", deserialize_with = "servers")]
    pub servers: Vec<String>,
    /// The JetStream stream to consume. Required.
    pub stream: String,
    /// The durable consumer's name: replicas of one service share it, and JetStream hands each
    /// message to one of them. Required.
    pub consumer: String,
    /// Create the stream when it does not exist, capturing `subjects`. Off by default: a
    /// stream is usually the platform's, and a typo should not create an empty one.
    #[serde(default)]
    pub create_stream: bool,
    /// The subjects a stream created by `create_stream` captures, like `["orders.>"]`.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Create the durable consumer when it does not exist, with the settings below. An existing
    /// consumer is used as it is, with its own ack_wait, max_ack_pending and request limits; it
    /// must be a pull consumer with explicit acks that delivers whole messages (not
    /// headers_only).
    #[serde(default = "yes")]
    pub create_consumer: bool,
    /// Only messages on subjects matching this filter are consumed (created consumers). An
    /// existing consumer keeps its own filter: given here, it must be the same.
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Where a created consumer starts: `all` (every message the stream holds) or `new` (only
    /// messages published from now on).
    #[serde(default)]
    pub start_from: StartFrom,
    /// How long JetStream waits for an ack before it hands a message out again (created
    /// consumers; an existing consumer keeps its own). The sidecar sends in-progress every
    /// third of it while a message is unsettled, so a slow delivery keeps its message.
    #[serde(default = "default_ack_wait", deserialize_with = "de::duration")]
    pub ack_wait: Duration,
    /// Messages the consumer may have handed out unacked, over every replica sharing it
    /// (created consumers). Default `backpressure.max_in_flight`: set it to replicas ×
    /// `max_in_flight` when several sidecars share the consumer.
    #[serde(default)]
    pub max_ack_pending: Option<u32>,
    /// The header that carries a message's key (ordering mode `key`, `{key}` in dedup keys).
    /// A message without it is keyed by its subject.
    #[serde(default = "default_key_header")]
    pub key_header: String,
    /// The stream created to hold dead letters when `dead_letter.declare` is on and no stream
    /// captures the dead-letter subject yet. Default `<stream>_dlq`.
    #[serde(default)]
    pub dead_letter_stream: Option<String>,
    /// The name the connection shows in the server's monitoring.
    #[serde(default = "default_name")]
    pub name: String,
    /// User for user/password authentication (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password for `user`; better from `OUTRIGGER__SOURCE__NATS__PASSWORD` than the file.
    #[serde(default)]
    pub password: Option<String>,
    /// Token authentication; better from `OUTRIGGER__SOURCE__NATS__TOKEN` than the file.
    #[serde(default)]
    pub token: Option<String>,
    /// A `.creds` file (user JWT and NKey seed), as `nsc` writes it.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`), for NKey authentication.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// TLS: present means required.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[source.nats.tls]`: the connection must be TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the server's certificate; without it, the system's
    /// roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Where a created consumer starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// Every message the stream still holds: a new consumer should not silently skip what is
    /// already there.
    #[default]
    All,
    /// Only messages published after the consumer is created.
    New,
}

/// A list of server URLs, or one string of them separated by commas.
fn servers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Servers {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Servers::deserialize(d)? {
        Servers::One(text) => text
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        Servers::Many(all) => all,
    })
}

fn yes() -> bool {
    true
}

/// The machine's own server at NATS's default port, so a developer's first run needs none.
fn default_servers() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".to_owned()]
}

fn default_ack_wait() -> Duration {
    DEFAULT_ACK_WAIT
}

fn default_key_header() -> String {
    DEFAULT_KEY_HEADER.to_owned()
}

fn default_name() -> String {
    "outrigger".to_owned()
}

/// JetStream's own default: long enough that in-progress every 10s is a trickle, short enough
/// that a crashed sidecar's messages go to a survivor within half a minute.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// The shortest `ack_wait` taken: in-progress goes out every third of it, per message.
pub const MIN_ACK_WAIT: Duration = Duration::from_secs(1);
/// The key header when the policy names none.
pub const DEFAULT_KEY_HEADER: &str = "outrigger-key";
/// Messages asked for in one pull when `backpressure.prefetch` says nothing: JetStream
/// counts them as pending for this consumer until they are acked, so a pull never asks for
/// more than may still be unsettled either.
pub const DEFAULT_PREFETCH: usize = 64;

impl NatsConfig {
    /// A config for `stream` and its durable `consumer` on the server at `server`, every other
    /// key at its default.
    pub fn new(
        server: impl Into<String>,
        stream: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        Self {
            servers: vec![server.into()],
            stream: stream.into(),
            consumer: consumer.into(),
            create_stream: false,
            subjects: Vec::new(),
            create_consumer: true,
            filter_subject: None,
            start_from: StartFrom::All,
            ack_wait: DEFAULT_ACK_WAIT,
            max_ack_pending: None,
            key_header: default_key_header(),
            dead_letter_stream: None,
            name: default_name(),
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            nkey_seed_file: None,
            tls: None,
        }
    }

    /// The stream, with the setting that names it.
    pub fn names(&self) -> Vec<SourceName> {
        vec![SourceName {
            name: self.stream.clone(),
            path: KeyPath::parse("source.nats.stream"),
        }]
    }

    /// Every problem of this table in `context`: what `outrigger check` reports and
    /// [`Nats::connect`](crate::Nats) refuses.
    pub fn validate(&self, context: &SourceContext) -> Vec<Problem> {
        let mut p = Problems::default();
        let servers = KeyPath::parse("source.nats.servers");
        if self.servers.is_empty() {
            p.at_paths(vec![servers.clone()], "must list at least one server");
        }
        for (i, server) in self.servers.iter().enumerate() {
            if let Err(why) = server_url(server) {
                p.at_paths(vec![servers.index(i)], why);
            }
        }
        name(&mut p, "source.nats.stream", &self.stream, "stream");
        name(&mut p, "source.nats.consumer", &self.consumer, "consumer");
        if let Some(stream) = &self.dead_letter_stream {
            if *stream == self.stream {
                p.at(
                    &["source.nats.dead_letter_stream", "source.nats.stream"],
                    "must differ from source.nats.stream, or dead letters would be consumed again",
                );
            } else {
                name(&mut p, "source.nats.dead_letter_stream", stream, "stream");
            }
        }
        let subjects = KeyPath::parse("source.nats.subjects");
        if self.create_stream && self.subjects.is_empty() {
            p.at_paths(
                vec![
                    subjects.clone(),
                    KeyPath::parse("source.nats.create_stream"),
                ],
                "must list the subjects the stream captures when create_stream is on, like \
                 [\"orders.>\"]",
            );
        }
        for (i, subject) in self.subjects.iter().enumerate() {
            if let Err(why) = subject_name(subject, true) {
                p.at_paths(vec![subjects.index(i)], why);
            }
        }
        if let Some(filter) = &self.filter_subject {
            if let Err(why) = subject_name(filter, true) {
                p.at(&["source.nats.filter_subject"], why);
            }
        }
        let dead_letters = context.dead_letter_for(&self.stream);
        if let Err(why) = subject_name(&dead_letters, false) {
            p.at_paths(
                vec![
                    KeyPath::parse("dead_letter.destination"),
                    KeyPath::parse("source.nats.stream"),
                ],
                format!("the dead-letter subject {dead_letters:?}: {why}"),
            );
        } else if let Some(i) = self
            .subjects
            .iter()
            .position(|s| self.create_stream && subject_matches(s, &dead_letters))
        {
            p.at_paths(
                vec![KeyPath::parse("dead_letter.destination"), subjects.index(i)],
                format!(
                    "dead letters go to {dead_letters:?}, which the source stream captures, so \
                     they would be consumed again; set dead_letter.destination to a subject \
                     outside {:?}",
                    self.subjects[i]
                ),
            );
        }
        self.check_route_dead_letters(&mut p, context);
        self.check_retry(&mut p, context, &dead_letters);
        if self.ack_wait < MIN_ACK_WAIT {
            p.at(
                &["source.nats.ack_wait"],
                "must be at least 1s: the sidecar sends in-progress every third of it",
            );
        }
        if self.max_ack_pending == Some(0) {
            p.at(
                &["source.nats.max_ack_pending"],
                "must be at least 1, or JetStream hands out nothing",
            );
        }
        if let Err(why) = header_name(&self.key_header) {
            p.at(&["source.nats.key_header"], why);
        }
        p.not_empty(
            "source.nats.name",
            Some(&self.name),
            "name the connection, usually after the service",
        );
        self.check_auth(&mut p);
        p.extend(checks::dead_letters_not_consumed(
            &self.names(),
            context,
            "stream",
            false,
        ));
        p.into_vec()
    }

    /// One way to authenticate, complete.
    fn check_auth(&self, p: &mut Problems) {
        p.not_empty("source.nats.user", self.user.as_deref(), "name the user");
        p.not_empty("source.nats.token", self.token.as_deref(), "set the token");
        match (&self.user, &self.password) {
            (Some(_), None) => p.at(
                &["source.nats.user"],
                "needs source.nats.password (or OUTRIGGER__SOURCE__NATS__PASSWORD)",
            ),
            (None, Some(_)) => p.at(&["source.nats.password"], "needs source.nats.user"),
            _ => {}
        }
        let mut methods = Vec::new();
        if self.user.is_some() {
            methods.push("source.nats.user");
        }
        if self.token.is_some() {
            methods.push("source.nats.token");
        }
        if self.credentials_file.is_some() {
            methods.push("source.nats.credentials_file");
        }
        if self.url_credentials().is_some() {
            methods.push("source.nats.servers");
        }
        if self.nkey_seed_file.is_some() {
            methods.push("source.nats.nkey_seed_file");
        }
        if methods.len() > 1 {
            p.at(
                &methods[1..],
                format!(
                    "{} and {} are two ways to authenticate: set one",
                    methods[0], methods[1]
                ),
            );
        }
        for (path, file) in [
            ("source.nats.credentials_file", &self.credentials_file),
            ("source.nats.nkey_seed_file", &self.nkey_seed_file),
        ] {
            if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                p.at(&[path], "must not be empty; name the file");
            }
        }
        if let Some(tls) = &self.tls {
            match (&tls.cert_file, &tls.key_file) {
                (Some(_), None) => p.at(
                    &["source.nats.tls.cert_file"],
                    "needs source.nats.tls.key_file, its private key",
                ),
                (None, Some(_)) => p.at(
                    &["source.nats.tls.key_file"],
                    "needs source.nats.tls.cert_file, the certificate it goes with",
                ),
                _ => {}
            }
        }
    }

    /// The user and password (or token, as the user alone) of the first server URL that
    /// carries them.
    pub(crate) fn url_credentials(&self) -> Option<(String, Option<String>)> {
        self.servers.iter().find_map(|s| {
            let addr: async_nats::ServerAddr = s.parse().ok()?;
            let user = addr.username()?.to_owned();
            Some((user, addr.password().map(str::to_owned)))
        })
    }

    /// The stream that holds dead letters when the sidecar creates one.
    pub fn dead_letter_stream_name(&self) -> String {
        self.dead_letter_stream
            .clone()
            .unwrap_or_else(|| format!("{}_dlq", self.stream))
    }

    /// The stream that holds the retry copies of retry mode `queue`: `<stream>_retry`.
    pub fn retry_stream_name(&self) -> String {
        format!("{}_retry", self.stream)
    }

    /// The durable consumer that reads the retry stream: `<consumer>-retry`.
    pub fn retry_consumer_name(&self) -> String {
        format!("{}-retry", self.consumer)
    }

    /// The subject of retry tier `tier` (from 0): `<stream>.retry.<tier>`.
    pub fn retry_subject(&self, tier: usize) -> String {
        format!("{}.retry.{tier}", self.stream)
    }

    /// The dead-letter subject of each route: a subject one can publish to, outside the source
    /// stream and not a retry subject.
    fn check_route_dead_letters(&self, p: &mut Problems, context: &SourceContext) {
        let subjects = KeyPath::parse("source.nats.subjects");
        // A blank one is the app's to report, as it is on every broker.
        let named = context.route_dead_letters.iter();
        for route in named.filter(|r| !r.destination.trim().is_empty()) {
            let subject = &route.destination;
            if let Err(why) = subject_name(subject, false) {
                p.at_paths(
                    vec![route.path.clone()],
                    format!("the dead-letter subject {subject:?}: {why}"),
                );
            } else if let Some(i) = self
                .subjects
                .iter()
                .position(|s| self.create_stream && subject_matches(s, subject))
            {
                p.at_paths(
                    vec![route.path.clone(), subjects.index(i)],
                    format!(
                        "dead letters of route {:?} go to {subject:?}, which the source stream \
                         captures, so they would be consumed again; name a subject outside {:?}",
                        route.route, self.subjects[i]
                    ),
                );
            }
            if let Some(tier) =
                (0..context.retry_tiers.len()).find(|t| self.retry_subject(*t) == *subject)
            {
                p.at_paths(
                    vec![
                        route.path.clone(),
                        KeyPath::parse("retry.tiers").index(tier),
                    ],
                    format!(
                        "{subject:?} is the retry subject of retry.tiers[{tier}]; name another \
                         subject for the dead letters of route {:?}",
                        route.route
                    ),
                );
            }
        }
    }

    /// Retry mode `queue`: the retry subjects must not be captured by the source stream nor be
    /// the dead-letter subject, and the retry stream must be neither of those streams.
    fn check_retry(&self, p: &mut Problems, context: &SourceContext, dead_letters: &str) {
        if context.retry_tiers.is_empty() {
            return;
        }
        let retry_stream = self.retry_stream_name();
        if retry_stream == self.dead_letter_stream_name() {
            p.at(
                &["source.nats.dead_letter_stream", "retry.mode"],
                format!(
                    "the retry stream of retry mode queue is {retry_stream:?}, the dead-letter \
                     stream's name; name the dead-letter stream otherwise"
                ),
            );
        }
        let subjects = KeyPath::parse("source.nats.subjects");
        for tier in 0..context.retry_tiers.len() {
            let retry = self.retry_subject(tier);
            if retry == dead_letters {
                p.at_paths(
                    vec![
                        KeyPath::parse("dead_letter.destination"),
                        KeyPath::parse("retry.tiers").index(tier),
                    ],
                    format!(
                        "the retry subject of retry.tiers[{tier}] is {retry:?}, which is the \
                         dead-letter subject; set dead_letter.destination to another subject"
                    ),
                );
            }
            if let Some(i) = self
                .subjects
                .iter()
                .position(|s| self.create_stream && subject_matches(s, &retry))
            {
                p.at_paths(
                    vec![subjects.index(i), KeyPath::parse("retry.tiers").index(tier)],
                    format!(
                        "the retry subject of retry.tiers[{tier}] is {retry:?}, which the source \
                         stream captures, so retry copies would be consumed as new messages; \
                         keep {:?} from capturing it",
                        self.subjects[i]
                    ),
                );
            }
        }
    }
}

/// A server URL async-nats takes: `nats://`, `tls://`, `ws://` or `wss://`, or a bare
/// `host:port`.
fn server_url(server: &str) -> Result<(), String> {
    if server.trim().is_empty() {
        return Err("must not be empty; write nats://host:4222".to_owned());
    }
    let scheme_ok = match server.split_once("://") {
        Some((scheme, _)) => matches!(scheme, "nats" | "tls" | "ws" | "wss"),
        None => true,
    };
    if !scheme_ok {
        return Err("expected a nats:// or tls:// URL".to_owned());
    }
    server
        .parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| format!("not a valid NATS server URL: {e}"))
}

/// JetStream's rules for stream and consumer names: not empty, no whitespace, `.`, `*`, `>`,
/// path separators or control characters, at most 255 bytes (a name becomes a file name).
fn name(p: &mut Problems, path: &str, value: &str, what: &str) {
    let bad = |c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c);
    if value.is_empty() {
        p.at(&[path], "must not be empty");
    } else if value.chars().any(bad) {
        p.at(
            &[path],
            format!("not a valid JetStream {what} name: no spaces, `.`, `*`, `>`, `/` or `\\`"),
        );
    } else if value.len() > 255 {
        p.at(
            &[path],
            format!(
                "too long: JetStream {what} names have at most 255 bytes, this one has {}",
                value.len()
            ),
        );
    }
}

/// A NATS subject: dot-separated tokens, none empty, no whitespace; `*` and a last `>` only
/// where `wildcards` are allowed.
pub(crate) fn subject_name(subject: &str, wildcards: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not a valid NATS subject: no spaces or control characters".to_owned());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err("not a valid NATS subject: a `.` at an end or two in a row".to_owned());
        }
        let wildcard = *token == "*" || (*token == ">" && i == tokens.len() - 1);
        if wildcard && !wildcards {
            return Err("must be one subject, without `*` or `>`".to_owned());
        }
        if !wildcard && (token.contains('*') || token.contains('>')) {
            return Err(
                "not a valid NATS subject: `*` is a whole token, `>` the whole last one".to_owned(),
            );
        }
    }
    Ok(())
}

/// Whether `pattern` (with wildcards) matches the literal `subject`.
pub(crate) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A header name NATS carries: printable ASCII without `:` or spaces.
fn header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty; name the header that carries the key".to_owned());
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err("not a valid NATS header name: printable ASCII, no `:` or spaces".to_owned());
    }
    Ok(())
}

// By hand so that passwords and tokens (in the fields or a URL) never reach a log line.
impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|s| redact_url(s)).collect();
        f.debug_struct("NatsConfig")
            .field("servers", &servers)
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("create_stream", &self.create_stream)
            .field("subjects", &self.subjects)
            .field("create_consumer", &self.create_consumer)
            .field("filter_subject", &self.filter_subject)
            .field("start_from", &self.start_from)
            .field("ack_wait", &self.ack_wait)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("key_header", &self.key_header)
            .field("dead_letter_stream", &self.dead_letter_stream)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("credentials_file", &self.credentials_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("tls", &self.tls)
            .finish()
    }
}

/// What a source runs with: the `[source.nats]` table and what the policy's shared sections
/// say about limits and dead letters.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NatsSettings {
    /// The table as written.
    pub config: NatsConfig,
    /// The subject dead letters are published to: `dead_letter.destination`, or
    /// `<stream>.dlq`.
    pub dead_letter_subject: String,
    /// Other subjects dead letters may go to: those `[[routes]]` entries name. A stream must
    /// capture each; when none does, the dead-letter stream is made to (created when
    /// missing), with `declare_dead_letters`.
    pub route_dead_letter_subjects: Vec<String>,
    /// Create a stream capturing `dead_letter_subject` when none does.
    pub declare_dead_letters: bool,
    /// Messages taken and not settled; at least 1.
    pub max_in_flight: usize,
    /// Payload bytes taken and not settled; at least 1.
    pub max_buffered_bytes: u64,
    /// Messages asked for in one pull, at most what may still be unsettled.
    pub prefetch: usize,
    /// The `max_ack_pending` of a created consumer.
    pub max_ack_pending: u32,
    /// Retry mode `queue`: the delay of each tier, shortest first; empty: retries in place.
    pub retry_tiers: Vec<Duration>,
}

impl NatsSettings {
    /// The settings of `config` in `context`.
    pub fn from_config(config: &NatsConfig, context: &SourceContext) -> Self {
        let Limits {
            max_in_flight,
            max_buffered_bytes,
            prefetch,
            ..
        } = context.limits;
        let max_in_flight = max_in_flight.max(1);
        Self {
            config: config.clone(),
            dead_letter_subject: context.dead_letter_for(&config.stream),
            route_dead_letter_subjects: context
                .route_destinations()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            declare_dead_letters: context.declare_dead_letters,
            max_in_flight,
            max_buffered_bytes: max_buffered_bytes.max(1),
            prefetch: prefetch.unwrap_or(DEFAULT_PREFETCH).clamp(1, max_in_flight),
            max_ack_pending: config
                .max_ack_pending
                .unwrap_or(u32::try_from(max_in_flight).unwrap_or(u32::MAX)),
            retry_tiers: context.retry_tiers.clone(),
        }
    }

    /// Settings for `stream` and `consumer` with every default.
    pub fn new(
        server: impl Into<String>,
        stream: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        Self::from_config(
            &NatsConfig::new(server, stream, consumer),
            &SourceContext::default(),
        )
    }

    /// How often an unsettled message is reported in progress: a third of `ack_wait`, so two
    /// reports can be lost before JetStream gives up on it.
    pub fn progress_every(ack_wait: Duration) -> Duration {
        (ack_wait / 3).max(Duration::from_millis(100))
    }
}

/// The URL with the password or token of its userinfo replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        // A lone userinfo is a token.
        None => format!("{scheme}://***{}", &rest[at..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NatsConfig {
        NatsConfig::new("nats://127.0.0.1:4222", "ORDERS", "billing")
    }

    fn problems(c: &NatsConfig, context: &SourceContext) -> Vec<String> {
        c.validate(context).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn defaults_are_valid_and_dead_letters_go_to_the_stream_dot_dlq() {
        let c = config();
        assert!(problems(&c, &SourceContext::default()).is_empty());
        let s = NatsSettings::from_config(&c, &SourceContext::default());
        assert_eq!(s.dead_letter_subject, "ORDERS.dlq");
        assert_eq!(c.dead_letter_stream_name(), "ORDERS_dlq");
        assert_eq!(s.max_ack_pending, 64);
        assert_eq!(s.prefetch, 64);
        assert_eq!(
            NatsSettings::progress_every(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn the_prefetch_never_asks_for_more_than_may_be_unsettled() {
        let context = SourceContext {
            limits: Limits {
                max_in_flight: 8,
                prefetch: Some(100),
                ..Limits::default()
            },
            ..SourceContext::default()
        };
        let s = NatsSettings::from_config(&config(), &context);
        assert_eq!((s.prefetch, s.max_ack_pending), (8, 8));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = NatsConfig {
            servers: vec!["http://x".into()],
            stream: "bad.stream".into(),
            consumer: String::new(),
            create_stream: true,
            ack_wait: Duration::from_millis(10),
            key_header: "a b".into(),
            user: Some("app".into()),
            token: Some("t".into()),
            ..config()
        };
        let text = problems(&c, &SourceContext::default()).join("\n");
        for part in [
            "source.nats.servers[0]: expected a nats:// or tls:// URL",
            "source.nats.stream: not a valid JetStream stream name",
            "source.nats.consumer: must not be empty",
            "source.nats.subjects: must list the subjects",
            "source.nats.ack_wait: must be at least 1s",
            "source.nats.key_header: not a valid NATS header name",
            "source.nats.user: needs source.nats.password",
            "source.nats.token: source.nats.user and source.nats.token are two ways",
        ] {
            assert!(text.contains(part), "{part} missing in\n{text}");
        }
    }

    #[test]
    fn retry_subjects_may_not_be_consumed_or_be_the_dead_letter_subject() {
        let queue = |destination: Option<&str>| SourceContext {
            dead_letter_destination: destination.map(str::to_owned),
            retry_tiers: vec![Duration::from_secs(1), Duration::from_secs(10)],
            ..SourceContext::default()
        };
        let c = NatsConfig {
            create_stream: true,
            subjects: vec!["orders.>".into()],
            ..config()
        };
        assert!(problems(&c, &queue(None)).is_empty());
        assert_eq!(c.retry_subject(1), "ORDERS.retry.1");
        assert_eq!(c.retry_stream_name(), "ORDERS_retry");
        let captured = NatsConfig {
            subjects: vec!["ORDERS.*.*".into()],
            ..c.clone()
        };
        let found = captured.validate(&queue(Some("dlq.orders")));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0]
            .to_string()
            .contains("which the source stream captures"));
        assert_eq!(
            found[1].paths,
            [
                KeyPath::parse("source.nats.subjects").index(0),
                KeyPath::parse("retry.tiers").index(1)
            ]
        );
        let text = problems(&c, &queue(Some("ORDERS.retry.0"))).join("\n");
        assert!(text.contains("which is the dead-letter subject"), "{text}");
        let dlq_stream = NatsConfig {
            dead_letter_stream: Some("ORDERS_retry".into()),
            ..c.clone()
        };
        let text = problems(&dlq_stream, &queue(None)).join("\n");
        assert!(text.contains("the dead-letter stream's name"), "{text}");
        assert!(
            problems(&dlq_stream, &SourceContext::default()).is_empty(),
            "no retry stream in place mode"
        );
    }

    #[test]
    fn dead_letters_may_not_land_in_the_created_stream() {
        let c = NatsConfig {
            create_stream: true,
            subjects: vec!["ORDERS.>".into()],
            ..config()
        };
        let text = problems(&c, &SourceContext::default()).join("\n");
        assert!(text.contains("which the source stream captures"), "{text}");
        let elsewhere = SourceContext {
            dead_letter_destination: Some("dlq.orders".into()),
            ..SourceContext::default()
        };
        assert!(problems(&c, &elsewhere).is_empty());
        let wildcard = SourceContext {
            dead_letter_destination: Some("dlq.*".into()),
            ..SourceContext::default()
        };
        assert!(problems(&c, &wildcard)[0].contains("without `*` or `>`"));
    }

    #[test]
    fn subjects_follow_the_nats_rules() {
        assert!(subject_name("orders.>", true).is_ok());
        assert!(subject_name("orders.*.eu", true).is_ok());
        assert!(subject_name("orders.>", false).is_err());
        assert!(subject_name("orders..x", true).is_err());
        assert!(subject_name("or ders", true).is_err());
        assert!(subject_name(">.x", true).is_err());
        assert!(subject_matches("orders.>", "orders.dlq"));
        assert!(subject_matches("orders.*", "orders.dlq"));
        assert!(!subject_matches("orders.*", "orders.a.b"));
        assert!(!subject_matches("orders", "orders.dlq"));
    }

    #[test]
    fn servers_are_a_list_or_a_string_and_may_carry_credentials() {
        let one: NatsConfig = toml_edit::de::from_str(
            "servers = \"nats://a:4222, nats://u:p@b:4222\"\nstream = \"S\"\nconsumer = \"c\"\n",
        )
        .unwrap();
        assert_eq!(one.servers, ["nats://a:4222", "nats://u:p@b:4222"]);
        assert_eq!(one.url_credentials(), Some(("u".into(), Some("p".into()))));
        let both = NatsConfig {
            token: Some("t".into()),
            ..one
        };
        let text = problems(&both, &SourceContext::default()).join("\n");
        assert!(text.contains("two ways to authenticate"), "{text}");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = NatsConfig {
            servers: vec![
                "nats://app:s3cret@nats:4222".into(),
                "nats://t0ken@n2".into(),
            ],
            user: Some("app".into()),
            password: Some("s3cret".into()),
            ..config()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
        assert!(shown.contains("nats://app:***@nats:4222"), "{shown}");
        let token = NatsConfig {
            token: Some("t0ken".into()),
            ..config()
        };
        let settings = NatsSettings::from_config(&token, &SourceContext::default());
        assert!(!format!("{settings:?}").contains("t0ken"));
    }
}
