//! The demo data, written through the running api's own procedures (dev login, then oRPC
//! calls), never straight into tables: every row is written by the same code as a client's,
//! with its sync changeset and its `journal_entry.*` events in the same transaction, so the
//! demo user's apps see it in the sync stream and the worker computes their insights.
//!
//! What it makes (seeds/README.md): Demo (`demo@example.com`) with three personal entries and
//! a scheduled personal prompt; the team "Morning Pages Club" that Demo owns and Sam
//! (`sam@example.com`, Europe/Berlin) joined by invitation; a team prompt and Sam's team entry
//! answering it.
//!
//! Idempotent by natural keys: each step first looks for what it would create (the team by
//! name, prompts by text, entries by title and author) and creates only what is missing, so a
//! second run creates nothing. It needs the api's dev login (`AUTH_DEV_LOGIN=true`, the
//! development default).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const DEMO_EMAIL: &str = "demo@example.com";
pub const DEMO_NAME: &str = "Demo";
pub const MEMBER_EMAIL: &str = "sam@example.com";
pub const MEMBER_NAME: &str = "Sam";
pub const MEMBER_TIMEZONE: &str = "Europe/Berlin";
pub const TEAM_NAME: &str = "Morning Pages Club";
pub const PERSONAL_PROMPT: &str = "What are you grateful for today?";
pub const TEAM_PROMPT: &str = "Three pages, no editing: what is on your mind?";

/// A journal entry to seed.
#[derive(Debug, Clone, Copy)]
pub struct EntrySeed {
    pub title: &'static str,
    pub content: &'static str,
    pub mood: Option<i16>,
    pub tags: &'static [&'static str],
    pub entry_date: &'static str,
}

/// Demo's personal entries.
pub const DEMO_ENTRIES: [EntrySeed; 3] = [
    EntrySeed {
        title: "A slow Sunday",
        content: "Coffee, a long walk by the river, and an early night.",
        mood: Some(4),
        tags: &["weekend", "walk"],
        entry_date: "2026-11-22",
    },
    EntrySeed {
        title: "Busy Monday",
        content: "Three meetings, one good idea. Wrote it down before it escaped.",
        mood: Some(3),
        tags: &["work"],
        entry_date: "2026-11-23",
    },
    EntrySeed {
        title: "Gratitude",
        content: "Grateful for friends who call back, and for soup.",
        mood: Some(5),
        tags: &["gratitude"],
        entry_date: "2026-11-24",
    },
];

/// Sam's entry in the team, answering the team prompt.
pub const TEAM_ENTRY: EntrySeed = EntrySeed {
    title: "Pages, day one",
    content: "Harder than it looks. Kept going anyway.",
    mood: None,
    tags: &["pages"],
    entry_date: "2026-11-24",
};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot reach the api at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the api's dev login is off (404 from {url}): seeding signs in with it; run the api with AUTH_DEV_LOGIN=true"
    )]
    DevLoginOff { url: String },
    #[error("{what} answered {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what} answered something unexpected: {source}")]
    Unexpected {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seeded {
    pub demo_user_id: String,
    pub member_user_id: String,
    pub team_id: String,
    /// Rows this run created (0 on a second run).
    pub created: usize,
}

/// Seed the demo data through the api at `api_url` (e.g. `http://127.0.0.1:8080`).
pub async fn seed(client: &reqwest::Client, api_url: &str) -> Result<Seeded, SeedError> {
    let api = Api {
        client,
        url: api_url.trim_end_matches('/'),
    };
    let mut created = 0;
    let demo = api.login(DEMO_EMAIL, DEMO_NAME).await?;
    let sam = api.login(MEMBER_EMAIL, MEMBER_NAME).await?;

    let profile: Profile = api.call(&sam, "users.me", &()).await?;
    if profile.timezone != MEMBER_TIMEZONE {
        let _: Profile = api
            .call(
                &sam,
                "users.update",
                &UpdateProfile {
                    timezone: MEMBER_TIMEZONE,
                },
            )
            .await?;
    }

    // The team, and Sam in it (invited by Demo, accepted by Sam).
    let teams: Vec<TeamRow> = api.call(&demo, "teams.list", &()).await?;
    let team_id = match teams.into_iter().find(|team| team.name == TEAM_NAME) {
        Some(team) => team.team_id,
        None => {
            let team: TeamRow = api
                .call(&demo, "teams.create", &CreateTeam { name: TEAM_NAME })
                .await?;
            created += 1;
            team.team_id
        }
    };
    let sams_teams: Vec<TeamRow> = api.call(&sam, "teams.list", &()).await?;
    if !sams_teams.iter().any(|team| team.team_id == team_id) {
        let pending: Vec<Invitation> = api.call(&sam, "teams.listInvitations", &()).await?;
        let invitation_id = match pending.into_iter().find(|i| i.team_id == team_id) {
            Some(invitation) => invitation.team_invitation_id,
            None => {
                let invitation: Invitation = api
                    .call(
                        &demo,
                        "teams.invite",
                        &Invite {
                            team_id: &team_id,
                            email: MEMBER_EMAIL,
                            role: "member",
                        },
                    )
                    .await?;
                invitation.team_invitation_id
            }
        };
        let _: serde::de::IgnoredAny = api
            .call(
                &sam,
                "teams.acceptInvitation",
                &Accept {
                    team_invitation_id: &invitation_id,
                },
            )
            .await?;
        created += 1;
    }

    // Prompts: Demo's scheduled personal one, and one for the team.
    let prompts: PromptList = api.call(&demo, "prompts.list", &()).await?;
    if !prompts
        .items
        .iter()
        .any(|prompt| prompt.team_id.is_none() && prompt.text == PERSONAL_PROMPT)
    {
        let _: PromptRow = api
            .call(
                &demo,
                "prompts.create",
                &CreatePrompt {
                    text: PERSONAL_PROMPT,
                    team_id: None,
                    schedule: Some(Schedule {
                        time: "08:00",
                        timezone: "UTC",
                        weekdays: &[1, 2, 3, 4, 5],
                    }),
                },
            )
            .await?;
        created += 1;
    }
    let team_prompt_id = match prompts.items.into_iter().find(|prompt| {
        prompt.team_id.as_deref() == Some(team_id.as_str()) && prompt.text == TEAM_PROMPT
    }) {
        Some(prompt) => prompt.prompt_id,
        None => {
            let prompt: PromptRow = api
                .call(
                    &demo,
                    "prompts.create",
                    &CreatePrompt {
                        text: TEAM_PROMPT,
                        team_id: Some(&team_id),
                        schedule: None,
                    },
                )
                .await?;
            created += 1;
            prompt.prompt_id
        }
    };

    // Entries.
    let personal = api.entries(&demo, None).await?;
    for entry in DEMO_ENTRIES {
        if !personal.iter().any(|row| row.title == entry.title) {
            api.create_entry(&demo, entry, None, None).await?;
            created += 1;
        }
    }
    let in_team = api.entries(&sam, Some(&team_id)).await?;
    if !in_team
        .iter()
        .any(|row| row.title == TEAM_ENTRY.title && row.author_user_id == sam.user_id)
    {
        api.create_entry(&sam, TEAM_ENTRY, Some(&team_id), Some(&team_prompt_id))
            .await?;
        created += 1;
    }

    Ok(Seeded {
        demo_user_id: demo.user_id,
        member_user_id: sam.user_id,
        team_id,
        created,
    })
}

// ---- the calls ------------------------------------------------------------------------------

struct Api<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    token: String,
    user_id: String,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    json: &'a T,
}

