//! Typed messages for the bus. The protobuf definitions live in `proto/`; this crate exposes
//! the generated types by package, e.g. `messages::journal::v1::JournalEntryCreated`.

pub mod journal {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/journal.v1.rs"));
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::journal::v1::JournalEntryCreated;

    #[test]
    fn generated_types_round_trip() {
        let event = JournalEntryCreated {
            journal_entry_id: "entry".into(),
            author_user_id: "user".into(),
            team_id: String::new(),
            created_at_ms: 1_764_000_000_000,
        };
        let bytes = event.encode_to_vec();
        let decoded = JournalEntryCreated::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, event);
    }
}
