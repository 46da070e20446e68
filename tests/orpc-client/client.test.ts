// An unmodified `@orpc/client` (RPCLink over fetch, exactly as a web or mobile app uses it)
// against the Rust api. Run by `services/api/tests/orpc_client.rs`, which starts the api and
// sets API_URL; by hand: `API_URL=http://127.0.0.1:8080 npm test --prefix tests/orpc-client`.
//
// Exits 0 when every check passes; otherwise prints which check failed and why, and exits 1.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { createORPCClient, isDefinedError, ORPCError, safe } from '@orpc/client'
import type { Client } from '@orpc/client'
import { RPCLink } from '@orpc/client/fetch'
import { BatchLinkPlugin } from '@orpc/client/plugins'
import { inferRPCMethodFromContractRouter } from '@orpc/contract'
import type { ContractRouterClient } from '@orpc/contract'

import { contract, JournalEntry, User } from '../../clients/contract/src/index.js'
import { Checks } from './harness.js'

// ---------------------------------------------------------------------------------------------
// Our router, as the client sees it: the contract generated from the api's Rust types
// (`clients/contract`, `cargo xtask contract`). Timestamps are epoch milliseconds.

type NoContext = Record<never, never>
type Router = ContractRouterClient<typeof contract>

/** `EDIT_CONFLICT`: the entry changed since the client read it (declared by the contract). */
type EditConflict = ORPCError<'EDIT_CONFLICT', { currentVersion: number; currentUpdatedAt: number }>

/** Procedures the api does not have, to see how an unknown one is answered. */
type Missing = {
  journalEntries: { doesNotExist: Client<NoContext, { x: number }, unknown, Error> }
}

/** A validation failure: `BAD_REQUEST` with zod-shaped issues. */
interface Issue {
  code: string
  path: (string | number)[]
  message: string
}
type ValidationError = ORPCError<'BAD_REQUEST', { issues: Issue[] }>

function isValidationError(error: unknown): error is ValidationError {
  return error instanceof ORPCError && error.code === 'BAD_REQUEST' && Array.isArray(error.data?.issues)
}

// ---------------------------------------------------------------------------------------------
// The links: the GET-able queries go out as GET (the contract's `route({ method: 'GET' })`, read
// by `inferRPCMethodFromContractRouter`), everything else as POST, as the api's clients are
// configured.

const methodOf = inferRPCMethodFromContractRouter(contract)

const apiUrl = process.env.API_URL
if (!apiUrl) {
  console.error('API_URL is not set (e.g. API_URL=http://127.0.0.1:8080)')
  process.exit(2)
}

/** Every request the links sent, as `METHOD /path`. */
const sent: string[] = []

function link(token: string | undefined, method?: 'GET' | 'POST'): RPCLink<NoContext> {
  return new RPCLink<NoContext>({
    url: `${apiUrl}/rpc`,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    // The contract has no method for a procedure it does not name (`Missing`): POST it.
    method: (options, path) => method ?? (path.join('.') === 'journalEntries.doesNotExist' ? 'POST' : methodOf(options, path)),
    fetch: (request, init) => {
      sent.push(`${request.method} ${new URL(request.url).pathname}`)
      return fetch(request, init)
    },
  })
}

/** A link that batches the calls made in the same tick (oRPC's `BatchLinkPlugin`). */
function batchLink(token: string, mode: 'streaming' | 'buffered'): RPCLink<NoContext> {
  return new RPCLink<NoContext>({
    url: `${apiUrl}/rpc`,
    headers: { authorization: `Bearer ${token}` },
    method: methodOf,
    plugins: [new BatchLinkPlugin({ mode, groups: [{ condition: () => true, context: {} }] })],
    fetch: (request, init) => {
      sent.push(`${request.method} ${new URL(request.url).pathname}`)
      return fetch(request, init)
    },
  })
}

function lastSent(): string | undefined {
  return sent[sent.length - 1]
}

// ---------------------------------------------------------------------------------------------
// Checks.

const checks = new Checks({ describe: (error) => indent(describe(error)) })

