// The id types' names, included by the domain crate and by the api's build script (whose
// utoipa aliases document each as a `Uuid`), so the two cannot disagree.
[
    "UserId",
    "TeamId",
    "TeamInvitationId",
    "JournalEntryId",
    "PromptId",
    "AttachmentId",
    "SessionId",
    "ExportId",
    "ApiTeamId",
    "ApiKeyId",
    "SubscriptionId",
]
