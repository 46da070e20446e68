use super::*;

#[test]
fn every_service_has_a_user_and_publishes_only_its_own_messages() {
    let all = service_permissions();
    assert_eq!(all.len(), 5);
    let worker = permissions_of("worker").unwrap();
    assert_eq!(worker.user, "journal_worker");
    assert!(worker.publish.contains(&"events.export.ready".to_owned()));
    assert!(!worker.publish.contains(&"events.user.created".to_owned()));
    assert!(!worker.publish.iter().any(|subject| subject == "events.>"));
    assert!(
        worker
            .subscribe
            .contains(&"_INBOX_journal_worker.>".to_owned())
    );
    let notifier = permissions_of("notifier").unwrap();
    assert!(!notifier.publish.iter().any(|subject| {
        ["events.", "tasks.", "changes.", "queries."]
            .iter()
            .any(|root| subject.starts_with(root))
            || subject.starts_with("$JS.API.CONSUMER.*.TASKS")
    }));
}

/// The subject of every `define_event!` / `define_task!` in the messages crate.
fn defined_subjects() -> Vec<String> {
    let source = include_str!("../../../messages/src/lib.rs");
    let quoted = |text: &str| -> Vec<String> {
        text.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut subjects = Vec::new();
    for (index, _) in source.match_indices("define_event!(") {
        let call = &source[index..];
        let call = &call[..call.find(");").unwrap()];
        subjects.push(format!("events.{}", quoted(call)[0]));
    }
    for (index, _) in source.match_indices("define_task!(") {
        let call = &source[index..];
        let call = &call[..call.find(");").unwrap()];
        let strings = quoted(call);
        subjects.push(format!("tasks.{}.{}", strings[0], strings[1]));
    }
    subjects
}

#[test]
fn every_message_has_exactly_one_sender() {
    let all = service_permissions();
    let defined = defined_subjects();
    assert!(defined.len() > 20, "{defined:?}");
    for subject in defined {
        if subject == "tasks.bus_probe.probe" {
            continue; // tests and benchmarks only
        }
        let senders: Vec<&str> = all
            .iter()
            .filter(|service| service.publish.contains(&subject))
            .map(|service| service.service)
            .collect();
        assert_eq!(senders.len(), 1, "{subject} is sent by {senders:?}");
    }
}

#[test]
fn consumers_are_created_only_over_the_services_own_subjects() {
    for service in service_permissions() {
        for subject in &service.publish {
            let Some(rest) = subject.strip_prefix("$JS.API.CONSUMER.CREATE.") else {
                continue;
            };
            let stream = rest.split('.').next().unwrap();
            if service.service == "sync-streamer" && stream == "CHANGES" {
                continue; // all of CHANGES is its to read
            }
            // <stream>.<name>.<filter…>: never a bare stream or name (any filter)
            let tokens: Vec<&str> = rest.split('.').collect();
            assert!(tokens.len() >= 4, "{}: {subject}", service.service);
            let filter = tokens[2..].join(".");
            assert!(
                !filter.contains('>') && !filter.contains('*'),
                "{}: {subject}",
                service.service
            );
        }
    }
    let notifier = permissions_of("notifier").unwrap();
    assert!(notifier.publish.contains(
        &"$JS.API.CONSUMER.CREATE.EVENTS.notifier--user_created.events.user.created".to_owned()
    ));
    assert!(
        !notifier
            .publish
            .iter()
            .any(|subject| subject.contains("session"))
    );
    // no wildcard but its acks and its inbox
    for subject in &notifier.publish {
        let wildcard = subject.split('.').any(|token| token == "*" || token == ">");
        assert!(
            !wildcard || subject.starts_with("$JS.ACK.") || subject.starts_with("_INBOX"),
            "{subject}"
        );
    }
}

#[test]
fn wildcard_consumer_names_cannot_reach_other_services_durables() {
    let api = permissions_of("api").unwrap();
    assert!(
        api.publish
            .contains(&"$JS.API.CONSUMER.MSG.NEXT.EVENTS.*".to_owned())
    );
    assert!(
        api.publish_deny
            .contains(&"$JS.API.CONSUMER.MSG.NEXT.EVENTS.notifier--user_created".to_owned())
    );
    assert!(
        api.publish_deny
            .contains(&"$JS.ACK.EVENTS.worker--journal_entry_created.>".to_owned())
    );
    // its own durables stay reachable; TASKS has no ordered consumer of its, so no deny
    assert!(
        !api.publish_deny
            .iter()
            .any(|subject| subject.contains(".api--"))
    );
    assert!(
        !api.publish_deny
            .iter()
            .any(|subject| subject.contains(".TASKS."))
    );
    let worker = permissions_of("worker").unwrap();
    assert!(worker.publish_deny.is_empty(), "{:?}", worker.publish_deny);
    assert!(!worker.publish.iter().any(|subject| subject.ends_with(".*")));
}

#[test]
fn the_file_names_variables_not_passwords() {
    let conf = accounts_conf();
    assert!(conf.contains("password: $JOURNAL_API_NATS_PASSWORD"));
    assert!(conf.contains("user: journal_sync"));
}