function describe(error: unknown): string {
  if (error instanceof ORPCError) {
    return `ORPCError ${JSON.stringify(error.toJSON())}`
  }
  if (error instanceof Error) {
    return error.stack ?? error.message
  }
  return String(error)
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `        ${line}`)
    .join('\n')
}

/** The error a call failed with (fails the check when the call succeeds). */
async function failure(call: Promise<unknown>): Promise<unknown> {
  try {
    const output = await call
    assert.fail(`expected an error, got ${JSON.stringify(output)}`)
  } catch (error) {
    if (error instanceof assert.AssertionError) {
      throw error
    }
    return error
  }
}

function assertOrpcError(error: unknown, code: string, status: number): asserts error is ORPCError<string, unknown> {
  assert.ok(error instanceof ORPCError, `expected an ORPCError, got ${describe(error)}`)
  assert.equal(error.code, code, `code (${describe(error)})`)
  assert.equal(error.status, status, `status (${describe(error)})`)
  assert.equal(typeof error.message, 'string')
}

function assertEpochMs(value: unknown, what: string): void {
  assert.equal(typeof value, 'number', `${what} is epoch milliseconds (a number), got ${JSON.stringify(value)}`)
  const ms = value as number
  assert.ok(Number.isInteger(ms), `${what} is an integer`)
  // Within a day of now: catches seconds or microseconds sent by mistake.
  assert.ok(Math.abs(ms - Date.now()) < 86_400_000, `${what} = ${ms} is near now (${Date.now()})`)
}

// Dev login (plain JSON, not RPC).
const email = `orpc-client-${randomUUID()}@example.com`
const login = await fetch(`${apiUrl}/auth/dev/login`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ email, name: 'oRPC Client' }),
})
if (login.status !== 200) {
  console.log(`FAILED  dev login: ${login.status} ${await login.text()}`)
  process.exit(1)
}
const { token, userId } = (await login.json()) as { token: string; userId: string }
console.log(`ok      dev login as ${email}`)

const client = createORPCClient<Router>(link(token))
const anonymous = createORPCClient<Router>(link(undefined))
const missing = createORPCClient<Missing>(link(token))
const allGet = createORPCClient<Router>(link(token, 'GET'))

await checks.check('users.me (GET) returns the signed-in user', async () => {
  const me: User = await client.users.me()
  assert.equal(lastSent(), 'GET /rpc/users/me')
  assert.equal(me.userId, userId)
  assert.equal(me.email, email)
  assert.equal(me.name, 'oRPC Client')
  assertEpochMs(me.createdAt, 'users.me createdAt')
  assert.equal(me.deletedAt, null)
  // The response is what the contract's zod schema says (a client can validate it).
  User.parse(me)
})

await checks.check('auth.session (GET) returns the session and the user', async () => {
  const current = await client.auth.session()
  assert.equal(lastSent(), 'GET /rpc/auth/session')
  assert.ok(current.session !== null && current.user !== null, 'signed in')
  assert.equal(current.user.userId, userId)
  assertEpochMs(current.session.expiresAt - 7 * 86_400_000, 'auth.session expiresAt - 7 days')
})

