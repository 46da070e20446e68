/// <reference lib="dom" />
// A real browser on another origin following the sync-streamer (issue 18): Debian's headless
// Chromium, driven by playwright-core, opens `new EventSource("<streamer>/sync/stream?token=…")`
// from a page served on a different port, the way a web app in development on
// `localhost:3000` reaches the streamer on `:8081`. The connection goes through a proxy the
// Rust test can cut: the browser's own reconnect (with `Last-Event-ID`) must resume with no
// gap and no repeat. Run by `services/sync-streamer/tests/browser.rs`, which starts the api, the
// streamer, the pages and the proxy and sets the variables below.
//
// Exits 0 when every check passes; otherwise prints which check failed and why, and exits 1.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { chromium } from 'playwright-core'
import type { Page } from 'playwright-core'

import { Checks, required, until } from './harness.js'

const apiUrl = required('API_URL')
/** The streamer as the browser reaches it: through the proxy. */
const syncUrl = required('SYNC_URL')
/** A page on an origin the streamer allows (ALLOWED_ORIGINS). */
const pageUrl = required('PAGE_URL')
/** A page on an origin the streamer does not allow. */
const foreignPageUrl = required('FOREIGN_PAGE_URL')
/** The proxy's control: POST /cut, POST /restore, GET /requests. */
const proxyUrl = required('PROXY_CONTROL_URL')
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium'

const checks = new Checks()

