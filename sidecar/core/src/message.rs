//! A message as a broker delivered it, normalised across brokers.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use bytes::Bytes;

use crate::retry::Trail;

/// One broker header: its name and its value's bytes, exactly as carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header name as the broker spelled it.
    pub name: String,
    /// Raw value; text headers are UTF-8.
    pub value: Bytes,
}

impl Header {
    /// A header from a name and any byte-like value.
    pub fn new(name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Where a message sits in its broker: enough to find it again and to report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coordinates {
    /// A Kafka record.
    Kafka {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Offset in the partition.
        offset: i64,
    },
    /// A RabbitMQ delivery.
    Amqp {
        /// Queue it was consumed from.
        queue: String,
        /// Channel-scoped delivery tag.
        delivery_tag: u64,
    },
    /// A Redis Streams entry.
    RedisStream {
        /// Stream key.
        stream: String,
        /// Entry id (`ms-seq`).
        id: String,
    },
    /// A NATS JetStream message.
    Nats {
        /// Stream name.
        stream: String,
        /// Stream sequence number.
        sequence: u64,
    },
    /// A message of the in-process memory broker.
    Memory {
        /// Queue name.
        queue: String,
        /// Sequence number in the queue, from 1.
        sequence: u64,
    },
}

impl Coordinates {
    /// The broker kind, as used in metric labels and CloudEvents sources.
    pub fn broker(&self) -> &'static str {
        match self {
            Coordinates::Kafka { .. } => "kafka",
            Coordinates::Amqp { .. } => "amqp",
            Coordinates::RedisStream { .. } => "redis",
            Coordinates::Nats { .. } => "nats",
            Coordinates::Memory { .. } => "memory",
        }
    }

    /// The partition (or the queue, or the stream) this position is in, as one name:
    /// `<topic>/<partition>` on Kafka, the queue or stream name elsewhere. Ordering mode
    /// `partition` keeps order within it; parked-key chains are counted per partition.
    pub fn partition(&self) -> String {
        match self {
            Coordinates::Kafka {
                topic, partition, ..
            } => partition_name(topic, &partition.to_string()),
            other => other.source_name().to_owned(),
        }
    }

    /// The topic, queue or stream the message came from.
    pub fn source_name(&self) -> &str {
        match self {
            Coordinates::Kafka { topic, .. } => topic,
            Coordinates::Amqp { queue, .. } | Coordinates::Memory { queue, .. } => queue,
            Coordinates::RedisStream { stream, .. } | Coordinates::Nats { stream, .. } => stream,
        }
    }
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Coordinates::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            Coordinates::Amqp {
                queue,
                delivery_tag,
            } => write!(f, "amqp:{queue}#{delivery_tag}"),
            Coordinates::RedisStream { stream, id } => write!(f, "redis:{stream}@{id}"),
            Coordinates::Nats { stream, sequence } => write!(f, "nats:{stream}@{sequence}"),
            Coordinates::Memory { queue, sequence } => write!(f, "memory:{queue}@{sequence}"),
        }
    }
}

impl FromStr for Coordinates {
    type Err = ParseCoordinatesError;

    /// Parses the [`Display`](fmt::Display) form back (`amqp:orders#7`, `kafka:orders/3@42`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCoordinatesError(s.to_owned());
        let (broker, rest) = s.split_once(':').ok_or_else(err)?;
        let non_empty = |name: &str| (!name.is_empty()).then(|| name.to_owned()).ok_or_else(err);
        // Names may hold the separators; the numbers after the last one may not.
        Ok(match broker {
            "kafka" => {
                let (topic_partition, offset) = rest.rsplit_once('@').ok_or_else(err)?;
                let (topic, partition) = topic_partition.rsplit_once('/').ok_or_else(err)?;
                Coordinates::Kafka {
                    topic: non_empty(topic)?,
                    partition: partition.parse().map_err(|_| err())?,
                    offset: offset.parse().map_err(|_| err())?,
                }
            }
            "amqp" => {
                let (queue, tag) = rest.rsplit_once('#').ok_or_else(err)?;
                Coordinates::Amqp {
                    queue: non_empty(queue)?,
                    delivery_tag: tag.parse().map_err(|_| err())?,
                }
            }
            "redis" | "nats" | "memory" => {
                let (name, position) = rest.rsplit_once('@').ok_or_else(err)?;
                let name = non_empty(name)?;
                match broker {
                    "redis" => Coordinates::RedisStream {
                        stream: name,
                        id: non_empty(position)?,
                    },
                    "nats" => Coordinates::Nats {
                        stream: name,
                        sequence: position.parse().map_err(|_| err())?,
                    },
                    _ => Coordinates::Memory {
                        queue: name,
                        sequence: position.parse().map_err(|_| err())?,
                    },
                }
            }
            _ => return Err(err()),
        })
    }
}