let created: JournalEntry | undefined
await checks.check('journalEntries.create (POST) returns the typed entry', async () => {
  created = await client.journalEntries.create({
    title: 'From @orpc/client',
    content: 'Hello from RPCLink',
    mood: 4,
    tags: ['orpc', 'client'],
    entryDate: '2026-11-24',
  })
  assert.equal(lastSent(), 'POST /rpc/journalEntries/create')
  assert.match(created.journalEntryId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  assert.equal(created.authorUserId, userId)
  assert.equal(created.title, 'From @orpc/client')
  assert.equal(created.content, 'Hello from RPCLink')
  assert.equal(created.mood, 4)
  assert.deepEqual(created.tags, ['orpc', 'client'])
  assert.equal(created.entryDate, '2026-11-24')
  assertEpochMs(created.createdAt, 'createdAt')
  assertEpochMs(created.updatedAt, 'updatedAt')
  assert.equal(created.deletedAt, null)
  assert.equal(typeof created.version, 'number')
  assert.deepEqual(JournalEntry.parse(created), created)
})

await checks.check('journalEntries.get (GET, input in ?data=) returns the same entry', async () => {
  assert.ok(created, 'needs the entry created above')
  const fetched = await client.journalEntries.get({ journalEntryId: created.journalEntryId })
  const request = lastSent() ?? ''
  assert.ok(request.startsWith('GET /rpc/journalEntries/get'), `sent ${request}`)
  assert.deepEqual(fetched, created)
})

await checks.check('journalEntries.list (GET) takes Dates (meta), full-text search and cursors', async () => {
  assert.ok(created, 'needs the entry created above')
  const second = await client.journalEntries.create({ title: 'Second RPCLink entry', content: 'paging', tags: ['orpc'] })
  const justBefore = new Date(created.createdAt - 1)
  const firstPage = await client.journalEntries.list({ limit: 1, createdAfter: justBefore, tag: 'orpc' })
  const request = lastSent() ?? ''
  assert.ok(request.startsWith('GET /rpc/journalEntries/list'), `sent ${request}`)
  assert.deepEqual(
    firstPage.items.map((entry) => entry.journalEntryId),
    [second.journalEntryId],
    'newest first',
  )
  const cursor = firstPage.nextCursor
  assert.ok(typeof cursor === 'string', `nextCursor ${JSON.stringify(cursor)}`)
  const secondPage = await client.journalEntries.list({ limit: 1, createdAfter: justBefore, tag: 'orpc', cursor })
  assert.deepEqual(
    secondPage.items.map((entry) => entry.journalEntryId),
    [created.journalEntryId],
  )
  // A Date after both entries were created leaves nothing: the meta-typed Date was applied.
  const later = await client.journalEntries.list({ createdAfter: new Date(second.createdAt + 1) })
  assert.deepEqual(later.items, [])
  const found = await client.journalEntries.list({ q: 'RPCLink' })
  assert.deepEqual(
    found.items.map((entry) => entry.journalEntryId).sort(),
    [created.journalEntryId, second.journalEntryId].sort(),
  )
})

await checks.check('auth.listSessions (GET) lists the current session', async () => {
  const sessions = await client.auth.listSessions()
  assert.equal(lastSent(), 'GET /rpc/auth/listSessions')
  assert.equal(sessions.length, 1)
  const [session] = sessions
  assert.ok(session)
  assert.equal(session.current, true)
  assertEpochMs(session.createdAt, 'listSessions createdAt')
  assertEpochMs(session.lastSeenAt, 'listSessions lastSeenAt')
})

await checks.check('a validation error is BAD_REQUEST 400 with issues naming `title` (safe())', async () => {
  const [error, data, isDefined, isSuccess] = await safe(client.journalEntries.create({ title: '', content: 'x' }))
  assert.equal(isSuccess, false, `expected an error, got ${JSON.stringify(data)}`)
  assert.equal(isDefined, false, 'a validation error is not a declared error')
  assertOrpcError(error, 'BAD_REQUEST', 400)
  assert.equal(error.defined, false)
  assert.equal(error.message, 'Input validation failed')
  assert.ok(isValidationError(error), `data.issues missing: ${describe(error)}`)
  const [issue] = error.data.issues
  assert.ok(issue, 'at least one issue')
  assert.ok(issue.path.includes('title'), `issue path ${JSON.stringify(issue.path)}`)
  assert.equal(issue.code, 'too_small')
  assert.equal(typeof issue.message, 'string')
})

await checks.check('a call without a session is UNAUTHORIZED 401', async () => {
  const error = await failure(anonymous.journalEntries.create({ title: 'x', content: 'y' }))
  assertOrpcError(error, 'UNAUTHORIZED', 401)
  assert.equal(error.defined, false)
  const meError = await failure(anonymous.users.me())
  assertOrpcError(meError, 'UNAUTHORIZED', 401)
})

await checks.check('auth.session without a session (public) returns nulls', async () => {
  const current = await anonymous.auth.session()
  assert.deepEqual(current, { session: null, user: null })
})

await checks.check('an unknown procedure is NOT_FOUND 404', async () => {
  const error = await failure(missing.journalEntries.doesNotExist({ x: 1 }))
  assertOrpcError(error, 'NOT_FOUND', 404)
})

await checks.check('a POST-only procedure called with GET is METHOD_NOT_SUPPORTED 405', async () => {
  const error = await failure(allGet.journalEntries.create({ title: 'x', content: 'y' }))
  assert.ok((lastSent() ?? '').startsWith('GET /rpc/journalEntries/create'), `sent ${lastSent()}`)
  assertOrpcError(error, 'METHOD_NOT_SUPPORTED', 405)
})

await checks.check('journalEntries.update with a stale expectedVersion is the declared EDIT_CONFLICT', async () => {
  assert.ok(created, 'needs the entry created above')
  const [firstError, updated] = await safe(
    client.journalEntries.update({
      journalEntryId: created.journalEntryId,
      expectedVersion: created.version,
      title: 'Renamed',
    }),
  )
  assert.equal(firstError, null, `first update failed: ${describe(firstError)}`)
  assert.ok(updated)
  assert.equal(updated.title, 'Renamed')
  assert.ok(updated.version > created.version, 'the version increases')

  const [error, data, isDefined] = await safe(
    client.journalEntries.update({
      journalEntryId: created.journalEntryId,
      expectedVersion: created.version,
      title: 'Stale',
    }),
  )
  assert.equal(data, undefined)
  assert.equal(isDefined, true, `expected a declared error, got ${describe(error)}`)
  assert.ok(isDefinedError(error), 'isDefinedError')
  // Narrowed by the contract: update declares EDIT_CONFLICT and ENTRY_DELETED.
  if (error.code !== 'EDIT_CONFLICT') {
    assert.fail(`expected EDIT_CONFLICT, got ${describe(error)}`)
  }
  const conflict: EditConflict = error
  assert.equal(conflict.code, 'EDIT_CONFLICT')
  assert.equal(conflict.defined, true)
  assert.equal(conflict.status, 409)
  assert.equal(conflict.data.currentVersion, updated.version)
  assertEpochMs(conflict.data.currentUpdatedAt, 'EDIT_CONFLICT data.currentUpdatedAt')
})

for (const mode of ['streaming', 'buffered'] as const) {
  await checks.check(`BatchLinkPlugin (${mode}): three calls in one request, each with its own result`, async () => {
    const batched = createORPCClient<Router>(batchLink(token, mode))
    const before = sent.length
    const title = `batched ${mode}`
    const [createdResult, missingResult, meResult] = await Promise.allSettled([
      batched.journalEntries.create({ title, content: 'a' }),
      batched.journalEntries.update({ journalEntryId: '00000000-0000-4000-8000-00000000dead', expectedVersion: 1, title: 'x' }),
      batched.users.me(),
    ])
    // users.me is a GET call and the other two POSTs: one batch request per method.
    assert.deepEqual(
      sent.slice(before).sort(),
      ['GET /rpc/users/me', 'POST /rpc/journalEntries/create/__batch__'],
      `sent ${JSON.stringify(sent.slice(before))}`,
    )
    assert.equal(createdResult.status, 'fulfilled', describe((createdResult as PromiseRejectedResult).reason))
    assert.equal(createdResult.value.title, title)
    assertEpochMs(createdResult.value.createdAt, 'batched createdAt')
    assert.equal(missingResult.status, 'rejected')
    assertOrpcError(missingResult.reason, 'NOT_FOUND', 404)
    assert.equal(meResult.status, 'fulfilled')
    assert.equal(meResult.value.userId, userId)
  })

  await checks.check(`BatchLinkPlugin (${mode}): GET-able calls share one GET ?batch= request`, async () => {
    assert.ok(created, 'needs the entry created above')
    const batched = createORPCClient<Router>(batchLink(token, mode))
    const before = sent.length
    const [page, entry, me] = await Promise.all([
      batched.journalEntries.list({ limit: 1 }),
      batched.journalEntries.get({ journalEntryId: created.journalEntryId }),
      batched.users.me(),
    ])
    assert.deepEqual(sent.slice(before), ['GET /rpc/journalEntries/list/__batch__'])
    assert.equal(page.items.length, 1)
    assert.equal(entry.journalEntryId, created.journalEntryId)
    assert.equal(me.userId, userId)
  })
}

checks.finish(`\norpc-client: all checks passed (${sent.length} RPC requests)`)
