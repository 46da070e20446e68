// The open API's generated TypeScript types (`clients/open-api/openapi.d.ts`) with
// openapi-fetch against the real api: the typed calls an integrator writes work, and the
// `@ts-expect-error` lines below prove that a wrong path, field or type fails `tsc` (an
// unused directive is itself an error). Run by `services/api/tests/open_api_typescript.rs`.
//
// Exits 0 when every check passes; otherwise prints which check failed and why, and exits 1.

import assert from 'node:assert/strict'

import createClient from 'openapi-fetch'

import type { components, paths } from '../../clients/open-api/openapi.d.ts'

import { Checks, required } from './harness.js'

type JournalEntry = components['schemas']['JournalEntry']

const journal = createClient<paths>({
  baseUrl: required('API_URL'),
  headers: { 'x-api-key': required('API_KEY') },
})

const checks = new Checks()

/** Compile-time only: never called. Each line must fail `tsc`. */
export function wrongCallsDoNotCompile(): void {
  // @ts-expect-error: no such path
  void journal.GET('/api/v1/journal-entrys')
  // @ts-expect-error: `titel` is not a field (and `title` is missing)
  void journal.POST('/api/v1/journal-entries', { body: { titel: 'x', content: 'y' } })
  // @ts-expect-error: mood is a number
  void journal.POST('/api/v1/journal-entries', { body: { title: 'x', content: 'y', mood: 'happy' } })
  // @ts-expect-error: the path parameter is required
  void journal.GET('/api/v1/journal-entries/{journalEntryId}', {})
  const entry = {} as JournalEntry
  // @ts-expect-error: no such field on an entry
  void entry.body
}

await checks.check('create, get, update, list and delete an entry with typed calls', async () => {
  const created = await journal.POST('/api/v1/journal-entries', {
    body: { title: 'From the typed client', content: 'openapi-fetch', tags: ['typed'] },
  })
  assert.equal(created.response.status, 201, JSON.stringify(created.error))
  const entry: JournalEntry | undefined = created.data
  assert.ok(entry)
  assert.equal(entry.title, 'From the typed client')
  assert.deepEqual(entry.tags, ['typed'])

  const fetched = await journal.GET('/api/v1/journal-entries/{journalEntryId}', {
    params: { path: { journalEntryId: entry.journalEntryId } },
  })
  assert.equal(fetched.data?.journalEntryId, entry.journalEntryId)

  const updated = await journal.PATCH('/api/v1/journal-entries/{journalEntryId}', {
    params: { path: { journalEntryId: entry.journalEntryId } },
    body: { title: 'Edited', expectedVersion: entry.version },
  })
  assert.equal(updated.data?.version, entry.version + 1, JSON.stringify(updated.error))

  const page = await journal.GET('/api/v1/journal-entries', { params: { query: { limit: 10 } } })
  assert.ok(page.data?.items.some((item) => item.journalEntryId === entry.journalEntryId && item.title === 'Edited'))

  const deleted = await journal.DELETE('/api/v1/journal-entries/{journalEntryId}', {
    params: { path: { journalEntryId: entry.journalEntryId } },
  })
  assert.equal(deleted.response.status, 204)
  const gone = await journal.GET('/api/v1/journal-entries/{journalEntryId}', {
    params: { path: { journalEntryId: entry.journalEntryId } },
  })
  assert.equal(gone.response.status, 404)
  assert.equal(gone.error?.code, 'NOT_FOUND')
})

await checks.check('prompts and usage', async () => {
  const created = await journal.POST('/api/v1/prompts', { body: { text: 'What did you learn today?' } })
  assert.equal(created.response.status, 201, JSON.stringify(created.error))
  const prompts = await journal.GET('/api/v1/prompts')
  assert.ok(prompts.data?.items.some((prompt) => prompt.promptId === created.data?.promptId))
  const usage = await journal.GET('/api/v1/usage')
  assert.ok(usage.data && usage.data.used >= 1 && usage.data.limit > 0, JSON.stringify(usage.data))
})

await checks.check('a refused request is a typed ErrorBody with the invalid fields', async () => {
  const refused = await journal.POST('/api/v1/journal-entries', { body: { title: '', content: 'x' } })
  assert.equal(refused.response.status, 400)
  assert.equal(refused.error?.code, 'BAD_REQUEST')
  assert.ok(refused.error?.issues?.some((issue) => issue.path[0] === 'title'), JSON.stringify(refused.error))
})

checks.finish('open-api-client: all checks passed')
