/// <reference lib="dom" />
// The web client library (`clients/sync-web`) in a real browser (issue 18): Debian's headless
// Chromium, driven by playwright-core, loads the library (built by `tsc` from source) from a
// page on another origin than the streamer and follows the stream with it, as a web app does.
// Run by `services/sync-streamer/tests/sync_web.rs`, which starts the api, the streamer and
// the page server, creates the users and their team, and sets the variables below.
//
// Exits 0 when every check passes; otherwise prints which check failed and why, and exits 1.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { chromium } from 'playwright-core'
import type { Page } from 'playwright-core'

import { readEvents } from '../../clients/sync-web/src/sse.js'
import { Checks, required } from './harness.js'

const apiUrl = required('API_URL')
const syncUrl = required('SYNC_URL')
const pageUrl = required('PAGE_URL')
const ownerToken = required('OWNER_TOKEN')
const memberToken = required('MEMBER_TOKEN')
const memberUserId = required('MEMBER_USER_ID')
const memberEmail = required('MEMBER_EMAIL')
const teamId = required('TEAM_ID')
const tokenTtlMs = Number(required('TOKEN_TTL_MS'))
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium'

const checks = new Checks({ stopAfterFailure: true })

async function rpc(session: string, procedure: string, input: unknown): Promise<any> {
  const response = await fetch(`${apiUrl}/rpc/${procedure}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${session}` },
    body: JSON.stringify({ json: input }),
  })
  const body = (await response.json()) as { json: unknown }
  assert.equal(response.status, 200, `${procedure}: ${JSON.stringify(body)}`)
  return body.json
}

async function createEntry(session: string, title: string, team?: string): Promise<string> {
  const entry = await rpc(session, 'journalEntries/create', {
    title,
    content: 'written by the sync-web test',
    ...(team ? { teamId: team } : {}),
  })
  return entry.journalEntryId as string
}

let tokenFetches = 0
const streamRequests: string[] = []

/** What the page's client reported, read back by the checks. */
interface PageLog {
  events: string[]
  frames: string[]
  /** table/rowId → the versions delivered to subscribers, in order (cleared on `reset`). */
  delivered: Record<string, number[]>
}

async function startClient(page: Page): Promise<void> {
  await page.goto(`${pageUrl}/test.html`)
  await page.waitForFunction(() => (window as any).syncWebLoaded === true)
  await page.evaluate(
    async ({ syncUrl, userId }) => {
      const { SyncClient, IndexedDbStorage } = (window as any).SyncWeb
      const log: PageLog = { events: [], frames: [], delivered: {} }
      ;(window as any).log = log
      const client = new SyncClient({
        url: syncUrl,
        getToken: () => (window as any).fetchSyncToken(),
        storage: new IndexedDbStorage(`journal-sync-${userId}`),
        refreshBeforeExpiryMs: 3_000,
        minReconnectDelayMs: 100,
        maxReconnectDelayMs: 1_000,
        onFrame: (frame: { type: string; reason?: string }) =>
          log.frames.push(frame.type === 'closed' ? `closed:${frame.reason}` : frame.type),
      })
      client.subscribe((event: any) => {
        if (event.type === 'changes') {
          for (const change of event.changes) {
            ;(log.delivered[`${change.table}/${change.rowId}`] ??= []).push(change.version)
          }
        } else {
          if (event.type === 'reset') {
            log.delivered = {}
          }
          log.events.push(event.type === 'status' ? `status:${event.status}` : event.type)
        }
      })
      ;(window as any).client = client
      await client.load()
      ;(window as any).loadedRows = client.rows('journal_entries').length
      await client.start()
    },
    { syncUrl, userId: memberUserId },
  )
}

async function entryIds(page: Page): Promise<string[]> {
  return page.evaluate(() =>
    (window as any).client.rows('journal_entries').map((row: { journalEntryId: string }) => row.journalEntryId),
  )
}