#[derive(Deserialize)]
struct Reply<T> {
    json: T,
}

impl Api<'_> {
    async fn login(&self, email: &str, name: &str) -> Result<Session, SeedError> {
        #[derive(Serialize)]
        struct DevLogin<'a> {
            email: &'a str,
            name: &'a str,
        }
        let url = format!("{}/auth/dev/login", self.url);
        let response = self
            .client
            .post(&url)
            .json(&DevLogin { email, name })
            .send()
            .await
            .map_err(|source| SeedError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(SeedError::DevLoginOff { url });
        }
        decode(&format!("dev login of {email}"), response).await
    }

    /// One oRPC call (`POST /rpc/<procedure with slashes>`, `{"json": input}`).
    async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        session: &Session,
        procedure: &str,
        input: &I,
    ) -> Result<O, SeedError> {
        let url = format!("{}/rpc/{}", self.url, procedure.replace('.', "/"));
        let response = self
            .client
            .post(&url)
            .bearer_auth(&session.token)
            .json(&Envelope { json: input })
            .send()
            .await
            .map_err(|source| SeedError::Unreachable { url, source })?;
        let reply: Reply<O> = decode(procedure, response).await?;
        Ok(reply.json)
    }

    /// Personal entries of the caller (`team_id` None), or the team's; at most 100 (the
    /// seeds make four).
    async fn entries(
        &self,
        session: &Session,
        team_id: Option<&str>,
    ) -> Result<Vec<EntryRow>, SeedError> {
        let page: EntryPage = self
            .call(
                session,
                "journalEntries.list",
                &ListEntries {
                    limit: 100,
                    scope: team_id.is_none().then_some("personal"),
                    team_id,
                },
            )
            .await?;
        Ok(page.items)
    }

    async fn create_entry(
        &self,
        session: &Session,
        entry: EntrySeed,
        team_id: Option<&str>,
        prompt_id: Option<&str>,
    ) -> Result<(), SeedError> {
        let _: EntryRow = self
            .call(
                session,
                "journalEntries.create",
                &CreateEntry {
                    title: entry.title,
                    content: entry.content,
                    mood: entry.mood,
                    tags: entry.tags,
                    entry_date: entry.entry_date,
                    team_id,
                    prompt_id,
                },
            )
            .await?;
        Ok(())
    }
}

async fn decode<O: DeserializeOwned>(
    what: &str,
    response: reqwest::Response,
) -> Result<O, SeedError> {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != 200 {
        return Err(SeedError::Refused {
            what: what.to_owned(),
            status,
            body,
        });
    }
    serde_json::from_str(&body).map_err(|source| SeedError::Unexpected {
        what: what.to_owned(),
        source,
    })
}

// ---- the shapes (only the fields the seeding reads or sends) --------------------------------

#[derive(Deserialize)]
struct Profile {
    timezone: String,
}

#[derive(Serialize)]
struct UpdateProfile<'a> {
    timezone: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TeamRow {
    team_id: String,
    name: String,
}

#[derive(Serialize)]
struct CreateTeam<'a> {
    name: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Invitation {
    team_invitation_id: String,
    team_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Invite<'a> {
    team_id: &'a str,
    email: &'a str,
    role: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accept<'a> {
    team_invitation_id: &'a str,
}

#[derive(Deserialize)]
struct PromptList {
    items: Vec<PromptRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptRow {
    prompt_id: String,
    team_id: Option<String>,
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatePrompt<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<Schedule<'a>>,
}

#[derive(Serialize)]
struct Schedule<'a> {
    time: &'a str,
    timezone: &'a str,
    weekdays: &'a [i16],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListEntries<'a> {
    limit: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct EntryPage {
    items: Vec<EntryRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryRow {
    title: String,
    author_user_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateEntry<'a> {
    title: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mood: Option<i16>,
    tags: &'a [&'a str],
    entry_date: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_id: Option<&'a str>,
}
