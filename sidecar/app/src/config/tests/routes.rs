//! `[[routes]]`: what a route sets over the top-level policy, and every mistake at its place.

use std::time::Duration;

use super::*;
use outrigger_core::OrderingMode;

const KAFKA: &str = "[source.kafka]\ntopics = [\"orders\", \"payments\"]\ngroup_id = \"g\"\n";

#[test]
fn a_route_sets_what_it_names_and_inherits_the_rest() {
    let text = format!(
        "default_action = \"drop\"\n{KAFKA}\
         [delivery]\nurl = \"http://127.0.0.1:8080/events\"\ntimeout = \"5s\"\n\
         [dedup]\nkey = \"{{json:/id}}\"\nfallback_key = \"{{message_id}}\"\n\
         [retry]\nmax_attempts = 7\n\
         [[classify.rules]]\nstatus = 404\naction = \"drop\"\n\
         [[routes]]\nname = \"refunds\"\n\
         [routes.match]\nsource = \"orders\"\ntype = \"order.refund*\"\nheaders = {{ x-tenant = \"acme\" }}\n\
         [routes.delivery]\npath = \"/refunds\"\n\
         [routes.dedup]\nkey = \"{{json:/refund_id}}\"\n\
         [routes.retry]\nmax_attempts = 3\n\
         [[routes.classify.rules]]\nstatus = 409\naction = \"ack\"\n\
         [routes.ordering]\nmode = \"none\"\n\
         [[routes]]\nname = \"legacy\"\naction = \"dead_letter\"\nmatch = {{ type = \"order.v1.*\" }}\n"
    );
    let c = load(&text).unwrap();
    assert_eq!(c.default_action, RouteAction::Drop);
    let refunds = c.routes[0].effective(&c);
    assert_eq!(
        refunds.delivery.url.to_string(),
        "http://127.0.0.1:8080/refunds"
    );
    assert_eq!(
        refunds.delivery.timeout,
        Duration::from_secs(5),
        "inherited"
    );
    assert_eq!(refunds.dedup.key.to_string(), "{json:/refund_id}");
    assert_eq!(
        refunds.dedup.fallback_key, None,
        "the top-level fallback belongs to the top-level key"
    );
    assert_eq!(refunds.retry.max_attempts, 3);
    let statuses: Vec<_> = refunds.classify.rules.iter().map(|r| r.action).collect();
    assert_eq!(
        statuses,
        [outrigger_core::Action::Ack, outrigger_core::Action::Drop],
        "the route's rules first, then the top-level ones"
    );
    assert_eq!(refunds.ordering.mode, Some(OrderingMode::None));
    assert_eq!(c.routes[1].action, RouteAction::DeadLetter);
    assert_eq!(
        c.routes[1].effective(&c).retry.max_attempts,
        7,
        "a route that sets nothing is the top-level policy"
    );
}

#[test]
fn every_mistake_in_a_route_is_reported_where_it_was_written() {
    let text = format!(
        "{KAFKA}\
         [dedup]\nlease = \"60s\"\n\
         [[routes]]\nname = \"refunds\"\n\
         match = {{ source = \"refunds\" }}\n\
         [routes.delivery]\ntimeout = \"90s\"\npath = \"refunds\"\n\
         [routes.retry]\nmax_attempts = 0\n\
         [routes.ordering]\nmode = \"keyed\"\n\
         [[routes]]\nname = \"refunds\"\nmatch = {{ source = \"orders\" }}\n\
         [[routes]]\nname = \"has space\"\naction = \"drop\"\n\
         [routes.retry]\nmax_attempts = 2\n\
         [[routes]]\nname = \"default\"\nmatch = {{ type = \"[x\" }}\n\
         [[routes]]\nname = \"late\"\n"
    );
    let errors = rejected(&text);
    assert_eq!(
        places(&errors),
        vec![
            (8, 11, "routes[0].match.source", Some("\"refunds\"")),
            (10, 1, "routes[0].delivery.timeout", Some("\"90s\"")),
            (11, 1, "routes[0].delivery.path", Some("\"refunds\"")),
            (13, 1, "routes[0].retry.max_attempts", Some("0")),
            (15, 8, "routes[0].ordering.mode", Some("\"keyed\"")),
            (17, 1, "routes[1].name", Some("\"refunds\"")),
            (20, 1, "routes[2].name", Some("\"has space\"")),
            (21, 1, "routes[2].action", Some("\"drop\"")),
            (25, 1, "routes[3].name", Some("\"default\"")),
            (26, 18, "routes[3].match.type", Some("\"[x\"")),
            (27, 1, "routes[4]", None),
        ],
        "{errors:#?}"
    );
    let message = |path: &str| &errors.iter().find(|e| e.path == path).unwrap().message;
    assert!(message("routes[0].match.source").contains("(orders, payments)"));
    assert!(message("routes[0].delivery.timeout").contains("dedup.lease (1m)"));
    assert!(message("routes[1].name").contains("two routes are named \"refunds\""));
    assert!(message("routes[2].action").contains("delivers nothing"));
    assert!(message("routes[3].name").contains("top-level policy"));
    assert!(message("routes[3].match.type").contains("not a valid glob"));
    assert!(message("routes[4]").contains("routes[2] before it has no `match`"));
}

