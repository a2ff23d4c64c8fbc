//! Source coordinates (`kafka:orders/3@42`, `amqp:orders#7`): the text form a dead letter and
//! a retry copy carry.
//!
//! Input: read twice, as text to parse and as the makings of coordinates to print.
//!
//! Properties: parsing never panics; whatever parses prints as text that parses back to the
//! same coordinates; any coordinates a broker can give print and parse back to themselves.

use outrigger_core::Coordinates;

use super::input::{text, Reader};

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Ok(parsed) = text(data).parse::<Coordinates>() {
        assert_eq!(parsed.to_string().parse().as_ref(), Ok(&parsed));
    }
    let built = build(&mut Reader::new(data));
    assert_eq!(built.to_string().parse().as_ref(), Ok(&built));
}

/// Coordinates a broker could hand out: names not empty, a Redis entry id without `@`
/// (Redis writes them `ms-seq`), numbers anything.
pub fn build(r: &mut Reader) -> Coordinates {
    let kind = r.byte();
    let name = name(r);
    match kind % 5 {
        0 => Coordinates::Kafka {
            topic: name,
            partition: r.u32() as i32,
            offset: r.u64() as i64,
        },
        1 => Coordinates::Amqp {
            queue: name,
            delivery_tag: r.u64(),
        },
        2 => Coordinates::RedisStream {
            stream: name,
            id: Some(r.string().replace('@', ""))
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| "0-1".into()),
        },
        3 => Coordinates::Nats {
            stream: name,
            sequence: r.u64(),
        },
        _ => Coordinates::Memory {
            queue: name,
            sequence: r.u64(),
        },
    }
}

fn name(r: &mut Reader) -> String {
    let name = r.string();
    if name.is_empty() {
        "q".into()
    } else {
        name
    }
}
