// An unmodified `@orpc/client` consuming the sync-streamer's event iterator
// (`/rpc/sync/stream`) with `for await`, the way an offline-first app does. Run by
// `services/sync-streamer/tests/orpc_client.rs`, which starts the api and the streamer and
// sets API_URL and SYNC_URL; by hand:
// `API_URL=http://127.0.0.1:8080 SYNC_URL=http://127.0.0.1:8081 npx tsx sync.test.ts`.
//
// Exits 0 when every check passes; otherwise prints which check failed and why, and exits 1.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { createORPCClient, getEventMeta, ORPCError } from '@orpc/client'
import { RPCLink } from '@orpc/client/fetch'
import type { ContractRouterClient } from '@orpc/contract'

import { contract, JournalEntry, SyncFrame, syncContract } from '../../clients/contract/src/index.js'

import { Checks, describeError } from './harness.js'

type NoContext = Record<never, never>
// The api's and the sync-streamer's routers: the contract generated from their Rust types
// (`clients/contract`, `cargo xtask contract`), frames included.
type ApiRouter = ContractRouterClient<typeof contract>
type SyncRouter = ContractRouterClient<typeof syncContract>

const apiUrl = process.env.API_URL
const syncUrl = process.env.SYNC_URL
if (!apiUrl || !syncUrl) {
  console.error('API_URL and SYNC_URL must be set')
  process.exit(2)
}

const checks = new Checks({
  describe: (error) =>
    error instanceof ORPCError ? `ORPCError ${JSON.stringify(error.toJSON())}` : describeError(error),
})

function bearer(url: string, token: string): RPCLink<NoContext> {
  return new RPCLink<NoContext>({ url: `${url}/rpc`, headers: { authorization: `Bearer ${token}` } })
}

const login = await fetch(`${apiUrl}/auth/dev/login`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ email: `sync-client-${randomUUID()}@example.com`, name: 'Sync Client' }),
})
// A failed sign-in must fail here, naming the status, not later as a missing token.
assert.equal(login.status, 200, `dev login answered ${login.status}: ${await login.clone().text()}`)
const { token: sessionToken } = (await login.json()) as { token: string }
assert.equal(typeof sessionToken, 'string', 'dev login returned no token')
const api = createORPCClient<ApiRouter>(bearer(apiUrl, sessionToken))

const first = await api.journalEntries.create({ title: 'synced first', content: 'x' })
const { token: syncToken, expiresAt } = await api.sync.token()
const streamer = createORPCClient<SyncRouter>(bearer(syncUrl, syncToken))

let cursor = ''
await checks.check('sync.token returns a token and its expiry', async () => {
  assert.equal(typeof syncToken, 'string')
  assert.ok(expiresAt > Date.now(), 'expiresAt is in the future (epoch ms)')
})

await checks.check('for await: delta catch-up with isLastChunk, then a live change with event ids', async () => {
  const iterator = await streamer.sync.stream({})
  let caughtUp = false
  let sawFirst = false
  let created: JournalEntry | undefined
  for await (const frame of iterator) {
    const meta = getEventMeta(frame)
    // Every frame is what the contract's zod schema says.
    SyncFrame.parse(frame)
    if (frame.type === 'delta') {
      assert.equal(meta?.id, frame.cursor, 'the SSE id is the cursor')
      sawFirst ||= frame.data.some((row) => JournalEntry.safeParse(row).data?.journalEntryId === first.journalEntryId)
      if (frame.isLastChunk) {
        caughtUp = true
        cursor = frame.cursor
        created = await api.journalEntries.create({ title: 'synced live', content: 'y' })
      }
    } else if (frame.type === 'change') {
      assert.ok(caughtUp, 'changes come after the catch-up')
      assert.equal(meta?.id, frame.cursor)
      assert.ok(BigInt(frame.cursor) > BigInt(cursor), 'the cursor increases')
      // The entry written before the stream opened arrives in the catch-up, or live when the
      // read model had not materialized it yet at the handoff: either way once, before ours.
      sawFirst ||= frame.changes.some(
        (c) => c.table === 'journal_entries' && (c.data as JournalEntry).journalEntryId === first.journalEntryId,
      )
      const change = frame.changes.find((c) => c.table === 'journal_entries')
      if (change && created && (change.data as JournalEntry).journalEntryId === created.journalEntryId) {
        assert.equal(change.op, 'insert')
        cursor = frame.cursor
        break // the client stops: the stream is cancelled
      }
    }
  }
  assert.ok(sawFirst, 'the stream delivered the entry created before it opened')
  assert.ok(created, 'went live')
})

await checks.check('lastEventId resumes after the cursor (only what changed since)', async () => {
  const later = await api.journalEntries.create({ title: 'while away', content: 'z' })
  const iterator = await streamer.sync.stream({ tables: ['journal_entries'] }, { lastEventId: cursor })
  // It arrives in the catch-up, or live if the read model has not applied it yet.
  const titles: string[] = []
  for await (const frame of iterator) {
    if (frame.type === 'delta') {
      titles.push(...frame.data.map((row) => (row as JournalEntry).title))
    } else if (frame.type === 'change') {
      titles.push(...frame.changes.map((change) => (change.data as JournalEntry).title))
    }
    if (titles.includes(later.title)) break
  }
  assert.deepEqual(titles, [later.title])
})

await checks.check('a bad token is a typed error before the stream (ORPCError 401)', async () => {
  const anonymous = createORPCClient<SyncRouter>(bearer(syncUrl, `${syncToken}x`))
  try {
    const iterator = await anonymous.sync.stream({})
    for await (const _ of iterator) {
      break
    }
    assert.fail('expected an error')
  } catch (error) {
    assert.ok(error instanceof ORPCError, `got ${String(error)}`)
    assert.equal(error.status, 401)
    assert.equal(error.code, 'INVALID_SYNC_TOKEN')
  }
})

checks.finish('\nsync-client: all checks passed')