#[test]
fn a_route_cannot_choose_the_retry_mode_or_order_what_its_broker_cannot() {
    let errors = rejected(&format!(
        "{KAFKA}[[routes]]\nname = \"r\"\n[routes.retry]\nmode = \"queue\"\n"
    ));
    assert_eq!(places(&errors)[0].2, "routes[0].retry.mode", "{errors:#?}");
    // NATS redelivers with ordering none only: a route asking for key order is refused there.
    let errors = rejected(
        "[source.nats]\nstream = \"s\"\nconsumer = \"c\"\n[retry]\nmode = \"redeliver\"\n\
         [ordering]\nmode = \"none\"\n[[routes]]\nname = \"r\"\n[routes.ordering]\nmode = \"key\"\n",
    );
    assert_eq!(
        places(&errors),
        vec![(11, 1, "routes[0].ordering.mode", Some("\"key\""))],
        "{errors:#?}"
    );
}

#[test]
fn a_reload_may_change_routes_but_not_what_they_order() {
    let base = format!("{KAFKA}[[routes]]\nname = \"r\"\nmatch = {{ source = \"orders\" }}\n");
    let old = load(&base).unwrap();
    let new = load(&format!("{base}[routes.delivery]\npath = \"/r\"\n")).unwrap();
    assert_eq!(old.restart_only_changes(&new), Vec::<&str>::new());
    assert_eq!(old.changed_sections(&new), ["routes"]);
    let unrouted = load(KAFKA).unwrap();
    assert_eq!(
        unrouted.restart_only_changes(&old),
        Vec::<&str>::new(),
        "a route keeping the top-level order comes and goes with a reload"
    );
    let reordered = load(&format!("{base}[routes.ordering]\nmode = \"none\"\n")).unwrap();
    assert_eq!(old.restart_only_changes(&reordered), ["routes"]);
    assert_eq!(reordered.restart_only_changes(&old), ["routes"]);
    let moved = load(&format!(
        "{KAFKA}[[routes]]\nname = \"r\"\nmatch = {{ source = \"payments\" }}\n[routes.ordering]\nmode = \"none\"\n"
    ))
    .unwrap();
    assert_eq!(
        reordered.restart_only_changes(&moved),
        ["routes"],
        "what a route of its own order takes stays until a restart"
    );
    let sequenced = load(&format!(
        "{base}[routes.ordering]\nsequence = \"{{json:/seq}}\"\n"
    ))
    .unwrap();
    assert_eq!(
        old.restart_only_changes(&sequenced),
        ["routes"],
        "a route gaining a sequence orders its keys anew"
    );
}

