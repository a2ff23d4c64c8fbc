//! Checks several adapters make the same way, over what every source shares.

use crate::broker::{SourceContext, SourceName};
use crate::config::{KeyPath, Problems};

/// No dead letter may land where the source consumes, or it would be consumed again: an
/// explicit `dead_letter.destination`, and every destination a route names, must differ from
/// every source name, and without the first, the default `<name>.dlq` of one name must not be
/// another name consumed. `noun` is what a name is called (`queue`, `topic`, `stream`); with
/// `many`, the source may consume several.
pub fn dead_letters_not_consumed(
    names: &[SourceName],
    context: &SourceContext,
    noun: &str,
    many: bool,
) -> Problems {
    let mut p = Problems::default();
    let which = if !many {
        format!("the source {noun}")
    } else {
        format!("every source {noun}")
    };
    for route in &context.route_dead_letters {
        if let Some(name) = names.iter().find(|n| n.name == route.destination) {
            p.at_paths(
                vec![route.path.clone(), name.path.clone()],
                format!(
                    "the dead-letter destination of route {:?} must differ from {which}, or \
                     its dead letters would be consumed again",
                    route.route
                ),
            );
        }
    }
    let destination = KeyPath::parse("dead_letter.destination");
    if let Some(set) = &context.dead_letter_destination {
        if let Some(name) = names.iter().find(|n| &n.name == set) {
            p.at_paths(
                vec![destination, name.path.clone()],
                format!("must differ from {which}, or dead letters would be consumed again"),
            );
        }
        return p;
    }
    for name in names {
        let by_default = |from: &&SourceName| context.dead_letter_for(&from.name) == name.name;
        if let Some(from) = names.iter().find(by_default) {
            p.at_paths(
                vec![destination.clone(), name.path.clone()],
                format!(
                    "dead letters of {noun} {:?} go to {:?} by default, so they would be \
                     consumed again; set dead_letter.destination or consume one of the two",
                    from.name, name.name
                ),
            );
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::RouteDeadLetter;

    fn names(all: &[&str]) -> Vec<SourceName> {
        let at = KeyPath::parse("source.kafka.topics");
        all.iter()
            .enumerate()
            .map(|(i, n)| SourceName {
                name: (*n).to_owned(),
                path: at.index(i),
            })
            .collect()
    }

    #[test]
    fn a_destination_that_is_consumed_is_refused() {
        let context = SourceContext {
            dead_letter_destination: Some("b".into()),
            ..SourceContext::default()
        };
        let found =
            dead_letters_not_consumed(&names(&["a", "b"]), &context, "topic", true).into_vec();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].paths[1].to_string(), "source.kafka.topics[1]");
        assert!(found[0]
            .message
            .starts_with("must differ from every source topic"));
        let by_default = dead_letters_not_consumed(
            &names(&["a", "a.dlq"]),
            &SourceContext::default(),
            "topic",
            true,
        )
        .into_vec();
        assert_eq!(by_default.len(), 1);
        assert!(by_default[0]
            .message
            .starts_with("dead letters of topic \"a\" go to \"a.dlq\""));
        assert!(dead_letters_not_consumed(
            &names(&["a", "b"]),
            &SourceContext::default(),
            "topic",
            true
        )
        .is_empty());
    }

    #[test]
    fn a_route_destination_that_is_consumed_is_refused_at_the_route() {
        let context = SourceContext {
            route_dead_letters: vec![RouteDeadLetter {
                route: "refunds".into(),
                destination: "b".into(),
                path: KeyPath::parse("routes")
                    .index(1)
                    .key("dead_letter")
                    .key("destination"),
            }],
            ..SourceContext::default()
        };
        let found =
            dead_letters_not_consumed(&names(&["a", "b"]), &context, "topic", true).into_vec();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "routes[1].dead_letter.destination: the dead-letter destination of route \
             \"refunds\" must differ from every source topic, or its dead letters would be \
             consumed again"
        );
        assert_eq!(found[0].paths[1].to_string(), "source.kafka.topics[1]");
    }
}
