//! What a source checks and creates at connect: the stream, the durable pull consumer, and the
//! stream that captures the dead-letter subject.

use std::fmt::Display;

use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, Stream};
use async_nats::jetstream::Context;
use outrigger_core::SourceError;
use tracing::{info, warn};

use crate::config::{NatsConfig, NatsSettings, StartFrom};

/// JetStream's error codes the adapter tells apart.
const STREAM_NOT_FOUND: u64 = 10059;
const JETSTREAM_NOT_ENABLED: u64 = 10076;
const JETSTREAM_NOT_ENABLED_FOR_ACCOUNT: u64 = 10039;

/// Whether a JetStream error carries this error code (async-nats writes it into the text of
/// every kind of error that wraps one).
pub(crate) fn has_code(error: &dyn Display, code: u64) -> bool {
    error.to_string().contains(&format!("error code {code})"))
}

/// A failed JetStream API call: a refusal no retry cures (JetStream off, denied) is
/// [`SourceError::Rejected`], anything else [`SourceError::Connection`].
pub(crate) fn api_error(doing: &str, error: &dyn Display) -> SourceError {
    let text = format!("{doing}: {error}");
    if has_code(error, JETSTREAM_NOT_ENABLED) || has_code(error, JETSTREAM_NOT_ENABLED_FOR_ACCOUNT)
    {
        SourceError::Rejected(format!("{text}; the server must run with JetStream (-js)"))
    } else if text.contains("Permissions Violation") || text.contains("permissions violation") {
        SourceError::Rejected(text)
    } else {
        SourceError::Connection(text)
    }
}

/// The source stream: found, or created when `create_stream` says so.
pub(crate) async fn stream(js: &Context, config: &NatsConfig) -> Result<Stream, SourceError> {
    match js.get_stream(&config.stream).await {
        Ok(stream) => Ok(stream),
        Err(e) if has_code(&e, STREAM_NOT_FOUND) && config.create_stream => {
            let created = js
                .create_stream(stream::Config {
                    name: config.stream.clone(),
                    subjects: config.subjects.clone(),
                    ..stream::Config::default()
                })
                .await
                .map_err(|e| {
                    SourceError::Rejected(format!("creating stream {:?}: {e}", config.stream))
                })?;
            info!(stream = %config.stream, subjects = ?config.subjects, "Created the stream.");
            Ok(created)
        }
        Err(e) if has_code(&e, STREAM_NOT_FOUND) => Err(SourceError::Rejected(format!(
            "stream {:?} does not exist; create it, or set source.nats.create_stream = true \
             with its subjects",
            config.stream
        ))),
        Err(e) => Err(api_error(
            &format!("looking up stream {:?}", config.stream),
            &e,
        )),
    }
}