#[test]
fn a_route_names_its_dead_letter_destination_and_the_others_inherit_the_policys() {
    let text = format!(
        "{KAFKA}[dead_letter]\ndestination = \"all.dlq\"\n\
         [[routes]]\nname = \"refunds\"\nmatch = {{ type = \"refund.*\" }}\n\
         [routes.dead_letter]\ndestination = \"refunds.dlq\"\n\
         [[routes]]\nname = \"legacy\"\naction = \"dead_letter\"\nmatch = {{ type = \"v1.*\" }}\n\
         dead_letter = {{ destination = \"legacy.dlq\" }}\n\
         [[routes]]\nname = \"plain\"\nmatch = {{ type = \"plain.*\" }}\n"
    );
    let c = load(&text).unwrap();
    let refunds = c.routes[0].effective(&c);
    assert_eq!(
        refunds.dead_letter.destination.as_deref(),
        Some("refunds.dlq")
    );
    assert!(refunds.dead_letter.declare, "declare stays the policy's");
    let plain = c.routes[2].effective(&c);
    assert_eq!(plain.dead_letter.destination.as_deref(), Some("all.dlq"));
    let context = c.source_context();
    let named: Vec<(&str, &str, String)> = context
        .route_dead_letters
        .iter()
        .map(|r| (r.route.as_str(), r.destination.as_str(), r.path.to_string()))
        .collect();
    assert_eq!(
        named,
        [
            (
                "refunds",
                "refunds.dlq",
                "routes[0].dead_letter.destination".to_owned()
            ),
            (
                "legacy",
                "legacy.dlq",
                "routes[1].dead_letter.destination".to_owned()
            ),
        ]
    );
    assert!(
        c.summary().ends_with(
            "dead letters to \"all.dlq\"; 3 routes (dead letters of \"refunds\" to \
             \"refunds.dlq\", \"legacy\" to \"legacy.dlq\")"
        ),
        "{}",
        c.summary()
    );
    let explained = explain(&c, "type=refund.created").unwrap();
    assert!(
        explained.ends_with("dead letters to \"refunds.dlq\""),
        "{explained}"
    );
    let explained = explain(&c, "type=v1.created").unwrap();
    assert!(
        explained.ends_with("dead-lettered without delivery to \"legacy.dlq\""),
        "{explained}"
    );
    let explained = explain(&c, "type=plain.x").unwrap();
    assert!(
        explained.ends_with("dead letters to \"all.dlq\""),
        "{explained}"
    );
    let routes = crate::run::routes(&c);
    let mut message = outrigger_core::Message::new(
        "{}",
        outrigger_core::Coordinates::Memory {
            queue: "orders".into(),
            sequence: 1,
        },
    );
    message.headers = vec![outrigger_core::Header::new("ce-type", "refund.created")];
    assert_eq!(
        routes.pick(&message).dead_letter.as_deref(),
        Some("refunds.dlq")
    );
    message.headers = vec![outrigger_core::Header::new("ce-type", "plain.x")];
    assert_eq!(
        routes.pick(&message).dead_letter,
        None,
        "the source's own destination, which the adapter knows"
    );
}

#[test]
fn a_route_dead_letter_mistake_is_reported_at_the_route() {
    let errors = rejected(&format!(
        "{KAFKA}[[routes]]\nname = \"a\"\nmatch = {{ type = \"a\" }}\n\
         [routes.dead_letter]\ndestination = \"a.dlq\"\ndeclare = false\n"
    ));
    assert_eq!(
        places(&errors),
        vec![(9, 1, "routes[0].dead_letter.declare", Some("false"))],
        "{errors:#?}"
    );
    assert!(errors[0].message.contains("unknown"), "{errors:#?}");
    let errors = rejected(&format!(
        "{KAFKA}[[routes]]\nname = \"a\"\nmatch = {{ type = \"a\" }}\n\
         [routes.dead_letter]\ndestination = \" \"\n\
         [[routes]]\nname = \"b\"\naction = \"drop\"\nmatch = {{ type = \"b\" }}\n\
         [routes.dead_letter]\ndestination = \"b.dlq\"\n\
         [[routes]]\nname = \"c\"\nmatch = {{ type = \"c\" }}\n\
         [routes.dead_letter]\ndestination = \"orders\"\n"
    ));
    assert_eq!(
        places(&errors),
        vec![
            (8, 1, "routes[0].dead_letter.destination", Some("\" \"")),
            (
                14,
                1,
                "routes[1].dead_letter.destination",
                Some("\"b.dlq\"")
            ),
            (
                19,
                1,
                "routes[2].dead_letter.destination",
                Some("\"orders\"")
            ),
        ],
        "{errors:#?}"
    );
    let message = |path: &str| &errors.iter().find(|e| e.path == path).unwrap().message;
    assert!(message("routes[0].dead_letter.destination").contains("must not be empty"));
    assert!(message("routes[1].dead_letter.destination").contains("action is drop"));
    assert!(
        message("routes[2].dead_letter.destination")
            .contains("route \"c\" must differ from every source topic"),
        "{errors:#?}"
    );
}

#[test]
fn a_reload_may_not_name_a_dead_letter_destination_not_declared_at_start() {
    let base = format!("{KAFKA}[[routes]]\nname = \"r\"\nmatch = {{ source = \"orders\" }}\n");
    let old = load(&format!(
        "{base}[routes.dead_letter]\ndestination = \"r.dlq\"\n"
    ))
    .unwrap();
    let same = load(&format!(
        "{base}[routes.delivery]\npath = \"/r\"\n[routes.dead_letter]\ndestination = \"r.dlq\"\n"
    ))
    .unwrap();
    assert_eq!(old.restart_only_changes(&same), Vec::<&str>::new());
    let other = load(&format!(
        "{base}[routes.dead_letter]\ndestination = \"s.dlq\"\n"
    ))
    .unwrap();
    assert_eq!(old.restart_only_changes(&other), ["routes"]);
    let none = load(&base).unwrap();
    assert_eq!(none.restart_only_changes(&old), ["routes"]);
}
