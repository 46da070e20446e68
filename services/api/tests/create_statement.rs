//! The create path's cost (issue 22): `journal_entries::create_entry` is one autocommit
//! statement — one round trip, one commit — counted on the wire by a proxy in front of
//! Postgres, and a refused create (team, prompt) writes no entry and no outbox row. The
//! author's timezone is guessed for the event and checked by the statement: a wrong guess
//! writes nothing, and the retry's event carries the right local date and hour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use api::http::error::ApiError;
use api::modules::journal_entries::create::create_entry;
use api::modules::journal_entries::types::CreateInput;
use chrono::{TimeZone, Timelike};
use common::TestApi;
use domain::ids::{PromptId, TeamId, UserId};
use messages::journal::v1::JournalEntryCreated;
use prost::Message;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What clients sent through the proxy: simple queries (`Q`: `BEGIN`, `COMMIT`, ...) and
/// extended-protocol executions (`E`: one per prepared statement run).
#[derive(Debug, Default)]
struct Sent {
    queries: AtomicUsize,
    executes: AtomicUsize,
}

impl Sent {
    fn counts(&self) -> (usize, usize) {
        (
            self.queries.load(Ordering::SeqCst),
            self.executes.load(Ordering::SeqCst),
        )
    }
}

/// A TCP proxy to `upstream` that counts the frontend messages it forwards. Clients must
/// not ask for TLS (the first message is then the untyped startup message, every later one
/// `type byte + length`).
async fn counting_proxy(upstream: String) -> (u16, Arc<Sent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(Sent::default());
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(&upstream).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut pending: Vec<u8> = Vec::new();
                let mut started = false;
                let mut chunk = vec![0_u8; 64 * 1024];
                loop {
                    let read = match client_read.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => read,
                    };
                    pending.extend_from_slice(&chunk[..read]);
                    loop {
                        let header = if started { 5 } else { 4 };
                        if pending.len() < header {
                            break;
                        }
                        let length_at = usize::from(started);
                        let length = u32::from_be_bytes(
                            pending[length_at..length_at + 4].try_into().unwrap(),
                        ) as usize;
                        let total = length + length_at;
                        if pending.len() < total {
                            break;
                        }
                        if started {
                            match pending[0] {
                                b'Q' => counter.queries.fetch_add(1, Ordering::SeqCst),
                                b'E' => counter.executes.fetch_add(1, Ordering::SeqCst),
                                _ => 0,
                            };
                        }
                        started = true;
                        pending.drain(..total);
                    }
                    if server_write.write_all(&chunk[..read]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, sent)
}

fn input(title: &str) -> CreateInput {
    CreateInput {
        title: title.to_owned(),
        content: "text".to_owned(),
        mood: Some(3),
        tags: Some(vec!["a".to_owned()]),
        entry_date: None,
        team_id: None,
        prompt_id: None,
    }
}

#[tokio::test]
async fn a_create_is_one_statement_and_a_refused_one_writes_nothing() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let team_id: TeamId = api.team_with(&alice, &[]).await.parse().unwrap();
    let prompt = api
        .call(Some(&alice), "prompts/create", json!({"text": "Why?"}))
        .await
        .ok();
    let prompt_id: PromptId = prompt["promptId"].as_str().unwrap().parse().unwrap();
    // Not the default (UTC): the first create guesses wrong and must try again.
    api.call(
        Some(&alice),
        "users/update",
        json!({"timezone": "Pacific/Kiritimati"}),
    )
    .await
    .ok();

    let options = PgConnectOptions::from_str(api.db.url()).unwrap();
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let (port, sent) = counting_proxy(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(
            options
                .host("127.0.0.1")
                .port(port)
                .ssl_mode(PgSslMode::Disable)
                .options([("search_path", "api")]),
        )
        .await
        .unwrap();

    // Alice's first create: the guessed timezone (UTC) is not hers, so the first statement
    // writes nothing and the second writes the entry with the right facts.
    let before = sent.counts();
    let first = create_entry(&pool, UserId::from_uuid(alice.user_id), input("first"))
        .await
        .unwrap();
    let after = sent.counts();
    assert_eq!(after.0 - before.0, 0, "no BEGIN/COMMIT");
    assert_eq!(
        after.1 - before.1,
        2,
        "a wrong timezone guess costs one statement"
    );
    let events = api
        .emitted("EVENTS", "events.journal_entry.created")
        .await
        .into_iter()
        .map(|message| JournalEntryCreated::decode(message.payload.as_slice()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(events.len(), 1);
    let facts = events[0].facts.clone().unwrap();
    let local = chrono_tz::Pacific::Kiritimati
        .timestamp_millis_opt(first.created_at.millis())
        .unwrap();
    assert_eq!(facts.created_local_hour, local.hour() as i32);
    assert_eq!(
        facts.created_local_date,
        local.date_naive().format("%Y-%m-%d").to_string()
    );
    assert_eq!(events[0].created_at_ms, first.created_at.millis());

    // Now the timezone is known: one Execute, no simple query, for each create.
    for (user, team, prompt) in [
        (alice.user_id, None, None),
        (alice.user_id, Some(team_id), None),
        (alice.user_id, None, Some(prompt_id)),
    ] {
        let mut entry = input("measured");
        entry.team_id = team;
        entry.prompt_id = prompt;
        let before = sent.counts();
        let created = create_entry(&pool, UserId::from_uuid(user), entry)
            .await
            .unwrap();
        let after = sent.counts();
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (0, 1),
            "one statement (team {team:?}, prompt {prompt:?})"
        );
        // The row as stored is the row answered (and put in the changeset).
        let stored: (
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
            i64,
        ) = sqlx::query_as(
            "SELECT created_at, updated_at, version FROM journal_entries
                  WHERE journal_entry_id = $1",
        )
        .bind(created.journal_entry_id)
        .fetch_one(&api.pool)
        .await
        .unwrap();
        assert_eq!(
            stored,
            (created.created_at.at(), created.updated_at.at(), 1)
        );
        assert_eq!(created.team_id, team);
        assert_eq!(created.prompt_id, prompt);
    }

    // Refused: bob is not in the team and cannot use alice's personal prompt. One statement
    // each, the same errors as before, and nothing written.
    let mut into_team = input("intrude");
    into_team.team_id = Some(team_id);
    let mut with_prompt = input("borrow");
    with_prompt.prompt_id = Some(prompt_id);
    let mut missing_team = input("nowhere");
    missing_team.team_id = Some(TeamId::generate());
    for (entry, expected) in [
        (into_team, "Team not found"),
        (with_prompt, "Prompt not found"),
        (missing_team, "Team not found"),
    ] {
        let before = sent.counts();
        let refused = create_entry(&pool, UserId::from_uuid(bob.user_id), entry)
            .await
            .unwrap_err();
        let after = sent.counts();
        assert!(
            matches!(&refused, ApiError::NotFound(message) if message == expected),
            "{refused:?}"
        );
        assert_eq!((after.0 - before.0, after.1 - before.1), (0, 1));
    }
    let bobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM journal_entries WHERE author_user_id = $1")
            .bind(bob.user_id)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(bobs, 0);
    // Unsent outbox rows and published messages: only the four creates' event and changeset.
    assert_eq!(api.events_named("journal_entry.created").await, 4);
    assert_eq!(api.row_changes("journal_entries").await.len(), 4);
    pool.close().await;
    api.stop().await;
}