/// One name for partition `partition` of `source` (see [`Coordinates::partition`]):
/// `<source>/<partition>`, or the source alone where it has no partitions (`partition` empty).
pub fn partition_name(source: &str, partition: &str) -> String {
    if partition.is_empty() {
        source.to_owned()
    } else {
        format!("{source}/{partition}")
    }
}

/// Text that is not the display form of any [`Coordinates`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not source coordinates: {0:?}")]
pub struct ParseCoordinatesError(pub String);

/// One message, normalised across brokers. The payload and headers are kept byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The body, exactly as produced.
    pub payload: Bytes,
    /// Broker headers in the order the broker gave them.
    pub headers: Vec<Header>,
    /// Partitioning key: the Kafka key, the AMQP routing key, and so on.
    pub key: Option<Bytes>,
    /// The broker's or producer's message id, where there is one.
    pub message_id: Option<String>,
    /// Content type declared by the producer.
    pub content_type: Option<String>,
    /// Producer or broker timestamp.
    pub timestamp: Option<SystemTime>,
    /// Where the message sits in its broker.
    pub coordinates: Coordinates,
    /// The broker says this message was delivered before (to us or a peer).
    pub redelivered: bool,
    /// How many times the broker has handed this message out, this time included, where it
    /// counts (Redis Streams' times-delivered, JetStream's `num_delivered`, a RabbitMQ quorum
    /// queue's `x-delivery-count` + 1). Attempts never count below it, so a message whose
    /// deliveries keep ending without an outcome (a crash during each) runs out of attempts.
    pub deliveries: Option<u32>,
    /// Set on a copy read from a retry queue: where the message first came from and how far
    /// it got. `coordinates` is then the origin too; the copy's own place is the adapter's.
    pub trail: Option<Trail>,
}

impl Message {
    /// A message with only a payload and coordinates; the rest empty.
    pub fn new(payload: impl Into<Bytes>, coordinates: Coordinates) -> Self {
        Self {
            payload: payload.into(),
            headers: Vec::new(),
            key: None,
            message_id: None,
            content_type: None,
            timestamp: None,
            coordinates,
            redelivered: false,
            deliveries: None,
            trail: None,
        }
    }

    /// The first header with this name, compared ASCII case-insensitively.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| &h.value)
    }

    /// The first header with this name, if it is UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A CloudEvents attribute (`type`, `id`, ...) the producer set as a header, in any
    /// binding's spelling (`ce-type` for HTTP and RabbitMQ, `ce_type` for Kafka,
    /// `cloudEvents:type` for AMQP, `cloudEvents_type` for JMS-style brokers): the first
    /// such header whose value is UTF-8 and not blank.
    pub fn ce_attribute(&self, attr: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let name = h.name.as_str();
            let bare = name
                .strip_prefix("ce-")
                .or_else(|| name.strip_prefix("ce_"))
                .or_else(|| name.strip_prefix("cloudEvents:"))
                .or_else(|| name.strip_prefix("cloudEvents_"))?;
            if !bare.eq_ignore_ascii_case(attr) {
                return None;
            }
            std::str::from_utf8(&h.value)
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case() {
        let mut m = Message::new(
            "{}",
            Coordinates::Memory {
                queue: "q".into(),
                sequence: 1,
            },
        );
        m.headers.push(Header::new("Idempotency-Key", "abc"));
        assert_eq!(m.header_str("idempotency-key"), Some("abc"));
        assert_eq!(m.header("missing"), None);
    }

    #[test]
    fn coordinates_display_names_the_position() {
        let c = Coordinates::Kafka {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
        };
        assert_eq!(c.to_string(), "kafka:orders/3@42");
        assert_eq!(c.source_name(), "orders");
        assert_eq!(c.partition(), "orders/3");
        assert_eq!(c.broker(), "kafka");
    }

    #[test]
    fn coordinates_parse_back_from_their_display_form() {
        let all = [
            Coordinates::Kafka {
                topic: "orders.v2".into(),
                partition: 3,
                offset: 42,
            },
            Coordinates::Amqp {
                queue: "orders#eu".into(),
                delivery_tag: 7,
            },
            Coordinates::RedisStream {
                stream: "s".into(),
                id: "1700000000000-0".into(),
            },
            Coordinates::Nats {
                stream: "n".into(),
                sequence: 9,
            },
            Coordinates::Memory {
                queue: "q@x".into(),
                sequence: 1,
            },
        ];
        for c in all {
            assert_eq!(c.to_string().parse::<Coordinates>(), Ok(c));
        }
        for bad in ["", "amqp:orders", "kafka:orders@1", "ftp:x#1", "amqp:#1"] {
            assert!(bad.parse::<Coordinates>().is_err(), "{bad}");
        }
    }
}
