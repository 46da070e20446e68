//! The id accessors generated from the messages' field names (build.rs).

use domain::ids::{ApiTeamId, IdError, JournalEntryId, TeamId, UserId};
use messages::journal::v1::{ApiKeyCreated, JournalEntryCreated, TeamMemberLeft};

#[test]
fn an_id_field_parses_to_its_domain_type() {
    let journal_entry_id = JournalEntryId::generate();
    let author_user_id = UserId::generate();
    let event = JournalEntryCreated {
        journal_entry_id: journal_entry_id.to_string(),
        author_user_id: author_user_id.to_string(),
        ..Default::default()
    };
    assert_eq!(event.parse_journal_entry_id(), Ok(journal_entry_id));
    assert_eq!(event.parse_author_user_id(), Ok(author_user_id));
}

#[test]
fn an_empty_id_is_missing_when_required_and_none_when_optional() {
    let event = JournalEntryCreated::default();
    assert_eq!(
        event.parse_team_id(),
        Err(IdError::Missing { field: "team_id" })
    );
    assert_eq!(event.parse_optional_team_id(), Ok(None));
}

#[test]
fn a_malformed_id_names_its_field_either_way() {
    let event = JournalEntryCreated {
        team_id: "not-a-uuid".to_owned(),
        ..Default::default()
    };
    let malformed = IdError::Malformed {
        field: "team_id",
        value: "not-a-uuid".to_owned(),
    };
    assert_eq!(event.parse_team_id(), Err(malformed.clone()));
    assert_eq!(event.parse_optional_team_id(), Err(malformed));
}

#[test]
fn a_prefixed_field_takes_the_type_of_its_suffix() {
    let team_id = TeamId::generate();
    let removed_by_user_id = UserId::generate();
    let event = TeamMemberLeft {
        team_id: team_id.to_string(),
        removed_by_user_id: removed_by_user_id.to_string(),
        ..Default::default()
    };
    assert_eq!(event.parse_team_id(), Ok(team_id));
    assert_eq!(
        event.parse_optional_removed_by_user_id(),
        Ok(Some(removed_by_user_id))
    );
}

#[test]
fn the_longest_known_suffix_wins() {
    // `api_team_id` ends in `team_id` too, but is an API team's id.
    let api_team_id = ApiTeamId::generate();
    let event = ApiKeyCreated {
        api_team_id: api_team_id.to_string(),
        ..Default::default()
    };
    let parsed: Result<ApiTeamId, IdError> = event.parse_api_team_id();
    assert_eq!(parsed, Ok(api_team_id));
}
