// Type-level tests of the generated contract (`clients/contract`): `tsc --noEmit` over this
// folder (run by services/api/tests/orpc_client.rs and xtask/tests/contract.rs) must accept
// the calls below and reject each line marked `@ts-expect-error` (an unused
// `@ts-expect-error` is itself an error). Nothing here runs against a server.

import { createORPCClient, isDefinedError, safe } from '@orpc/client'
import { RPCLink } from '@orpc/client/fetch'
import type { ContractRouterClient } from '@orpc/contract'

import { contract, JournalEntriesCreateInput, syncContract } from '../../clients/contract/src/index.js'
import type { JournalEntry, SyncFrame, Team } from '../../clients/contract/src/index.js'

const client: ContractRouterClient<typeof contract> = createORPCClient(new RPCLink({ url: 'http://localhost/rpc' }))
const sync: ContractRouterClient<typeof syncContract> = createORPCClient(new RPCLink({ url: 'http://localhost/rpc' }))

export async function wellTyped(): Promise<void> {
  const entry: JournalEntry = await client.journalEntries.create({ title: 'A title', content: '', tags: ['a'] })
  const title: string = entry.title
  const mood: number | null = entry.mood
  const team: { role: 'owner' | 'admin' | 'member' } & Team = await client.teams.create({ name: 'Team' })
  await client.journalEntries.update({ journalEntryId: entry.journalEntryId, mood: null })
  await client.journalEntries.list()
  await client.journalEntries.list({ createdAfter: new Date(), limit: 10 })
  await client.users.me()
  await client.users.update({ timezone: 'Europe/Berlin' })
  // Declared errors are typed by the contract: EDIT_CONFLICT's data.
  const [error] = await safe(client.journalEntries.update({ journalEntryId: entry.journalEntryId, expectedVersion: 1 }))
  if (isDefinedError(error) && error.code === 'EDIT_CONFLICT') {
    const version: number = error.data.currentVersion
    void version
  }
  for await (const frame of await sync.sync.stream({ since: '0' })) {
    const typed: SyncFrame = frame
    if (frame.type === 'closed') {
      const reason: 'slow_client' | 'scopes_changed' | 'token_expired' | 'session_revoked' | 'shutdown' = frame.reason
      void reason
    }
    void typed
  }
  void [title, mood, team, JournalEntriesCreateInput.parse({ title: 'x', content: 'y' })]
}

export async function wronglyTyped(): Promise<void> {
  // @ts-expect-error a misspelt input field (`titel`) fails tsc
  await client.journalEntries.create({ titel: 'A title', content: '' })
  const entry = await client.journalEntries.create({ title: 'A title', content: '' })
  // @ts-expect-error a misspelt output field fails tsc
  void entry.titel
  // @ts-expect-error a required field is missing
  await client.teams.create({})
  // @ts-expect-error a field of the wrong type
  await client.journalEntries.create({ title: 1, content: '' })
  // @ts-expect-error a value outside an enum
  await client.teams.changeRole({ teamId: entry.journalEntryId, userId: entry.authorUserId, role: 'king' })
  // @ts-expect-error a time zone the server does not know
  await client.users.update({ timezone: 'Mars/Olympus_Mons' })
  // @ts-expect-error a procedure the api does not have
  await client.journalEntries.publish({})
  // @ts-expect-error `title` cannot be null on update (absent leaves it as it is)
  await client.journalEntries.update({ journalEntryId: entry.journalEntryId, title: null })
  // @ts-expect-error a frame type that does not exist
  const frame: SyncFrame = { type: 'snapshot' }
  void frame
}