/// The durable pull consumer: found and checked, or created with the policy's settings when
/// `create_consumer` says so.
pub(crate) async fn consumer(
    stream: &Stream,
    settings: &NatsSettings,
) -> Result<PullConsumer, SourceError> {
    let config = &settings.config;
    let name = &config.consumer;
    use async_nats::jetstream::context::ConsumerInfoErrorKind;
    match stream.consumer_info(name).await {
        Ok(found) => {
            check_bound(&found, settings)?;
            stream
                .get_consumer::<pull::Config>(name)
                .await
                .map_err(|e| api_error(&format!("binding consumer {name:?}"), &e))
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound && config.create_consumer => {
            let wanted = pull::Config {
                durable_name: Some(name.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_ack_pending: i64::from(settings.max_ack_pending),
                // The pipeline counts attempts and dead-letters past its budget: JetStream must
                // never stop delivering a message on its own, with no dead letter kept.
                max_deliver: -1,
                filter_subject: config.filter_subject.clone().unwrap_or_default(),
                deliver_policy: match config.start_from {
                    StartFrom::All => DeliverPolicy::All,
                    StartFrom::New => DeliverPolicy::New,
                },
                ..pull::Config::default()
            };
            let created = stream
                .create_consumer(wanted)
                .await
                .map_err(|e| api_error(&format!("creating consumer {name:?}"), &e))?;
            info!(stream = %config.stream, consumer = %name, "Created the durable consumer.");
            Ok(created)
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            Err(SourceError::Rejected(format!(
                "consumer {name:?} of stream {:?} does not exist; create it, or set \
             source.nats.create_consumer = true",
                config.stream
            )))
        }
        Err(e) => Err(api_error(&format!("looking up consumer {name:?}"), &e)),
    }
}

/// An existing consumer the sidecar can use: pull, explicit acks, whole messages, the filter
/// asked for if any. What would only weaken a guarantee is a warning; its other settings
/// (ack_wait, max_ack_pending, request limits) are used as they are.
fn check_bound(found: &consumer::Info, settings: &NatsSettings) -> Result<(), SourceError> {
    let c = &found.config;
    let name = &found.name;
    if c.deliver_subject.is_some() {
        return Err(SourceError::Rejected(format!(
            "consumer {name:?} is a push consumer; the sidecar needs a pull consumer"
        )));
    }
    if c.ack_policy != AckPolicy::Explicit {
        let policy = match c.ack_policy {
            AckPolicy::None => "none",
            AckPolicy::All => "all",
            AckPolicy::Explicit => "explicit",
        };
        return Err(SourceError::Rejected(format!(
            "consumer {name:?} has ack_policy {policy}; the sidecar acks each message once its \
             outcome is durable and needs ack_policy explicit"
        )));
    }
    if c.headers_only {
        return Err(SourceError::Rejected(format!(
            "consumer {name:?} has headers_only set, so it delivers no payloads; the sidecar \
             hands the app each message whole and needs a consumer without it"
        )));
    }
    // JetStream keeps a bound consumer's filter: consuming with another than the one asked
    // for would hand the app messages it did not ask for, or skip some it did.
    if let Some(wanted) = settings.config.filter_subject.as_ref() {
        if *wanted != c.filter_subject {
            return Err(SourceError::Rejected(format!(
                "consumer {name:?} filters on {:?}, not source.nats.filter_subject {wanted:?}, \
                 and an existing consumer keeps its filter; set filter_subject to the \
                 consumer's, remove it, or name another consumer",
                c.filter_subject
            )));
        }
    }
    if c.durable_name.is_none() {
        warn!(consumer = %name, "The consumer is not durable: it goes away once unused.");
    }
    if c.max_deliver > 0 {
        warn!(
            consumer = %name,
            max_deliver = c.max_deliver,
            "The consumer stops delivering a message after max_deliver deliveries, without a \
             dead letter; give it max_deliver -1 and let retry.max_attempts decide."
        );
    }
    if c.max_ack_pending > 0 && (c.max_ack_pending as u64) < settings.max_in_flight as u64 {
        warn!(
            consumer = %name,
            max_ack_pending = c.max_ack_pending,
            max_in_flight = settings.max_in_flight,
            "The consumer's max_ack_pending is below backpressure.max_in_flight; JetStream \
             hands out no more than it allows."
        );
    }
    Ok(())
}

/// The name of the stream that captures the dead-letter subject: found, or created when
/// `dead_letter.declare` is on. Refused when it is the source stream.
pub(crate) async fn dead_letter_stream(
    js: &Context,
    settings: &NatsSettings,
    declare: bool,
) -> Result<String, SourceError> {
    dead_letter_stream_of(js, settings, &settings.dead_letter_subject, declare).await
}

/// Makes sure a stream captures each dead-letter subject a route names: found, or, when
/// `dead_letter.declare` is on, added to the dead-letter stream (created when missing).
pub(crate) async fn route_dead_letter_streams(
    js: &Context,
    settings: &NatsSettings,
) -> Result<(), SourceError> {
    for subject in &settings.route_dead_letter_subjects {
        dead_letter_stream_of(js, settings, subject, settings.declare_dead_letters).await?;
    }
    Ok(())
}

/// The stream that captures `subject`, a dead-letter subject; see [`dead_letter_stream`].
/// A missing one is the dead-letter stream, created, or made to capture `subject` too when it
/// exists already (it captures the source's dead-letter subject, or another route's).
async fn dead_letter_stream_of(
    js: &Context,
    settings: &NatsSettings,
    subject: &str,
    declare: bool,
) -> Result<String, SourceError> {
    let config = &settings.config;
    match js.stream_by_subject(subject.to_owned()).await {
        Ok(name) if name == config.stream => Err(SourceError::Rejected(format!(
            "the dead-letter subject {subject:?} is captured by the source stream {name:?}, so \
             dead letters would be consumed again; set dead_letter.destination to a subject \
             outside it"
        ))),
        Ok(name) => Ok(name),
        Err(e)
            if e.kind() == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound =>
        {
            if !declare {
                return Err(SourceError::Rejected(format!(
                    "no stream captures the dead-letter subject {subject:?}; create one, or \
                     set dead_letter.declare = true"
                )));
            }
            let name = config.dead_letter_stream_name();
            match js.get_stream(&name).await {
                Ok(mut stream) => {
                    let info = stream
                        .info()
                        .await
                        .map_err(|e| api_error(&format!("looking up stream {name:?}"), &e))?;
                    let mut wanted = info.config.clone();
                    wanted.subjects.push(subject.to_owned());
                    js.update_stream(wanted).await.map_err(|e| {
                        SourceError::Rejected(format!(
                            "adding {subject:?} to the dead-letter stream {name:?}: {e}"
                        ))
                    })?;
                    info!(stream = %name, subject = %subject, "The dead-letter stream captures another subject.");
                    return Ok(name);
                }
                Err(e) if has_code(&e, STREAM_NOT_FOUND) => {}
                Err(e) => return Err(api_error(&format!("looking up stream {name:?}"), &e)),
            }
            js.create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject.to_owned()],
                // Dead letters wait for an operator: never dropped for age or count.
                storage: stream::StorageType::File,
                ..stream::Config::default()
            })
            .await
            .map_err(|e| {
                SourceError::Rejected(format!(
                    "creating the dead-letter stream {name:?} for {subject:?}: {e}"
                ))
            })?;
            info!(stream = %name, subject = %subject, "Created the dead-letter stream.");
            Ok(name)
        }
        Err(e) => Err(api_error(
            &format!("looking up the stream of the dead-letter subject {subject:?}"),
            &e,
        )),
    }
}