// Sign in and get a sync token, as the app does through the api.
const login = await fetch(`${apiUrl}/auth/dev/login`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ email: `browser-${randomUUID()}@example.com`, name: 'Browser' }),
})
assert.equal(login.status, 200, `dev login: ${await login.clone().text()}`)
const { token } = (await login.json()) as { token: string }
const rpc = async (procedure: string, input: unknown): Promise<any> => {
  const response = await fetch(`${apiUrl}/rpc/${procedure}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ json: input }),
  })
  const body = (await response.json()) as { json: unknown }
  assert.equal(response.status, 200, `${procedure}: ${JSON.stringify(body)}`)
  return body.json
}
const { token: syncToken } = (await rpc('sync/token', {})) as { token: string }
const created: string[] = []
async function createEntries(count: number, label: string): Promise<void> {
  for (let index = 0; index < count; index++) {
    const entry = (await rpc('journalEntries/create', { title: `${label} ${index}`, content: 'from the browser test' })) as {
      journalEntryId: string
    }
    created.push(entry.journalEntryId)
  }
}

interface Received {
  /** `change` (live) or `delta` (catch-up after a reconnect). */
  kind: 'change' | 'delta'
  /** The SSE `id` (the cursor the browser resends as Last-Event-ID). */
  id: string
  rows: { table: string; rowId: string; version: number }[]
}

/** Open the stream in the page; frames land in `window.sync`. */
async function openStream(page: Page): Promise<void> {
  await page.evaluate((url) => {
    const state = { opens: 0, errors: 0, readyState: 0, frames: [] as string[], changes: [] as Received[] }
    ;(window as any).sync = state
    const source = new EventSource(url)
    source.onopen = () => {
      state.opens += 1
      state.readyState = source.readyState
    }
    source.onerror = () => {
      state.errors += 1
      state.readyState = source.readyState
    }
    source.onmessage = (event) => {
      const frame = JSON.parse(event.data)
      state.frames.push(frame.type)
      if (frame.type === 'change') {
        state.changes.push({
          kind: 'change',
          id: event.lastEventId,
          rows: frame.changes.map((change: any) => ({ table: change.table, rowId: change.rowId, version: change.version })),
        })
      } else if (frame.type === 'delta' && frame.table !== null) {
        // Catch-up after a reconnect: the rows missed, latest state per row.
        state.changes.push({
          kind: 'delta',
          id: event.lastEventId,
          rows: frame.data.map((row: any) => ({
            table: frame.table,
            rowId: row.journalEntryId ?? row.userId ?? JSON.stringify(row),
            version: row.version,
          })),
        })
      }
    }
  }, `${syncUrl}/sync/stream?token=${encodeURIComponent(syncToken)}`)
}

async function syncState(page: Page): Promise<{ opens: number; errors: number; readyState: number; frames: string[]; changes: Received[] }> {
  return page.evaluate(() => (window as any).sync)
}

function entryIds(changes: Received[]): string[] {
  return changes.flatMap((change) => change.rows.filter((row) => row.table === 'journal_entries').map((row) => row.rowId))
}

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] })
try {
  const page = await browser.newPage()
  await page.goto(pageUrl)
  assert.notEqual(new URL(pageUrl).origin, new URL(syncUrl).origin, 'the page and the streamer are different origins')

  await checks.check('an EventSource from an allowed origin opens the stream (CORS)', async () => {
    await openStream(page)
    await until('the stream to open and send its first frame', async () => {
      const state = await syncState(page)
      return state.opens >= 1 && state.frames.length > 0 ? true : undefined
    })
  })

  await checks.check('live changes reach the page', async () => {
    await createEntries(5, 'before the cut')
    await until('5 entries in the page', async () => {
      const ids = entryIds((await syncState(page)).changes)
      return created.every((id) => ids.includes(id)) ? true : undefined
    })
  })

  await checks.check("a network cut: the browser's own reconnect with Last-Event-ID resumes with no gap and no repeat", async () => {
    const before = await syncState(page)
    const lastId = before.changes[before.changes.length - 1]?.id
    assert.ok(lastId, 'a change frame carried an id')
    const cut = await fetch(`${proxyUrl}/cut`, { method: 'POST' })
    assert.equal(cut.status, 200)
    await until('the browser to notice the cut', async () => ((await syncState(page)).errors > before.errors ? true : undefined))
    await createEntries(5, 'during the cut')
    const restore = await fetch(`${proxyUrl}/restore`, { method: 'POST' })
    assert.equal(restore.status, 200)
    await createEntries(3, 'after the cut')
    const after = await until('every entry in the page', async () => {
      const state = await syncState(page)
      const ids = entryIds(state.changes)
      return created.every((id) => ids.includes(id)) ? state : undefined
    }).catch(async (error: Error) => {
      const state = await syncState(page)
      const heads = (await (await fetch(`${proxyUrl}/requests`)).json()) as string[]
      throw new Error(
        `${error.message}; the page: opens ${state.opens}, errors ${state.errors}, readyState ${state.readyState}, ` +
          `${entryIds(state.changes).length} of ${created.length} entries, frames ${JSON.stringify(state.frames.slice(-5))}; ` +
          `requests through the proxy:\n${heads.map((head) => head.split('\r\n').slice(0, 12).join(' | ')).join('\n')}`,
      )
    })
    assert.ok(after.opens >= 2, `the EventSource reopened (opens: ${after.opens})`)
    const ids = entryIds(after.changes)
    assert.equal(ids.length, new Set(ids).size, `each entry once: ${JSON.stringify(ids)}`)
    assert.equal(ids.length, created.length, `only the entries written: ${ids.length} of ${created.length}`)
    // Live frames move the cursor forward one changeset at a time; catch-up pages never
    // move it back.
    const cursors = after.changes.map((change) => [change.kind, BigInt(change.id)] as const)
    for (let index = 1; index < cursors.length; index++) {
      const [kind, cursor] = cursors[index]!
      const previous = cursors[index - 1]![1]
      assert.ok(kind === 'change' ? cursor > previous : cursor >= previous, `cursors: ${cursors.map(([k, c]) => `${k}:${c}`).join(',')}`)
    }
    assert.ok(
      after.changes.some((change) => change.kind === 'delta' && change.rows.some((row) => row.table === 'journal_entries')),
      'the entries written during the cut came back as a catch-up after the reconnect',
    )
    // The reconnect asked to resume after the last frame it had, not from the start.
    const requests = (await (await fetch(`${proxyUrl}/requests`)).json()) as string[]
    const streamRequests = requests.filter((head) => head.includes('/sync/stream'))
    assert.ok(streamRequests.length >= 2, `stream requests through the proxy: ${streamRequests.length}`)
    const resumed = streamRequests.slice(1).some((head) => head.toLowerCase().includes(`last-event-id: ${lastId}`))
    assert.ok(resumed, `a reconnect carried Last-Event-ID ${lastId}:\n${streamRequests.join('\n---\n')}`)
  })

  await checks.check('the oRPC stream answers a cross-origin fetch (preflight, then frames)', async () => {
    const firstEvent = await page.evaluate(
      async ({ url, token }) => {
        const response = await fetch(url, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ json: {} }),
        })
        const reader = response.body!.getReader()
        const decoder = new TextDecoder()
        let text = ''
        while (!text.includes('event: message')) {
          const { value, done } = await reader.read()
          if (done) break
          text += decoder.decode(value)
        }
        await reader.cancel()
        return { status: response.status, text }
      },
      { url: `${syncUrl}/rpc/sync/stream`, token: syncToken },
    )
    assert.equal(firstEvent.status, 200)
    assert.ok(firstEvent.text.includes('event: message'), firstEvent.text)
  })

  await checks.check('an EventSource from an origin the streamer does not allow is refused by the browser', async () => {
    const foreign = await browser.newPage()
    await foreign.goto(foreignPageUrl)
    await openStream(foreign)
    const state = await until('the browser to give up', async () => {
      const current = await syncState(foreign)
      // CLOSED: a CORS failure is fatal for an EventSource (no retry).
      return current.readyState === 2 ? current : undefined
    })
    assert.equal(state.opens, 0)
    assert.equal(state.frames.length, 0)
    await foreign.close()
  })
} finally {
  await browser.close()
}

checks.finish('\nbrowser-sync: all checks passed')