async function waitFor(page: Page, what: string, predicate: (state: { ids: string[]; log: PageLog }) => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const state = await page.evaluate(() => ({
      ids: (window as any).client.rows('journal_entries').map((row: { journalEntryId: string }) => row.journalEntryId) as string[],
      log: (window as any).log as PageLog,
    }))
    if (predicate(state)) {
      return
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; the page has ${JSON.stringify(state).slice(0, 3000)}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Every row version reached subscribers at most once, in increasing order. */
async function assertDeliveredOnce(page: Page): Promise<void> {
  const log = (await page.evaluate(() => (window as any).log)) as PageLog
  for (const [key, versions] of Object.entries(log.delivered)) {
    for (let index = 1; index < versions.length; index++) {
      assert.ok(versions[index]! > versions[index - 1]!, `${key} was delivered as versions ${versions.join(', ')}`)
    }
  }
}

await checks.check('the SSE reader keeps a CRLF split across chunks as one line end', async () => {
  // Chunk boundaries fall between the `\r` and the `\n` of a line end; the last event ends
  // with a lone `\r` at the end of the body.
  const chunks = ['id: 7\r', '\ndata: {"a":1}\r', '\n\r', '\n', 'data: 2\r\r']
  const encoder = new TextEncoder()
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) {
        controller.enqueue(encoder.encode(chunk))
      }
      controller.close()
    },
  })
  const events = []
  for await (const event of readEvents(body)) {
    events.push(event)
  }
  assert.deepEqual(events, [
    { id: '7', data: '{"a":1}' },
    { id: undefined, data: '2' },
  ])
})

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] })
try {
  const context = await browser.newContext()
  // tsx keeps function names with an `__name` helper that the page does not have.
  await context.addInitScript('globalThis.__name = (fn) => fn')
  const page = await context.newPage()
  await page.exposeFunction('fetchSyncToken', async () => {
    tokenFetches += 1
    return rpc(memberToken, 'sync/token', {})
  })
  page.on('request', (request) => {
    if (request.url().startsWith(`${syncUrl}/sync/stream`)) {
      streamRequests.push(request.url())
    }
  })
  const mine: string[] = []
  const teams: string[] = []

  await checks.check('catch-up then live: personal and team rows in the store, each version once', async () => {
    mine.push(await createEntry(memberToken, 'mine 1'), await createEntry(memberToken, 'mine 2'))
    teams.push(await createEntry(ownerToken, 'team 1', teamId), await createEntry(ownerToken, 'team 2', teamId))
    await startClient(page)
    await waitFor(page, 'the catch-up', ({ ids, log }) => log.events.includes('caught_up') && ids.length === 4)
    mine.push(await createEntry(memberToken, 'mine 3'))
    teams.push(await createEntry(ownerToken, 'team 3', teamId))
    await waitFor(page, 'two live entries', ({ ids }) => ids.length === 6)
    const updated = await rpc(memberToken, 'journalEntries/update', { journalEntryId: mine[0], title: 'mine 1, edited' })
    await rpc(memberToken, 'journalEntries/delete', { journalEntryId: mine[1] })
    await waitFor(page, 'the edit and the delete', ({ ids, log }) =>
      ids.length === 5 &&
      !ids.includes(mine[1]!) &&
      (log.delivered[`journal_entries/${mine[0]}`] ?? []).includes(updated.version as number),
    )
    const edited = await page.evaluate((id) => (window as any).client.get('journal_entries', id), mine[0])
    assert.equal(edited.title, 'mine 1, edited')
    // The member's own membership row is in the team's scope and the member's: once.
    const membership = `team_members/${teamId}:${memberUserId}`
    const log = (await page.evaluate(() => (window as any).log)) as PageLog
    assert.ok(log.delivered[membership], `the membership row never arrived: ${Object.keys(log.delivered).join(', ')}`)
    await assertDeliveredOnce(page)
    assert.deepEqual(log.frames.filter((frame) => frame.startsWith('closed')), [])
  })

  await checks.check('the token is refreshed before it expires, without a gap or a repeat', async () => {
    const before = tokenFetches
    const created: string[] = []
    const until = Date.now() + tokenTtlMs + 4_000
    while (Date.now() < until) {
      created.push(await createEntry(memberToken, `during refresh ${created.length}`))
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
    await waitFor(page, 'every entry written across the refresh', ({ ids }) => created.every((id) => ids.includes(id)))
    assert.ok(tokenFetches - before >= 2, `only ${tokenFetches - before} token fetches in ${tokenTtlMs + 4_000} ms`)
    const log = (await page.evaluate(() => (window as any).log)) as PageLog
    assert.ok(!log.frames.includes('closed:token_expired'), `the server closed on an expired token: ${log.frames.join(' ')}`)
    await assertDeliveredOnce(page)
    mine.push(...created)
  })

  await checks.check('rows and cursor persist in IndexedDB: a reload resumes from the cursor', async () => {
    await page.evaluate(async () => {
      const client = (window as any).client
      await client.stop()
      ;(window as any).savedCursor = client.cursor
    })
    const cursor = (await page.evaluate(() => (window as any).savedCursor)) as string
    const count = (await entryIds(page)).length
    const whileAway = await createEntry(memberToken, 'written while the page was away')
    streamRequests.length = 0
    await startClient(page)
    const loaded = (await page.evaluate(() => (window as any).loadedRows)) as number
    assert.equal(loaded, count, 'rows read from IndexedDB before the stream opened')
    await waitFor(page, 'the entry written while away', ({ ids }) => ids.includes(whileAway))
    assert.ok(streamRequests[0]?.includes(`since=${cursor}`), `the first stream request: ${streamRequests[0]}, cursor ${cursor}`)
    mine.push(whileAway)
  })

  await checks.check('scope_removed: leaving a team drops its rows', async () => {
    await rpc(ownerToken, 'teams/removeMember', { teamId, userId: memberUserId })
    await waitFor(page, 'the removal', ({ ids, log }) => log.events.includes('scope_removed') && teams.every((id) => !ids.includes(id)))
    const teamRows = await page.evaluate(
      (team) => (window as any).client.rows('teams').filter((row: { teamId: string }) => row.teamId === team).length,
      teamId,
    )
    assert.equal(teamRows, 0)
    const ids = await entryIds(page)
    assert.ok(mine.filter((id) => id !== mine[1]).every((id) => ids.includes(id)), 'personal rows stay')
  })

  await checks.check('closed: scopes_changed after a join: a new token, then the new team\'s rows', async () => {
    const team = await rpc(ownerToken, 'teams/create', { name: 'Second team' })
    const secondTeam = team.teamId as string
    const teamEntry = await createEntry(ownerToken, 'second team entry', secondTeam)
    await rpc(ownerToken, 'teams/invite', { teamId: secondTeam, email: memberEmail, role: 'member' })
    const invitations = (await rpc(memberToken, 'teams/listInvitations', null)) as { teamId: string; teamInvitationId: string }[]
    const invitation = invitations.find((candidate) => candidate.teamId === secondTeam)
    assert.ok(invitation, 'the invitation')
    const before = tokenFetches
    await rpc(memberToken, 'teams/acceptInvitation', { teamInvitationId: invitation.teamInvitationId })
    await waitFor(page, "the second team's entry", ({ ids }) => ids.includes(teamEntry))
    const log = (await page.evaluate(() => (window as any).log)) as PageLog
    assert.ok(log.frames.includes('closed:scopes_changed'), `frames: ${log.frames.join(' ')}`)
    assert.ok(tokenFetches > before, 'no new token after the join')
    await assertDeliveredOnce(page)
  })

  await checks.check('reset: a cursor older than the retention drops the copy and catches up whole', async () => {
    await page.evaluate(async () => {
      const client = (window as any).client
      await client.stop()
      ;(window as any).savedCursor = client.cursor
    })
    // A cursor is `<seq>` or `<seq>.<seq>…` (docs/sync.md, "Cursors"): its last number is the
    // highest sequence the client holds.
    const saved = (await page.evaluate(() => (window as any).savedCursor)) as string
    const cursor = BigInt(saved.split('.').at(-1) ?? saved)
    const afterStop = await createEntry(memberToken, 'written before the horizon moved')
    // Wait for the read model to pass the client's cursor, then put the horizon there.
    const deadline = Date.now() + 20_000
    for (;;) {
      const horizon = BigInt(await (await fetch(`${pageUrl}/control/raise-horizon`, { method: 'POST' })).text())
      if (horizon > cursor) {
        break
      }
      assert.ok(Date.now() < deadline, `the read model never passed cursor ${cursor}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const expected = await entryIds(page)
    await startClient(page)
    await waitFor(page, 'the reset and the full catch-up', ({ ids, log }) =>
      log.events.includes('reset') && log.events.includes('caught_up') && ids.includes(afterStop),
    )
    const ids = await entryIds(page)
    assert.deepEqual([...ids].sort(), [...expected, afterStop].sort())
    await assertDeliveredOnce(page)
  })

  await checks.check('the demo page lists a user\'s entries live', async () => {
    const email = `demo-${randomUUID()}@example.com`
    const demo = await context.newPage()
    const query = new URLSearchParams({ api: apiUrl, sync: syncUrl, email, autostart: '1' })
    await demo.goto(`${pageUrl}/examples/sync-web-demo/?${query}`)
    await demo.waitForSelector('#status[data-status="live"]', { timeout: 20_000 })
    // The same user, signed in from here too.
    const login = await fetch(`${apiUrl}/auth/dev/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, name: 'Demo' }),
    })
    const { token } = (await login.json()) as { token: string }
    const entry = await createEntry(token, 'Shown live on the demo page')
    await demo.waitForSelector(`li[data-journal-entry-id="${entry}"]`, { timeout: 20_000 })
    assert.equal(await demo.locator(`li[data-journal-entry-id="${entry}"] h3`).textContent(), 'Shown live on the demo page')
  })
} finally {
  await browser.close()
}
checks.finish('sync-web: all checks passed')
