// The sync-streamer's wire format (docs/sync.md, "Frames"): one JSON object per SSE event.

/** A row as the api serializes it (camelCase fields, `version`, `deletedAt` on tombstones). */
export type RowData = { readonly [field: string]: unknown }

export type ChangeOp = 'insert' | 'update' | 'delete'

export interface Change {
  readonly table: string
  readonly op: ChangeOp
  readonly rowId: string
  readonly version: number
  readonly data: RowData
}

/** Why the server ended a stream. */
export type CloseReason = 'slow_client' | 'scopes_changed' | 'token_expired' | 'session_revoked' | 'shutdown'

export type Frame =
  | {
      readonly type: 'delta'
      /** `null` only in an empty last chunk (nothing to catch up). */
      readonly table: string | null
      readonly data: readonly RowData[]
      readonly isLastChunk: boolean
      readonly cursor: string
    }
  /** One committed transaction's rows in the user's scopes, each version once. `cursor` is opaque: store it and resume from it (docs/sync.md, "Cursors"). */
  | { readonly type: 'change'; readonly cursor: string; readonly changes: readonly Change[] }
  | { readonly type: 'heartbeat'; readonly timestamp: number }
  | { readonly type: 'reset'; readonly reason: string }
  | { readonly type: 'scope_removed'; readonly scope: string; readonly teamId: string; readonly cursor: string }
  | { readonly type: 'closed'; readonly reason: CloseReason }

/** A refusal before the stream starts: `{defined, code, status, message, data?}`. */
export interface StreamRefusal {
  readonly code: string
  readonly status: number
  readonly message: string
}

/**
 * The key of a row within its table, as the server's `rowId` (a delta frame carries rows
 * without it). Tables the client does not know fall back to an `id` field.
 */
export function rowIdOf(table: string, data: RowData): string | undefined {
  const field = (name: string): string | undefined => {
    const value = data[name]
    return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined
  }
  const pair = (first: string, second: string): string | undefined => {
    const a = field(first)
    const b = field(second)
    return a !== undefined && b !== undefined ? `${a}:${b}` : undefined
  }
  switch (table) {
    case 'journal_entries':
      return field('journalEntryId')
    case 'prompts':
      return field('promptId')
    case 'teams':
      return field('teamId')
    case 'team_members':
      return pair('teamId', 'userId')
    case 'users':
      return field('userId')
    case 'attachments':
      return field('attachmentId')
    case 'entry_insights':
      return field('userId')
    case 'entry_insight_days':
      return pair('userId', 'day')
    default:
      return field('id')
  }
}

/** A row's version (every synced row carries one). */
export function versionOf(data: RowData): number {
  const version = data['version']
  return typeof version === 'number' ? version : 0
}

/** Whether a row is a tombstone (a soft delete). */
export function isTombstone(data: RowData): boolean {
  const deletedAt = data['deletedAt']
  return deletedAt !== undefined && deletedAt !== null
}