/// Retry mode `queue`: the stream capturing the retry subjects (`<stream>.retry.<n>`), found
/// or created (file storage, limits retention), and its durable pull consumer
/// (`<consumer>-retry`, explicit acks, the source consumer's `ack_wait`). Refused when another
/// stream (the source or dead-letter one) captures a retry subject.
pub(crate) async fn retry_consumer(
    js: &Context,
    settings: &NatsSettings,
    ack_wait: std::time::Duration,
) -> Result<PullConsumer, SourceError> {
    let config = &settings.config;
    let name = config.retry_stream_name();
    let subjects: Vec<String> = (0..settings.retry_tiers.len())
        .map(|tier| config.retry_subject(tier))
        .collect();
    for subject in &subjects {
        match js.stream_by_subject(subject.clone()).await {
            Ok(found) if found != name => {
                return Err(SourceError::Rejected(format!(
                    "the retry subject {subject:?} is captured by stream {found:?}, so retry \
                     copies would not wait in the retry stream {name:?}; keep {found:?} from \
                     capturing it"
                )))
            }
            Ok(_) => {}
            Err(e)
                if e.kind()
                    == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound => {}
            Err(e) => {
                return Err(api_error(
                    &format!("looking up the stream of the retry subject {subject:?}"),
                    &e,
                ))
            }
        }
    }
    let stream = match js.get_stream(&name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| api_error(&format!("looking up stream {name:?}"), &e))?
                .clone();
            if subjects.iter().any(|s| !info.config.subjects.contains(s)) {
                let mut wanted = info.config.clone();
                for s in &subjects {
                    if !wanted.subjects.contains(s) {
                        wanted.subjects.push(s.clone());
                    }
                }
                js.update_stream(wanted).await.map_err(|e| {
                    SourceError::Rejected(format!("updating the retry stream {name:?}: {e}"))
                })?;
            }
            stream
        }
        Err(e) if has_code(&e, STREAM_NOT_FOUND) => {
            let created = js
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: subjects.clone(),
                    storage: stream::StorageType::File,
                    retention: stream::RetentionPolicy::Limits,
                    ..stream::Config::default()
                })
                .await
                .map_err(|e| {
                    SourceError::Rejected(format!("creating the retry stream {name:?}: {e}"))
                })?;
            info!(stream = %name, subjects = ?subjects, "Created the retry stream.");
            created
        }
        Err(e) => return Err(api_error(&format!("looking up stream {name:?}"), &e)),
    };
    let consumer = config.retry_consumer_name();
    stream
        .get_or_create_consumer(
            &consumer,
            pull::Config {
                durable_name: Some(consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: i64::from(settings.max_ack_pending),
                max_deliver: -1,
                deliver_policy: DeliverPolicy::All,
                ..pull::Config::default()
            },
        )
        .await
        .map_err(|e| api_error(&format!("binding the retry consumer {consumer:?}"), &e))
}
